//! Every fact a persona holds, as lines of a readable, stable layout: sections with headings,
//! lists as lists. What the system prompt is made of (see `persona::prompt`).
//!
//! For a TinyTroupe agent the facts are its `persona` object as it is (fragments already merged),
//! every leaf of it; for a native persona, its description, personality and every field the
//! schema does not know. Known TinyTroupe sections come in a fixed order; unknown fields follow
//! in file order. Operational fields (`id`, `type`, `model`, `temperature`, `prompting`,
//! `validation_rules`, `tags`) are settings, not facts, and stay out.
//!
//! Each line carries the priority of its section, so a prompt that must fit a token budget drops
//! the least important facts first (see [`Priority`]), and the dotted path of the fact it holds,
//! so what was dropped can be reported.

use serde_json::{Map, Value};

use super::spec::{Origin, PersonaSpec};

/// How much a section matters to who the persona is; facts are dropped for a token budget from
/// the lowest priority up (last first within a section). The name and role are never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Unknown fields and `other_facts`: dropped first.
    Other,
    /// Behaviors, routines, relationships, health.
    Behavior,
    /// Preferences, interests, likes and dislikes.
    Preference,
    /// The occupation's details and skills (the role itself is always in the first line).
    Work,
    /// Beliefs and the Big Five descriptions: what a persona argues from.
    Belief,
    /// Age, nationality, residence, education, the description.
    Identity,
    /// Traits, goals and style: dropped last.
    Core,
}

/// One line of the persona's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct FactLine {
    /// The text, with its indentation and bullet, without a newline.
    pub text: String,
    /// The fact's dotted path (`preferences.likes.2`); `None` for a heading or a label line
    /// that only introduces the lines under it.
    pub path: Option<String>,
    /// The section's priority.
    pub priority: Priority,
    /// Index of the line this one belongs under (its heading or label), if any.
    pub parent: Option<usize>,
}

/// Sections of a TinyTroupe agent (or of the fields a native persona does not know), in the
/// order they are shown, with their heading and priority. Keys not listed come after these.
const SECTIONS: &[(&str, &str, Priority)] = &[
    ("occupation", "Occupation", Priority::Work),
    ("personality", "Personality", Priority::Core),
    ("style", "Style", Priority::Core),
    ("long_term_goals", "Goals", Priority::Core),
    ("goals", "Goals", Priority::Core),
    ("beliefs", "Beliefs", Priority::Belief),
    ("skills", "Skills", Priority::Work),
    ("preferences", "Preferences", Priority::Preference),
    ("behaviors", "Behaviors", Priority::Behavior),
    ("routines", "Routines", Priority::Behavior),
    ("relationships", "Relationships", Priority::Behavior),
    ("health", "Health", Priority::Behavior),
    ("other_facts", "Other facts", Priority::Other),
];

/// Short facts shown as `- Age: 28` in the "About you" section.
const ABOUT: &[&str] = &[
    "age",
    "gender",
    "nationality",
    "ethnicity",
    "country_of_residence",
    "residence",
    "city",
    "languages",
    "education",
    "marital_status",
    "religion",
];

/// Keys that are the persona's name (shown in the first line, not again).
const NAME_KEYS: &[&str] = &["name"];

/// Deeper than this, a value is written as one `key: value` line.
const MAX_DEPTH: usize = 6;

/// The facts of `p`, line by line, with `markdown` headings (`## Goals`) or plain ones
/// (`Goals:`).
pub fn fact_lines(p: &PersonaSpec, markdown: bool) -> Vec<FactLine> {
    let mut w = Writer { out: Vec::new(), markdown, role: p.role.trim().to_string() };
    match &p.origin {
        Origin::TinyTroupe { original } => {
            let empty = Map::new();
            let persona = original.get("persona").and_then(Value::as_object).unwrap_or(&empty);
            w.object(persona, None);
        }
        Origin::Native => w.native(p),
    }
    w.out
}

struct Writer {
    out: Vec<FactLine>,
    markdown: bool,
    /// The role, already in the prompt's first line ("You are NAME, ROLE."): an occupation
    /// title equal to it is not written again.
    role: String,
}

impl Writer {
    fn push(&mut self, text: String, path: Option<String>, priority: Priority, parent: Option<usize>) -> usize {
        self.out.push(FactLine { text, path, priority, parent });
        self.out.len() - 1
    }

    fn heading(&mut self, title: &str, priority: Priority) -> usize {
        let text = if self.markdown { format!("## {title}") } else { format!("{title}:") };
        self.push(text, None, priority, None)
    }

