//! Tolerant JSON for structured replies: local models often wrap their JSON in code fences or
//! prose, use single quotes or Python literals, leave trailing commas, or stop mid-object at
//! `max_tokens`. [`parse_json_tolerant`] recovers the value where a reader would.

use serde_json::Value;

/// Most candidate start positions tried in one text (bounds the work on long prose).
const MAX_STARTS: usize = 8;

/// The JSON value in `text`: the whole text when it is valid JSON, else the first object or
/// array found in it (inside a code fence or surrounded by prose), repaired when needed
/// (single quotes, trailing commas, unquoted keys, `True`/`False`/`None`, a missing end).
/// `None` when there is nothing that reads as JSON. Never panics.
pub fn parse_json_tolerant(text: &str) -> Option<Value> {
    let text = text.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    if let Some(inner) = fenced(text)
        && let Some(v) = from_candidates(inner)
    {
        return Some(v);
    }
    from_candidates(text)
}

/// The body of the first ``` fence (its language tag dropped), up to the closing fence or the
/// end.
fn fenced(text: &str) -> Option<&str> {
    let start = text.find("```")?;
    let after = &text[start + 3..];
    let body = match after.find('\n') {
        Some(nl) => &after[nl + 1..],
        None => after,
    };
    Some(match body.find("```") {
        Some(end) => &body[..end],
        None => body,
    })
}

fn from_candidates(text: &str) -> Option<Value> {
    let starts = text.char_indices().filter(|(_, c)| *c == '{' || *c == '[').map(|(i, _)| i).take(MAX_STARTS);
    for s in starts {
        let candidate = balanced(&text[s..]);
        if let Ok(v) = serde_json::from_str::<Value>(candidate) {
            return Some(v);
        }
        if let Ok(v) = serde_json::from_str::<Value>(&repair(candidate)) {
            return Some(v);
        }
    }
    None
}

/// The prefix of `text` (which opens with `{` or `[`) up to its matching closer, or all of it.
fn balanced(text: &str) -> &str {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[..i + c.len_utf8()];
                }
            }
            _ => {}
        }
    }
    text
}

/// Rewrites near-JSON as JSON: single-quoted strings, trailing commas, bare keys and Python
/// literals; closes an unterminated string and any open brackets.
fn repair(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut stack: Vec<char> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i = copy_string(&chars, i, &mut out);
                continue;
            }
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                stack.pop();
            }
            ',' => {
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if matches!(next, None | Some('}') | Some(']')) {
                    i += 1;
                    continue;
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let end =
                    chars[i..].iter().position(|c| !(c.is_alphanumeric() || *c == '_')).map_or(chars.len(), |p| i + p);
                let word: String = chars[i..end].iter().collect();
                let is_key = chars[end..].iter().find(|c| !c.is_whitespace()) == Some(&':');
                match word.as_str() {
                    _ if is_key => {
                        out.push('"');
                        out.push_str(&word);
                        out.push('"');
                    }
                    "True" => out.push_str("true"),
                    "False" => out.push_str("false"),
                    "None" => out.push_str("null"),
                    _ => out.push_str(&word),
                }
                i = end;
                continue;
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    // A trailing comma left before the closers appended below.
    if out.trim_end().ends_with(',') {
        let t = out.trim_end().len() - 1;
        out.truncate(t);
    }
    while let Some(closer) = stack.pop() {
        out.push(closer);
    }
    out
}

/// Copies the string opening at `chars[start]` as a double-quoted JSON string; returns the
/// index after it.
fn copy_string(chars: &[char], start: usize, out: &mut String) -> usize {
    let q = chars[start];
    out.push('"');
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                match chars.get(i + 1) {
                    Some('\'') => out.push('\''),
                    Some(&n) if "\"\\/bfnrtu".contains(n) => {
                        out.push('\\');
                        out.push(n);
                    }
                    Some(&n) => {
                        out.push_str("\\\\");
                        out.push(n);
                    }
                    None => out.push_str("\\\\"),
                }
                i += 2;
                continue;
            }
            c if c == q => {
                out.push('"');
                return i + 1;
            }
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
        i += 1;
    }
    out.push('"');
    i
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn recovers_what_models_write() {
        let want = json!({"action": "speak", "to": null, "text": "I don't agree."});
        for text in [
            r#"{"action": "speak", "to": null, "text": "I don't agree."}"#,
            "```json\n{\"action\": \"speak\", \"to\": null, \"text\": \"I don't agree.\"}\n```",
            "Sure! Here is my action:\n{\"action\": \"speak\", \"to\": null, \"text\": \"I don't agree.\"}\nHope that helps.",
            "{'action': 'speak', 'to': None, 'text': \"I don't agree.\"}",
            "{\"action\": \"speak\", \"to\": null, \"text\": \"I don't agree.\",}",
            "{action: 'speak', to: null, text: 'I don\\'t agree.'}",
            "```\n{\"action\": \"speak\", \"to\": null, \"text\": \"I don't agree.\"",
        ] {
            assert_eq!(parse_json_tolerant(text), Some(want.clone()), "{text}");
        }
        assert_eq!(parse_json_tolerant("[1, 2, 3,]"), Some(json!([1, 2, 3])));
        assert_eq!(parse_json_tolerant("note {not json} then {\"a\": 1}"), Some(json!({"a": 1})));
        assert_eq!(parse_json_tolerant("I think we should wait."), None);
        assert_eq!(parse_json_tolerant(""), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_json_tolerant(&s);
        }

        #[test]
        fn never_panics_on_json_like(s in "[{}\\[\\]'\",: a-zA-Z0-9\\\\\n`]{0,60}") {
            let _ = parse_json_tolerant(&s);
        }

        #[test]
        fn valid_objects_round_trip(m in proptest::collection::btree_map("[a-z]{1,5}", "[^\"\\\\`]{0,10}", 0..4), prose in "[a-zA-Z .]{0,20}") {
            let v = serde_json::to_value(&m).unwrap();
            let text = format!("{prose}\n```json\n{}\n```\n{prose}", serde_json::to_string_pretty(&v).unwrap());
            prop_assert_eq!(parse_json_tolerant(&text), Some(v));
        }
    }
}
