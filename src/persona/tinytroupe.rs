//! TinyTroupe's own formats: `*.agent.json` (`{"type": "TinyPerson", "persona": {...}}`) and
//! fragments (`{"type": "Fragment", "persona": {...}}`).
//!
//! Real files are loose: a field may be a string, a list, or a map of lists. `texts` flattens any
//! of them into lines of text, so mapping never fails on shape.

use serde_json::{Map, Value};

use super::spec::{Origin, PersonaSpec, Personality};

/// True when `obj` looks like a TinyTroupe agent (it has a `persona` object).
pub fn is_agent(obj: &Map<String, Value>) -> bool {
    obj.get("persona").is_some_and(Value::is_object) && !is_fragment(obj)
}

/// True when `obj` is a TinyTroupe fragment.
pub fn is_fragment(obj: &Map<String, Value>) -> bool {
    obj.get("type").and_then(Value::as_str) == Some("Fragment")
}

/// Maps a TinyTroupe agent object to a `PersonaSpec`, keeping the original for saving.
pub fn from_agent(original: Map<String, Value>) -> PersonaSpec {
    let empty = Map::new();
    let p = original.get("persona").and_then(Value::as_object).unwrap_or(&empty);
    let name = p.get("name").map(joined).unwrap_or_default();
    let id = p
        .get("id")
        .or_else(|| original.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| slug(&name));

    let (role, occupation_text) = match p.get("occupation") {
        Some(Value::Object(o)) => {
            let title = o.get("title").map(joined).unwrap_or_default();
            let mut text = Vec::new();
            if let Some(org) = o.get("organization").map(joined).filter(|s| !s.is_empty()) {
                text.push(format!("Works at {org}."));
            }
            text.extend(o.get("description").map(texts).unwrap_or_default());
            (title, text)
        }
        Some(v) => (joined(v), Vec::new()),
        None => (String::new(), Vec::new()),
    };

    let mut description = Vec::new();
    let facts: Vec<String> = ["age", "gender", "nationality", "residence", "education"]
        .iter()
        .filter_map(|k| p.get(*k).map(|v| format!("{k}: {}", joined(v))))
        .collect();
    if !facts.is_empty() {
        description.push(facts.join("; ") + ".");
    }
    description.extend(occupation_text);
    description.extend(p.get("other_facts").map(texts).unwrap_or_default());

    let personality_obj = p.get("personality");
    let traits = match personality_obj {
        Some(Value::Object(o)) => o.get("traits").map(texts).unwrap_or_default(),
        Some(v) => texts(v),
        None => Vec::new(),
    };
    let goals = p.get("long_term_goals").map(texts).unwrap_or_default();
    let style = p.get("style").map(joined).unwrap_or_default();
    let (communication, decisions, approach) = match personality_obj.and_then(|o| o.get("big_five")) {
        Some(b5) => from_big_five(b5),
        None => Default::default(),
    };

    let mut tags = vec!["tinytroupe".to_string()];
    if let Some(Value::Array(t)) = original.get("tags").or_else(|| p.get("tags")) {
        tags.extend(t.iter().filter_map(Value::as_str).map(str::to_owned));
    }

    PersonaSpec {
        kind: "TinyPerson".into(),
        id,
        name,
        role,
        description: description.join(" "),
        personality: Personality { traits, goals, style, communication, decisions, approach, ..Personality::default() },
        model: None,
        temperature: None,
        prompting: None,
        validation_rules: None,
        tags,
        extra: Map::new(),
        origin: Origin::TinyTroupe { original },
    }
}

/// Derives the native communication / decisions / approach fields from TinyTroupe's Big Five
/// descriptions ("High. ...", "Low. ..."): the strongest matching trait decides each field.
fn from_big_five(b5: &Value) -> (String, String, String) {
    let high = |k: &str| {
        b5.get(k).map(joined).is_some_and(|t| {
            let t = t.trim_start().to_lowercase();
            t.starts_with("high") || t.starts_with("very high")
        })
    };
    let communication = if high("extraversion") {
        "direct"
    } else if high("conscientiousness") {
        "structured"
    } else {
        "visual"
    };
    let decisions = if high("agreeableness") {
        "collaborative"
    } else if high("conscientiousness") {
        "data-driven"
    } else {
        "intuitive"
    };
    let approach = if high("openness") {
        "creative"
    } else if high("conscientiousness") {
        "systematic"
    } else {
        "pragmatic"
    };
    (communication.into(), decisions.into(), approach.into())
}