    /// A native persona: the schema's fields, then what it does not know.
    fn native(&mut self, p: &PersonaSpec) {
        let pers = &p.personality;
        if !p.description.trim().is_empty() {
            let h = self.heading("About you", Priority::Identity);
            self.push(
                format!("- {}", one_line(&p.description)),
                Some("description".into()),
                Priority::Identity,
                Some(h),
            );
        }
        let mut personality: Vec<(&str, Value)> = Vec::new();
        if !pers.traits.is_empty() {
            personality.push(("traits", Value::from(pers.traits.clone())));
        }
        for (k, v) in
            [("communication", &pers.communication), ("decisions", &pers.decisions), ("approach", &pers.approach)]
        {
            if !v.trim().is_empty() {
                personality.push((k, Value::from(v.as_str())));
            }
        }
        for (k, v) in &pers.extra {
            personality.push((k, v.clone()));
        }
        if !personality.is_empty() {
            let h = self.heading("Personality", Priority::Core);
            for (k, v) in personality {
                self.entry(k, &v, &format!("personality.{k}"), 0, Priority::Core, Some(h));
            }
        }
        if !pers.style.trim().is_empty() {
            let h = self.heading("Style", Priority::Core);
            self.push(
                format!("- {}", one_line(&pers.style)),
                Some("personality.style".into()),
                Priority::Core,
                Some(h),
            );
        }
        if !pers.goals.is_empty() {
            let h = self.heading("Goals", Priority::Core);
            for (i, g) in pers.goals.iter().enumerate() {
                self.push(
                    format!("- {}", one_line(g)),
                    Some(format!("personality.goals.{i}")),
                    Priority::Core,
                    Some(h),
                );
            }
        }
        self.object(&p.extra, None);
    }

    /// A persona object (or a native persona's unknown fields): the short facts first, then
    /// the known sections in order, then everything else in file order.
    fn object(&mut self, m: &Map<String, Value>, _parent: Option<usize>) {
        let about: Vec<&str> = ABOUT.iter().copied().filter(|k| m.get(*k).is_some_and(|v| !is_empty(v))).collect();
        if !about.is_empty() {
            let h = self.heading("About you", Priority::Identity);
            for k in about {
                self.entry(k, &m[k], k, 0, Priority::Identity, Some(h));
            }
        }
        for (key, title, priority) in SECTIONS {
            if let Some(v) = m.get(*key).filter(|v| !is_empty(v)) {
                self.section(title, v, key, *priority);
            }
        }
        for (k, v) in m {
            let known = ABOUT.contains(&k.as_str())
                || NAME_KEYS.contains(&k.as_str())
                || SECTIONS.iter().any(|(s, _, _)| s == k);
            if !known && !is_empty(v) {
                self.section(&humanize(k), v, k, Priority::Other);
            }
        }
    }

    /// A top-level section: its heading, then its content one level down.
    fn section(&mut self, title: &str, v: &Value, path: &str, priority: Priority) {
        let h = self.heading(title, priority);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if path == "occupation" && k == "title" && x.as_str().is_some_and(|t| t.trim() == self.role) {
                        continue;
                    }
                    // The Big Five descriptions weigh like beliefs, not like the traits beside them.
                    let p = if path == "personality" && k == "big_five" { Priority::Belief } else { priority };
                    self.entry(k, x, &format!("{path}.{k}"), 0, p, Some(h));
                }
            }
            Value::Array(items) => self.items(items, path, 0, priority, Some(h)),
            scalar => {
                self.push(format!("- {}", scalar_text(scalar)), Some(path.to_string()), priority, Some(h));
            }
        }
    }

    /// `- Key: value` for a scalar, `- Key:` and the content one level down otherwise.
    fn entry(&mut self, key: &str, v: &Value, path: &str, depth: usize, priority: Priority, parent: Option<usize>) {
        let indent = "  ".repeat(depth);
        let label = humanize(key);
        match v {
            _ if is_empty(v) => {}
            Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => {
                let text = super::tinytroupe::joined(v);
                self.push(format!("{indent}- {label}: {}", one_line(&text)), Some(path.to_string()), priority, parent);
            }
            Value::Object(m) => {
                let l = self.push(format!("{indent}- {label}:"), None, priority, parent);
                for (k, x) in m {
                    self.entry(k, x, &format!("{path}.{k}"), depth + 1, priority, Some(l));
                }
            }
            Value::Array(items) => {
                let l = self.push(format!("{indent}- {label}:"), None, priority, parent);
                self.items(items, path, depth + 1, priority, Some(l));
            }
            scalar => {
                self.push(
                    format!("{indent}- {label}: {}", scalar_text(scalar)),
                    Some(path.to_string()),
                    priority,
                    parent,
                );
            }
        }
    }

    /// List items: a bullet each; an object with a name reads `- Name: the rest`.
    fn items(&mut self, items: &[Value], path: &str, depth: usize, priority: Priority, parent: Option<usize>) {
        let indent = "  ".repeat(depth);
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}.{i}");
            match item {
                _ if is_empty(item) => {}
                Value::Object(m) if depth < MAX_DEPTH => match named(m) {
                    Some((name, rest)) if rest.iter().all(|(_, v)| !v.is_object() && !v.is_array()) => {
                        let mut text = format!("{indent}- {}", one_line(name));
                        let rest: Vec<std::borrow::Cow<'_, str>> = rest.iter().map(|(_, v)| scalar_text(v)).collect();
                        if !rest.is_empty() {
                            text.push_str(": ");
                            text.push_str(&rest.join("; "));
                        }
                        self.push(text, Some(at), priority, parent);
                    }
                    _ => {
                        let l = self.push(format!("{indent}- Item {}:", i + 1), None, priority, parent);
                        for (k, x) in m {
                            self.entry(k, x, &format!("{at}.{k}"), depth + 1, priority, Some(l));
                        }
                    }
                },
                Value::Array(inner) if depth < MAX_DEPTH => self.items(inner, &at, depth, priority, parent),
                Value::Object(_) | Value::Array(_) => {
                    let text = super::tinytroupe::joined(item);
                    self.push(format!("{indent}- {}", one_line(&text)), Some(at), priority, parent);
                }
                scalar => {
                    self.push(format!("{indent}- {}", scalar_text(scalar)), Some(at), priority, parent);
                }
            }
        }
    }
}

