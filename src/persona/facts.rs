//! Every fact a persona holds, as lines of a readable, stable layout: sections with headings,
//! lists as lists. What the system prompt is made of (see `prompt`).
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

use std::fmt::Write;

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

/// One line of the persona's facts (see [`Facts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactLine {
    /// Where its text is in [`Facts::text`] (without the newline).
    span: (u32, u32),
    /// Where its dotted path is, for a line that holds a fact (not a heading or a label).
    path: Option<(u32, u32)>,
    /// The section's priority.
    pub priority: Priority,
    /// Index of the line this one belongs under (its heading or label), if any.
    pub parent: Option<usize>,
}

/// A persona's facts as lines: one text holding every line (each ending with a newline), with
/// the lines' places, paths, priorities and parents. Written in one buffer, so rendering costs
/// no allocation per fact.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    text: String,
    paths: String,
    /// The lines, in order.
    pub lines: Vec<FactLine>,
}

impl Facts {
    /// Every line, each ending with a newline: the facts as the prompt shows them.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Line `i`'s text, with its indentation and bullet, without the newline.
    pub fn line(&self, i: usize) -> &str {
        let (a, b) = self.lines[i].span;
        &self.text[a as usize..b as usize]
    }

    /// Line `i`'s fact, by dotted path (`preferences.likes.2`); `None` for a heading or a
    /// label that only introduces the lines under it.
    pub fn path(&self, i: usize) -> Option<&str> {
        self.lines[i].path.map(|(a, b)| &self.paths[a as usize..b as usize])
    }

    /// How many lines hold a fact.
    pub fn facts(&self) -> usize {
        self.lines.iter().filter(|l| l.path.is_some()).count()
    }
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
pub fn fact_lines(p: &PersonaSpec, markdown: bool) -> Facts {
    let mut w = Writer { facts: Facts::default(), path: String::new(), markdown, role: p.role.trim() };
    w.facts.text.reserve(4096);
    match &p.origin {
        Origin::TinyTroupe { original } => {
            let empty = Map::new();
            let persona = original.get("persona").and_then(Value::as_object).unwrap_or(&empty);
            w.object(persona);
        }
        Origin::Native => w.native(p),
    }
    w.facts
}

struct Writer<'a> {
    facts: Facts,
    /// The path of what is being written, as a stack of `.key` parts.
    path: String,
    markdown: bool,
    /// The role, already in the prompt's first line ("You are NAME, ROLE."): an occupation
    /// title equal to it is not written again.
    role: &'a str,
}

