//! What a check holds a persona to: its own facts, numbered `F1`, `F2`, ..., and the
//! expectation text split into claims, numbered `E1`, `E2`, ...

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::persona::PersonaSpec;
use crate::persona::spec::Origin;
use crate::persona::tinytroupe::texts;

/// The most facts shown to the judge (the rest are left out and counted).
pub const MAX_FACTS: usize = 60;
/// The longest fact, in characters (longer ones are cut with "...").
pub const MAX_FACT_CHARS: usize = 400;
/// The most claims an expectation is split into (the judge still sees the whole text).
pub const MAX_CLAIMS: usize = 12;

/// One fact of the persona's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// `F1`, `F2`, ...
    pub id: String,
    /// The field it comes from: `role`, `description`, `personality.traits`, `persona.beliefs`
    /// (a TinyTroupe agent's own field), ...
    pub field: String,
    /// The fact.
    pub text: String,
}

/// One claim of an expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// `E1`, `E2`, ...
    pub id: String,
    /// The claim as written.
    pub text: String,
}

/// Fields of a TinyTroupe agent's `persona` object that the native fields already carry.
const TINYTROUPE_MAPPED: &[&str] = &[
    "name",
    "age",
    "gender",
    "nationality",
    "residence",
    "education",
    "occupation",
    "other_facts",
    "long_term_goals",
    "style",
];