/// An object's `name` (or `title`) and its other fields, when it has one.
fn named(m: &Map<String, Value>) -> Option<(&str, Vec<(&String, &Value)>)> {
    let key = ["name", "title"].into_iter().find(|k| m.get(*k).is_some_and(Value::is_string))?;
    let name = m[key].as_str()?;
    Some((name, m.iter().filter(|(k, _)| k.as_str() != key).collect()))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        Value::Object(m) => m.values().all(is_empty),
        _ => false,
    }
}

fn scalar_text(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => one_line(s),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// Whitespace runs (line breaks included) as single spaces: one fact, one line. Borrowed when
/// the text already is one (the common case: no copy).
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let clean = !b.first().is_some_and(u8::is_ascii_whitespace)
        && !b.last().is_some_and(u8::is_ascii_whitespace)
        && !b.windows(2).any(|w| w[0] == b' ' && w[1] == b' ')
        && !s.chars().any(|c| c.is_whitespace() && c != ' ');
    if clean {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    std::borrow::Cow::Owned(out)
}

/// `long_term_goals` -> "Long term goals", `bigFive` -> "Big five".
pub fn humanize(key: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in key.chars() {
        if c == '_' || c == '-' || c == ' ' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        } else if c.is_uppercase() && !cur.is_empty() && !cur.chars().last().is_some_and(char::is_uppercase) {
            words.push(std::mem::take(&mut cur));
            cur.extend(c.to_lowercase());
        } else {
            cur.extend(c.to_lowercase());
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut s = words.join(" ");
    if let Some(first) = s.get(0..1) {
        let up = first.to_uppercase();
        s.replace_range(0..1, &up);
    }
    if s.is_empty() { key.to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_read_as_words() {
        assert_eq!(humanize("long_term_goals"), "Long term goals");
        assert_eq!(humanize("bigFive"), "Big five");
        assert_eq!(humanize("x"), "X");
        assert_eq!(one_line(" a\n\n b\tc "), "a b c");
    }

    #[test]
    fn every_leaf_of_an_agent_is_a_line_in_a_stable_order() {
        let v = json!({"type": "TinyPerson", "persona": {
            "name": "Lisa", "age": 28, "nationality": "Canadian",
            "occupation": {"title": "Data Scientist", "organization": "Microsoft"},
            "personality": {"traits": ["curious"], "big_five": {"openness": "High."}},
            "preferences": {"likes": ["hiking", "piano"]},
            "relationships": [{"name": "Ana", "description": "her manager"}],
            "hobby_log": {"2024": ["chess"]}}});
        let p = super::super::tinytroupe::from_agent(v.as_object().unwrap().clone());
        let lines = fact_lines(&p, true);
        let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            text,
            [
                "## About you",
                "- Age: 28",
                "- Nationality: Canadian",
                "## Occupation",
                "- Organization: Microsoft",
                "## Personality",
                "- Traits:",
                "  - curious",
                "- Big five:",
                "  - Openness: High.",
                "## Preferences",
                "- Likes:",
                "  - hiking",
                "  - piano",
                "## Relationships",
                "- Ana: her manager",
                "## Hobby log",
                "- 2024:",
                "  - chess",
            ]
        );
        let paths: Vec<&str> = lines.iter().filter_map(|l| l.path.as_deref()).collect();
        assert!(paths.contains(&"preferences.likes.1") && paths.contains(&"hobby_log.2024.0"), "{paths:?}");
        assert_eq!(lines[7].parent, Some(6), "{:?}", lines[7]);
    }
}
