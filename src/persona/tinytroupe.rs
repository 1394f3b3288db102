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
        .unwrap_or_else(|| id_from_name(&name));

    let (role, occupation_text) = match p.get("occupation") {
        Some(Value::Object(o)) => {
            let mut text = Vec::new();
            if let Some(org) = o.get("organization").map(joined).filter(|s| !s.is_empty()) {
                text.push(format!("Works at {org}."));
            }
            text.extend(o.get("description").map(texts).unwrap_or_default());
            (role_from_occupation(o), text)
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
    let goals = goals_of(p);
    let style = style_of(p, &traits);
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

/// The role an occupation object gives, whatever its shape: `title`, else the current status
/// or role (`current_status`, `current_role`, `position`, `job`; with the latest of
/// `former_roles` after it, "Retired (former Machinist)"), else "former" and the first of
/// `former_roles`, else the first sentence of `description` ("You are a clerk at ..." ->
/// "Clerk at ..."). Empty when none of these is there; validation then reports it.
fn role_from_occupation(o: &Map<String, Value>) -> String {
    let text = |k: &str| o.get(k).map(joined).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if let Some(t) = text("title") {
        return t;
    }
    let former = o.get("former_roles").and_then(|v| match v {
        Value::Array(items) => items.iter().find_map(role_item),
        other => role_item(other),
    });
    let current = ["current_status", "current_role", "position", "job"].iter().find_map(|k| text(k));
    match (current, former) {
        (Some(c), Some(f)) if !c.to_lowercase().contains(&f.to_lowercase()) => format!("{c} (former {f})"),
        (Some(c), _) => c,
        (None, Some(f)) => format!("former {f}"),
        (None, None) => o.get("description").map(texts).and_then(|d| first_sentence_role(&d)).unwrap_or_default(),
    }
}

/// One entry of `former_roles`: a string, or an object with a `title` (or `role`).
fn role_item(v: &Value) -> Option<String> {
    let s = match v {
        Value::Object(m) => m.get("title").or_else(|| m.get("role")).map(joined)?,
        other => joined(other),
    };
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The first sentence of a description as a role: "You are a clerk at the records office. You
/// like order." -> "Clerk at the records office". At most 80 characters, cut at a word.
fn first_sentence_role(lines: &[String]) -> Option<String> {
    let first = lines.iter().map(|l| l.trim()).find(|l| !l.is_empty())?;
    let sentence = first.split_inclusive(['.', '!', '?', ';', '\n']).next().unwrap_or(first);
    let mut s = sentence.trim().trim_end_matches(['.', '!', '?', ';']).trim();
    for lead in ["you are an ", "you are a ", "you are ", "you're a ", "i am an ", "i am a ", "i'm a ", "works as a "] {
        if s.len() >= lead.len() && s.is_char_boundary(lead.len()) && s[..lead.len()].eq_ignore_ascii_case(lead) {
            s = &s[lead.len()..];
            break;
        }
    }
    let mut out = String::new();
    for w in s.split_whitespace() {
        if out.len() + w.len() + 1 > 80 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    let mut chars = out.chars();
    let first = chars.next()?;
    Some(first.to_uppercase().chain(chars).collect())
}

/// Goals: `long_term_goals`, else `goals`, `objectives` or `aspirations` (at the persona's top
/// level or in `personality`). Interests and likes are not goals, so nothing is made up from
/// them: validation warns instead.
fn goals_of(p: &Map<String, Value>) -> Vec<String> {
    let personality = p.get("personality").and_then(Value::as_object);
    ["long_term_goals", "goals", "objectives", "aspirations"]
        .iter()
        .flat_map(|k| [p.get(*k), personality.and_then(|o| o.get(*k))])
        .flatten()
        .map(texts)
        .find(|t| t.iter().any(|s| !s.trim().is_empty()))
        .unwrap_or_default()
}

/// Style: `style`, else `communication.style`, `speech` or `voice` (top level or in
/// `personality`), else a sentence built from the traits.
fn style_of(p: &Map<String, Value>, traits: &[String]) -> String {
    let personality = p.get("personality").and_then(Value::as_object);
    fn communication_style(o: Option<&Map<String, Value>>) -> Option<&Value> {
        match o.and_then(|o| o.get("communication")) {
            Some(Value::Object(c)) => c.get("style"),
            _ => None,
        }
    }
    let found = [p.get("style"), personality.and_then(|o| o.get("style"))]
        .into_iter()
        .chain([communication_style(Some(p)), communication_style(personality)])
        .chain(["speech", "voice"].iter().flat_map(|k| [p.get(*k), personality.and_then(|o| o.get(*k))]))
        .flatten()
        .map(joined)
        .find(|s| !s.trim().is_empty());
    found.unwrap_or_else(|| style_from_traits(traits))
}

/// "Speaks in keeping with being meticulous; warm with customers." from TinyTroupe's trait
/// sentences ("You are meticulous."), at most three of them; empty without traits.
fn style_from_traits(traits: &[String]) -> String {
    let words: Vec<String> = traits
        .iter()
        .map(|t| {
            let t = t.trim().trim_end_matches(['.', '!']).trim();
            let lower = t.to_lowercase();
            let cut =
                ["you are ", "you're ", "is ", "are "].iter().find(|l| lower.starts_with(*l)).map_or(0, |l| l.len());
            t.get(cut..).unwrap_or(t).trim().to_string()
        })
        .filter(|t| !t.is_empty())
        .take(3)
        .collect();
    if words.is_empty() { String::new() } else { format!("Speaks in keeping with being {}.", words.join("; ")) }
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

/// An id made from a name: lowercase ASCII letters and digits, other runs become `_`. Latin
/// letters with diacritics, Greek and Cyrillic are transliterated (`Tomás` -> `tomas`, `ß` ->
/// `ss`, `Ольга` -> `olga`); letters of other scripts are dropped, so the result may be empty
/// (see [`id_from_name`] for ids).
pub fn slug(name: &str) -> String {
    slug_and_dropped(name).0
}

/// The id of a persona named `name`: its [`slug`], made unique for names that lose letters on
/// the way (other scripts, such as `王小明`) by a short hash of the whole name: `persona_1f3a9c2e`
/// when nothing is left, `wei_1f3a9c2e` when part is. The hash is stable across runs and machines.
pub fn id_from_name(name: &str) -> String {
    let (s, dropped) = slug_and_dropped(name);
    if !dropped {
        return s;
    }
    let hash = format!("{:08x}", fnv1a(name.trim().as_bytes()) as u32);
    if s.is_empty() { format!("persona_{hash}") } else { format!("{s}_{hash}") }
}

/// The slug, and whether letters were dropped for want of a transliteration.
fn slug_and_dropped(name: &str) -> (String, bool) {
    let mut out = String::with_capacity(name.len());
    let mut dropped = false;
    let mut gap = false;
    let mut prev = ' ';
    for c in name.chars().flat_map(char::to_lowercase) {
        let ascii = if c.is_ascii_alphanumeric() {
            Some(Ascii::One(c))
        } else if matches!(c, 'υ' | 'ύ') && matches!(prev, 'ο' | 'ό') {
            // Greek `ου` is written `ou` (Παπαδοπούλου -> papadopoulou).
            Some(Ascii::One('u'))
        } else {
            transliterate(c)
        };
        prev = c;
        match ascii {
            Some(a) => {
                if gap && !out.is_empty() {
                    out.push('_');
                }
                gap = false;
                match a {
                    Ascii::One(c) => out.push(c),
                    Ascii::Many(s) => out.push_str(s),
                }
            }
            None => {
                // Combining marks (a decomposed `é`) belong to the letter before them.
                if is_combining(c) {
                    continue;
                }
                dropped |= c.is_alphanumeric();
                gap = true;
            }
        }
    }
    (out, dropped)
}

enum Ascii {
    One(char),
    Many(&'static str),
}

/// Lower-case letters of Latin-1, Latin Extended-A/B and Latin Extended Additional (Vietnamese)
/// that are a base letter with marks, and the base letter, position by position.
const LATIN_FROM: &str = concat!(
    "àáâãäåçèéêëìíîïðñòóôõöøùúûüýÿāăąćĉċčďđēĕėęěĝğġģĥħĩīĭįıĵķ",
    "ĸĺļľŀłńņňŉōŏőŕŗřśŝşšţťŧũūŭůűųŵŷźżžſƀƈƒƙƚơƥƭưƴƶǎǐǒǔǖǘǚǜǝǟ",
    "ǡǥǧǩǫǭǰǵǹǻǿȁȃȅȇȉȋȍȏȑȓȕȗșțȟȥȧȩȫȭȯȱȳȼȿɀɇɉɋɍɏḁḃḅḇḉḋḍḏḑḓḕḗḙḛ",
    "ḝḟḡḣḥḧḩḫḭḯḱḳḵḷḹḻḽḿṁṃṅṇṉṋṍṏṑṓṕṗṙṛṝṟṡṣṥṧṩṫṭṯṱṳṵṷṹṻṽṿẁẃẅẇẉẋ",
    "ẍẏẑẓẕẖẗẘẙẚẛạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
);
const LATIN_TO: &str = concat!(
    "aaaaaaceeeeiiiidnoooooouuuuyyaaaccccddeeeeegggghhiiiiijk",
    "klllllnnnnooorrrsssstttuuuuuuwyzzzsbcfkloptuyzaiouuuuuea",
    "aggkoojgnaoaaeeiioorruusthzaeooooycszejqryabbbcdddddeeee",
    "efghhhhhiikkkllllmmmnnnnoooopprrrrsssssttttuuuuuvvwwwwwx",
    "xyzzzhtwyasaaaaaaaaaaaaeeeeeeeeiioooooooooooouuuuuuuyyyy",
);

/// Letters that stand for more than one ASCII letter, and the Greek and Cyrillic alphabets
/// (lower case), transliterated the way names are usually written in Latin letters.
#[rustfmt::skip]
const MANY: &[(char, &str)] = &[
    ('ß', "ss"), ('æ', "ae"), ('ǣ', "ae"), ('ǽ', "ae"), ('œ', "oe"), ('þ', "th"), ('ĳ', "ij"), ('ŋ', "ng"),
    ('ǆ', "dz"), ('ǳ', "dz"), ('ǉ', "lj"), ('ǌ', "nj"), ('α', "a"), ('ά', "a"), ('β', "v"), ('γ', "g"),
    ('δ', "d"), ('ε', "e"), ('έ', "e"), ('ζ', "z"), ('η', "i"), ('ή', "i"), ('θ', "th"), ('ι', "i"), ('ί', "i"),
    ('ϊ', "i"), ('ΐ', "i"), ('κ', "k"), ('λ', "l"), ('μ', "m"), ('ν', "n"), ('ξ', "x"), ('ο', "o"), ('ό', "o"),
    ('π', "p"), ('ρ', "r"), ('σ', "s"), ('ς', "s"), ('τ', "t"), ('υ', "y"), ('ύ', "y"), ('ϋ', "y"), ('ΰ', "y"),
    ('φ', "f"), ('χ', "ch"), ('ψ', "ps"), ('ω', "o"), ('ώ', "o"), ('а', "a"), ('б', "b"), ('в', "v"),
    ('г', "g"), ('ґ', "g"), ('д', "d"), ('ђ', "dj"), ('е', "e"), ('ё', "e"), ('є', "ye"), ('ж', "zh"),
    ('з', "z"), ('и', "i"), ('і', "i"), ('ї', "yi"), ('й', "y"), ('ј', "j"), ('к', "k"), ('л', "l"),
    ('љ', "lj"), ('м', "m"), ('н', "n"), ('њ', "nj"), ('о', "o"), ('п', "p"), ('р', "r"), ('с', "s"),
    ('т', "t"), ('ћ', "c"), ('у', "u"), ('ў', "u"), ('ф', "f"), ('х', "kh"), ('ц', "ts"), ('ч', "ch"),
    ('џ', "dz"), ('ш', "sh"), ('щ', "shch"), ('ъ', ""), ('ы', "y"), ('ь', ""), ('э', "e"), ('ю', "yu"),
    ('я', "ya"),
];

fn transliterate(c: char) -> Option<Ascii> {
    if let Some(i) = LATIN_FROM.chars().position(|l| l == c) {
        return LATIN_TO.chars().nth(i).map(Ascii::One);
    }
    MANY.iter().find(|(l, _)| *l == c).map(|(_, s)| Ascii::Many(s))
}

/// Combining diacritical marks (U+0300..U+036F) and their supplements.
fn is_combining(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036f}' | '\u{1ab0}'..='\u{1aff}' | '\u{1dc0}'..='\u{1dff}' | '\u{20d0}'..='\u{20ff}')
}

/// FNV-1a, 64 bits: a stable hash with no dependency (std's `DefaultHasher` may change).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
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
        assert_eq!(slug("  Ünïcode  Name!"), "unicode_name");
        // A decomposed `é` (e + U+0301) reads like the composed one.
        assert_eq!(slug("Jose\u{301} Rene\u{301}e"), "jose_renee");
        assert_eq!(LATIN_FROM.chars().count(), LATIN_TO.chars().count());
        assert!(LATIN_TO.chars().all(|c| c.is_ascii_lowercase()));
        assert!(MANY.iter().all(|(_, s)| s.chars().all(|c| c.is_ascii_lowercase())));
    }
}