/// The persona's facts, from every field it has: name, role, the description sentence by
/// sentence, traits, goals, style and habits, and every other field (a native persona's unknown
/// fields, a TinyTroupe agent's beliefs, preferences, skills, behaviours, Big Five...).
/// Duplicates are dropped; at most [`MAX_FACTS`]. Returns the facts and how many were left out.
pub fn persona_facts(p: &PersonaSpec) -> (Vec<Fact>, usize) {
    let mut raw: Vec<(String, String)> = Vec::new();
    let mut push = |field: &str, text: &str| {
        let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() {
            raw.push((field.to_string(), t));
        }
    };
    push("name", &p.name);
    push("role", &p.role);
    for s in sentences(&p.description) {
        push("description", &s);
    }
    let pers = &p.personality;
    for t in &pers.traits {
        push("personality.traits", t);
    }
    for g in &pers.goals {
        push("personality.goals", g);
    }
    push("personality.style", &pers.style);
    push("personality.communication", &pers.communication);
    push("personality.decisions", &pers.decisions);
    push("personality.approach", &pers.approach);
    for (k, v) in &pers.extra {
        for t in texts(v) {
            push(&format!("personality.{k}"), &t);
        }
    }
    for (k, v) in &p.extra {
        for t in texts(v) {
            push(k, &t);
        }
    }
    if let Origin::TinyTroupe { original } = &p.origin
        && let Some(Value::Object(inner)) = original.get("persona")
    {
        for (k, v) in inner {
            if TINYTROUPE_MAPPED.contains(&k.as_str()) {
                continue;
            }
            match (k.as_str(), v) {
                // Traits are native already; the rest of the personality (the Big Five) is not.
                ("personality", Value::Object(o)) => {
                    for (pk, pv) in o.iter().filter(|(pk, _)| pk.as_str() != "traits") {
                        for t in texts(pv) {
                            push(&format!("persona.personality.{pk}"), &t);
                        }
                    }
                }
                ("personality", _) => {}
                _ => {
                    for t in texts(v) {
                        push(&format!("persona.{k}"), &t);
                    }
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut dropped = 0;
    for (field, text) in raw {
        if !seen.insert(text.to_lowercase()) {
            continue;
        }
        if out.len() == MAX_FACTS {
            dropped += 1;
            continue;
        }
        out.push(Fact { id: format!("F{}", out.len() + 1), field, text: cut(&text, MAX_FACT_CHARS) });
    }
    (out, dropped)
}

/// The expectation split into claims: at sentence ends, semicolons, line breaks and list
/// bullets, and before "who", "which", "whose", "but", "while" and "whereas" ("a cautious
/// administrator who distrusts cloud-only tools" is two claims). "and" alone does not split
/// ("research and development" stays whole). At most [`MAX_CLAIMS`]; the judge always sees the
/// whole text as well.
pub fn split_claims(expectation: &str) -> Vec<Claim> {
    const CONNECTORS: &[&str] = &[" who ", " which ", " whose ", " but ", " while ", " whereas ", ", and who "];
    let mut pieces: Vec<String> = Vec::new();
    for line in expectation.lines() {
        let line = line.trim().trim_start_matches(['-', '*', '•']).trim();
        for s in sentences(line) {
            for part in s.split(';') {
                let mut rest = format!(" {} ", part.trim());
                loop {
                    // ASCII lower-casing keeps byte offsets, so they index `rest` too.
                    let lower = rest.to_ascii_lowercase();
                    let cut_at = CONNECTORS.iter().filter_map(|c| lower.find(c).map(|i| (i, c.len()))).min();
                    match cut_at {
                        Some((i, len)) if i > 0 => {
                            pieces.push(rest[..i].to_string());
                            // Keep the connector's word off the claim, but keep "whose".
                            let word = lower[i..i + len].trim();
                            rest = if word == "whose" {
                                format!(" {}", &rest[i + 1..])
                            } else {
                                format!(" {}", &rest[i + len..])
                            };
                        }
                        _ => {
                            pieces.push(rest);
                            break;
                        }
                    }
                }
            }
        }
    }
    let mut out: Vec<Claim> = Vec::new();
    for p in pieces {
        let t = p.trim().trim_matches(|c: char| c == ',' || c == '.' || c == ':' || c.is_whitespace());
        let t = strip_prefix_ci(t, &["and ", "but ", "also ", "who ", "which "]).trim();
        if t.chars().filter(|c| c.is_alphabetic()).count() < 3 || out.len() == MAX_CLAIMS {
            continue;
        }
        if out.iter().any(|c| c.text.eq_ignore_ascii_case(t)) {
            continue;
        }
        out.push(Claim { id: format!("E{}", out.len() + 1), text: cut(t, MAX_FACT_CHARS) });
    }
    out
}

fn strip_prefix_ci<'a>(s: &'a str, prefixes: &[&str]) -> &'a str {
    for p in prefixes {
        if s.len() >= p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p) {
            return &s[p.len()..];
        }
    }
    s
}

/// Sentences of `text`: split after `.`, `!` or `?` when whitespace and a capital letter or digit
/// follow (so "Dr. Chen" and "4 a.m. shifts" mostly stay whole).
pub fn sentences(text: &str) -> Vec<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let next = chars.get(k + 1).map(|x| x.1);
        let after = chars.get(k + 2).map(|x| x.1);
        let ends =
            next.is_some_and(char::is_whitespace) && after.is_some_and(|a| a.is_uppercase() || a.is_ascii_digit());
        // "Dr." and single capitals ("J. Smith") are not sentence ends.
        let word_start =
            text[..i].char_indices().rev().find(|(_, c)| c.is_whitespace()).map_or(0, |(w, c)| w + c.len_utf8());
        let word = &text[word_start..i];
        let abbrev = matches!(word, "Dr" | "Mr" | "Mrs" | "Ms" | "Prof" | "St" | "Jr" | "Sr" | "vs" | "e.g" | "i.e")
            || (word.chars().count() == 1 && word.chars().all(char::is_uppercase));
        if ends && !abbrev {
            let s = text[start..i + c.len_utf8()].trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            start = i + c.len_utf8();
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

/// `s` cut to `max` characters at a word boundary, with "..." when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let head: String = s.chars().take(max).collect();
    let head = match head.rfind(char::is_whitespace) {
        Some(i) if i > max / 2 => &head[..i],
        _ => &head[..],
    };
    format!("{}...", head.trim_end())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn splitting_never_panics_and_stays_bounded(s in "\\PC{0,200}") {
            let c = split_claims(&s);
            prop_assert!(c.len() <= MAX_CLAIMS);
            prop_assert!(c.iter().all(|c| !c.text.trim().is_empty()));
            let _ = sentences(&s);
            let _ = cut(&s, 7);
        }
    }

    #[test]
    fn claims_split_at_clauses_not_at_every_and() {
        let c = split_claims("a cautious hospital administrator who distrusts cloud-only tools");
        let t: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(t, ["a cautious hospital administrator", "distrusts cloud-only tools"]);
        assert_eq!(c[1].id, "E2");
        let c = split_claims(
            "Works in research and development. Prefers email; hates meetings, but loves data.\n- speaks Spanish",
        );
        let t: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            t,
            ["Works in research and development", "Prefers email", "hates meetings", "loves data", "speaks Spanish"]
        );
        assert!(split_claims("  ...  ").is_empty());
        let many = (0..30).map(|i| format!("Likes thing number {i}.")).collect::<Vec<_>>().join(" ");
        assert_eq!(split_claims(&many).len(), MAX_CLAIMS);
    }

    #[test]
    fn sentences_keep_abbreviations() {
        assert_eq!(
            sentences("Dr. Chen works nights. She starts at 4 a.m. and stays late! Really? Yes."),
            ["Dr. Chen works nights.", "She starts at 4 a.m. and stays late!", "Really?", "Yes."]
        );
    }

    #[test]
    fn facts_cover_native_and_tinytroupe_fields() {
        let mut p = PersonaSpec::new("ann", "Ann Lee", "Analyst", "Ten years in audits. Lives in Oslo.");
        p.personality.traits = vec!["careful".into()];
        p.personality.goals = vec!["Find the leak".into()];
        p.extra.insert("beliefs".into(), serde_json::json!(["Numbers do not lie."]));
        let (f, dropped) = persona_facts(&p);
        let texts: Vec<(&str, &str)> = f.iter().map(|f| (f.field.as_str(), f.text.as_str())).collect();
        assert_eq!(dropped, 0);
        assert!(texts.contains(&("description", "Lives in Oslo.")), "{texts:?}");
        assert!(texts.contains(&("beliefs", "Numbers do not lie.")), "{texts:?}");
        assert_eq!(f[0].id, "F1");

        let agent = serde_json::json!({"type": "TinyPerson", "persona": {
            "name": "Oscar", "age": 30, "occupation": "Architect",
            "personality": {"traits": ["calm"], "big_five": {"openness": "High."}},
            "beliefs": ["Housing should be affordable."], "skills": ["Drawing"]}});
        let p = crate::persona::load::persona_from_value(agent).unwrap();
        let (f, _) = persona_facts(&p);
        let texts: Vec<(&str, &str)> = f.iter().map(|f| (f.field.as_str(), f.text.as_str())).collect();
        assert!(texts.contains(&("persona.beliefs", "Housing should be affordable.")), "{texts:?}");
        assert!(texts.contains(&("persona.personality.big_five", "openness: High.")), "{texts:?}");
        assert!(texts.contains(&("personality.traits", "calm")), "{texts:?}");
        // Mapped fields are not repeated as persona.* facts.
        assert!(!texts.iter().any(|(k, _)| *k == "persona.age" || *k == "persona.name"), "{texts:?}");
    }

    #[test]
    fn long_facts_are_cut_and_many_are_counted() {
        let mut p = PersonaSpec::new("a", "A B", "R", "x");
        p.personality.goals = (0..100).map(|i| format!("goal {i} {}", "word ".repeat(200))).collect();
        let (f, dropped) = persona_facts(&p);
        assert_eq!(f.len(), MAX_FACTS);
        assert!(dropped > 0);
        assert!(f.iter().all(|f| f.text.chars().count() <= MAX_FACT_CHARS + 3));
    }
}