/// Where a native field lives in a TinyTroupe agent file, as a JSON pointer.
pub fn agent_pointer(native_field: &str) -> &'static str {
    match native_field {
        "id" | "name" => "/persona/name",
        "role" | "description" => "/persona/occupation",
        "personality" | "personality.traits" => "/persona/personality/traits",
        "personality.goals" => "/persona/long_term_goals",
        "personality.style" => "/persona/style",
        _ => "/persona/personality",
    }
}

/// Flattens any JSON value into lines of text: strings as they are, lists item by item, maps as
/// `key: value` lines.
pub fn texts(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(v, None, &mut out);
    out
}

fn collect(v: &Value, prefix: Option<&str>, out: &mut Vec<String>) {
    let push = |s: String, out: &mut Vec<String>| match prefix {
        Some(p) => out.push(format!("{p}: {s}")),
        None => out.push(s),
    };
    match v {
        Value::Null => {}
        Value::String(s) => push(s.clone(), out),
        Value::Bool(_) | Value::Number(_) => push(v.to_string(), out),
        Value::Array(items) => items.iter().for_each(|i| collect(i, prefix, out)),
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, Some(k), out);
            }
        }
    }
}

/// All of `texts(v)` joined by "; ".
pub fn joined(v: &Value) -> String {
    texts(v).join("; ")
}

/// An id made from a name: lowercase ASCII letters and digits, other runs become `_`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Deep-merges `patch` into `base`: lists append, maps merge, scalars replace. A text and a list
/// (real files write one fact as a string and several as a list) combine into one list, so a
/// fragment's facts add to the persona's instead of replacing them.
pub fn deep_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                match b.get_mut(k) {
                    Some(bv) => deep_merge(bv, pv),
                    None => {
                        b.insert(k.clone(), pv.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(p)) => b.extend(p.iter().cloned()),
        (Value::Array(b), p @ Value::String(_)) => b.push(p.clone()),
        (b @ Value::String(_), Value::Array(p)) => {
            let mut items = vec![b.take()];
            items.extend(p.iter().cloned());
            *b = Value::Array(items);
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loose_shapes_map_sensibly() {
        let v = json!({"type": "TinyPerson", "persona": {
            "name": "Lisa Carter", "age": 28, "nationality": "Canadian",
            "occupation": {"title": "Data Scientist", "organization": "Microsoft",
                           "description": "You analyse search data."},
            "long_term_goals": ["Grow as a scientist", "Balance life"],
            "style": "Friendly and curious",
            "personality": {"traits": ["You are curious.", "You are patient."],
                            "big_five": {"openness": "High"}},
            "behaviors": {"debate": ["asks for data", "stays calm"]},
            "other_facts": "Likes cooking."}});
        let p = from_agent(v.as_object().unwrap().clone());
        assert_eq!(p.id, "lisa_carter");
        assert_eq!(p.role, "Data Scientist");
        assert!(p.description.contains("Works at Microsoft."));
        assert!(p.description.contains("Likes cooking."));
        assert_eq!(p.personality.goals.len(), 2);
        assert_eq!(p.personality.traits[1], "You are patient.");
        assert_eq!(p.to_saved_value(), v);
    }

    #[test]
    fn occupation_may_be_a_string() {
        let v = json!({"persona": {"name": "Oscar", "occupation": "Architect"}});
        assert_eq!(from_agent(v.as_object().unwrap().clone()).role, "Architect");
    }

    #[test]
    fn merge_rules() {
        let mut base = json!({"a": [1], "m": {"x": 1}, "s": "old"});
        deep_merge(&mut base, &json!({"a": [2], "m": {"y": 2}, "s": "new"}));
        assert_eq!(base, json!({"a": [1, 2], "m": {"x": 1, "y": 2}, "s": "new"}));
        // One fact as a string and more as a list combine, either way round.
        let mut base = json!({"likes": "sardines", "dislikes": ["decks"]});
        deep_merge(&mut base, &json!({"likes": ["agendas"], "dislikes": "long calls"}));
        assert_eq!(base, json!({"likes": ["sardines", "agendas"], "dislikes": ["decks", "long calls"]}));
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Dr. Sarah Chen"), "dr_sarah_chen");
        assert_eq!(slug("  Ünïcode  Name!"), "n_code_name");
    }
}