impl Writer<'_> {
    /// Starts a line at `depth` (its indentation written); returns where it starts.
    fn open(&mut self, depth: usize) -> usize {
        let start = self.facts.text.len();
        for _ in 0..depth {
            self.facts.text.push_str("  ");
        }
        start
    }

    /// Ends the line that started at `start`; `fact`: it holds the fact at the current path.
    fn close(&mut self, start: usize, fact: bool, priority: Priority, parent: Option<usize>) -> usize {
        let end = self.facts.text.len();
        self.facts.text.push('\n');
        let path = fact.then(|| {
            let a = self.facts.paths.len();
            self.facts.paths.push_str(&self.path);
            (a as u32, self.facts.paths.len() as u32)
        });
        self.facts.lines.push(FactLine { span: (start as u32, end as u32), path, priority, parent });
        self.facts.lines.len() - 1
    }

    /// Enters `key` in the path; returns where to cut it back to.
    fn enter(&mut self, key: &str) -> usize {
        let mark = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        mark
    }

    fn enter_index(&mut self, i: usize) -> usize {
        let mark = self.path.len();
        let _ = write!(self.path, ".{i}");
        mark
    }

    fn leave(&mut self, mark: usize) {
        self.path.truncate(mark);
    }

    fn heading(&mut self, title: &str, priority: Priority) -> usize {
        let start = self.open(0);
        if self.markdown {
            self.facts.text.push_str("## ");
            self.facts.text.push_str(title);
        } else {
            self.facts.text.push_str(title);
            self.facts.text.push(':');
        }
        self.close(start, false, priority, None)
    }

    /// `- text` under `parent`, as the fact at the current path.
    fn bullet(&mut self, depth: usize, text: &str, priority: Priority, parent: Option<usize>) -> usize {
        let start = self.open(depth);
        self.facts.text.push_str("- ");
        push_one_line(&mut self.facts.text, text);
        self.close(start, true, priority, parent)
    }

    /// A list of texts under a `- Label:` line (or straight under `parent` when `label` is empty).
    fn texts(&mut self, key: &str, label: &str, items: &[String], priority: Priority, parent: Option<usize>) {
        if items.iter().all(|t| t.trim().is_empty()) {
            return;
        }
        let mark = self.enter(key);
        let (depth, under) = if label.is_empty() {
            (0, parent)
        } else {
            let start = self.open(0);
            self.facts.text.push_str("- ");
            self.facts.text.push_str(label);
            self.facts.text.push(':');
            (1, Some(self.close(start, false, priority, parent)))
        };
        for (i, t) in items.iter().enumerate().filter(|(_, t)| !t.trim().is_empty()) {
            let m = self.enter_index(i);
            self.bullet(depth, t, priority, under);
            self.leave(m);
        }
        self.leave(mark);
    }

    /// A native persona: the schema's fields, then what it does not know.
    fn native(&mut self, p: &PersonaSpec) {
        let pers = &p.personality;
        if !p.description.trim().is_empty() {
            let h = self.heading("About you", Priority::Identity);
            let mark = self.enter("description");
            self.bullet(0, &p.description, Priority::Identity, Some(h));
            self.leave(mark);
        }
        let habits =
            [("communication", &pers.communication), ("decisions", &pers.decisions), ("approach", &pers.approach)];
        let any_habit = habits.iter().any(|(_, v)| !v.trim().is_empty());
        let traits = pers.traits.iter().any(|t| !t.trim().is_empty());
        if traits || any_habit || pers.extra.values().any(|v| !is_empty(v)) {
            let h = self.heading("Personality", Priority::Core);
            let mark = self.enter("personality");
            self.texts("traits", "Traits", &pers.traits, Priority::Core, Some(h));
            for (k, v) in habits {
                if !v.trim().is_empty() {
                    let m = self.enter(k);
                    let start = self.open(0);
                    self.facts.text.push_str("- ");
                    push_humanized(&mut self.facts.text, k);
                    self.facts.text.push_str(": ");
                    push_one_line(&mut self.facts.text, v);
                    self.close(start, true, Priority::Core, Some(h));
                    self.leave(m);
                }
            }
            for (k, v) in &pers.extra {
                self.entry(k, v, 0, Priority::Core, Some(h));
            }
            self.leave(mark);
        }
        if !pers.style.trim().is_empty() {
            let h = self.heading("Style", Priority::Core);
            let mark = self.enter("personality.style");
            self.bullet(0, &pers.style, Priority::Core, Some(h));
            self.leave(mark);
        }
        if pers.goals.iter().any(|g| !g.trim().is_empty()) {
            let h = self.heading("Goals", Priority::Core);
            let mark = self.enter("personality");
            self.texts("goals", "", &pers.goals, Priority::Core, Some(h));
            self.leave(mark);
        }
        self.object(&p.extra);
    }

    /// A persona object (or a native persona's unknown fields): the short facts first, then
    /// the known sections in order, then everything else in file order.
    fn object(&mut self, m: &Map<String, Value>) {
        if ABOUT.iter().any(|k| m.get(*k).is_some_and(|v| !is_empty(v))) {
            let h = self.heading("About you", Priority::Identity);
            for k in ABOUT {
                if let Some(v) = m.get(*k) {
                    self.entry(k, v, 0, Priority::Identity, Some(h));
                }
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
                let title = humanize(k);
                self.section(&title, v, k, Priority::Other);
            }
        }
    }

    /// A top-level section: its heading, then its content one level down.
    fn section(&mut self, title: &str, v: &Value, key: &str, priority: Priority) {
        let h = self.heading(title, priority);
        let mark = self.enter(key);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if key == "occupation" && k == "title" && x.as_str().is_some_and(|t| t.trim() == self.role) {
                        continue;
                    }
                    // The Big Five descriptions weigh like beliefs, not like the traits beside them.
                    let p = if key == "personality" && k == "big_five" { Priority::Belief } else { priority };
                    self.entry(k, x, 0, p, Some(h));
                }
            }
            Value::Array(items) => self.items(items, 0, priority, Some(h)),
            scalar => {
                let start = self.open(0);
                self.facts.text.push_str("- ");
                push_scalar(&mut self.facts.text, scalar);
                self.close(start, true, priority, Some(h));
            }
        }
        self.leave(mark);
    }

    /// `- Key: value` for a scalar, `- Key:` and the content one level down otherwise.
    fn entry(&mut self, key: &str, v: &Value, depth: usize, priority: Priority, parent: Option<usize>) {
        if is_empty(v) {
            return;
        }
        let mark = self.enter(key);
        let start = self.open(depth);
        self.facts.text.push_str("- ");
        push_humanized(&mut self.facts.text, key);
        self.facts.text.push(':');
        match v {
            Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => {
                self.facts.text.push(' ');
                push_one_line(&mut self.facts.text, &super::tinytroupe::joined(v));
                self.close(start, true, priority, parent);
            }
            Value::Object(m) => {
                let l = self.close(start, false, priority, parent);
                for (k, x) in m {
                    self.entry(k, x, depth + 1, priority, Some(l));
                }
            }
            Value::Array(items) => {
                let l = self.close(start, false, priority, parent);
                self.items(items, depth + 1, priority, Some(l));
            }
            scalar => {
                self.facts.text.push(' ');
                push_scalar(&mut self.facts.text, scalar);
                self.close(start, true, priority, parent);
            }
        }
        self.leave(mark);
    }

    /// List items: a bullet each; an object with a name reads `- Name: the rest`.
    fn items(&mut self, items: &[Value], depth: usize, priority: Priority, parent: Option<usize>) {
        for (i, item) in items.iter().enumerate() {
            if is_empty(item) {
                continue;
            }
            let mark = self.enter_index(i);
            match item {
                Value::Object(m) if depth < MAX_DEPTH => match named(m) {
                    Some((name, rest)) if rest.iter().all(|(_, v)| !v.is_object() && !v.is_array()) => {
                        let start = self.open(depth);
                        self.facts.text.push_str("- ");
                        push_one_line(&mut self.facts.text, name);
                        let mut first = true;
                        for (_, v) in rest.iter().filter(|(_, v)| !is_empty(v)) {
                            self.facts.text.push_str(if first { ": " } else { "; " });
                            first = false;
                            push_scalar(&mut self.facts.text, v);
                        }
                        self.close(start, true, priority, parent);
                    }
                    _ => {
                        let start = self.open(depth);
                        let _ = write!(self.facts.text, "- Item {}:", i + 1);
                        let l = self.close(start, false, priority, parent);
                        for (k, x) in m {
                            self.entry(k, x, depth + 1, priority, Some(l));
                        }
                    }
                },
                Value::Array(inner) if depth < MAX_DEPTH => self.items(inner, depth, priority, parent),
                Value::Object(_) | Value::Array(_) => {
                    let start = self.open(depth);
                    self.facts.text.push_str("- ");
                    push_one_line(&mut self.facts.text, &super::tinytroupe::joined(item));
                    self.close(start, true, priority, parent);
                }
                scalar => {
                    let start = self.open(depth);
                    self.facts.text.push_str("- ");
                    push_scalar(&mut self.facts.text, scalar);
                    self.close(start, true, priority, parent);
                }
            }
            self.leave(mark);
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

/// Writes a scalar: a text as one line, a number or a boolean as JSON writes it.
fn push_scalar(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => push_one_line(out, s),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Writes `s` with its whitespace runs (line breaks included) as single spaces.
fn push_one_line(out: &mut String, s: &str) {
    let mut first = true;
    for w in s.split_whitespace() {
        if !first {
            out.push(' ');
        }
        first = false;
        out.push_str(w);
    }
}

/// Writes [`humanize`]`(key)` without making a string of it.
fn push_humanized(out: &mut String, key: &str) {
    let start = out.len();
    let mut prev_upper = false;
    let mut in_word = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == ' ' {
            in_word = false;
            prev_upper = false;
            continue;
        }
        let upper = c.is_uppercase();
        if (!in_word || (upper && !prev_upper)) && out.len() > start {
            out.push(' ');
        }
        if out.len() == start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        in_word = true;
        prev_upper = upper;
    }
    if out.len() == start {
        out.push_str(key);
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
    let mut s = String::with_capacity(key.len() + 4);
    push_humanized(&mut s, key);
    s
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
        let facts = fact_lines(&p, true);
        let text: Vec<&str> = (0..facts.lines.len()).map(|i| facts.line(i)).collect();
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
        let paths: Vec<&str> = (0..facts.lines.len()).filter_map(|i| facts.path(i)).collect();
        assert!(paths.contains(&"preferences.likes.1") && paths.contains(&"hobby_log.2024.0"), "{paths:?}");
        assert_eq!(facts.lines[7].parent, Some(6), "{:?}", facts.lines[7]);
        assert_eq!(facts.text().lines().count(), facts.lines.len());
    }
}
