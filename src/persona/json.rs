//! Strict JSON reading (duplicate keys are errors) and `line:col` lookup by JSON pointer.
//!
//! serde_json gives positions for syntax errors but a `Value` forgets where things were, and
//! validation findings must still name `line:col`. `PositionIndex` re-scans the text once, only
//! when a finding needs a position, and records where each value of depth <= 3 starts.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// `bytes` without a leading UTF-8 byte-order mark. Editors on Windows write one; JSON forbids
/// it, but a reader may ignore it (RFC 8259, 8.1). Positions are then counted from after the
/// mark, as an editor shows them (the mark takes no column).
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Parses JSON text into a `Value`, rejecting duplicate object keys. Errors carry `line:col`.
/// A leading byte-order mark is skipped.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(strip_bom(bytes));
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(duplicate_key(&key));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn duplicate_key<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate key `{key}` in the same object; keep only one of them"))
}

/// Checks JSON text as `parse_strict` does (same errors, same positions) without building a
/// `Value`: the cheap first pass before a large file is read straight into typed personas.
pub fn check_strict(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(strip_bom(bytes));
    StrictCheck.deserialize(&mut de)?;
    de.end()
}

struct StrictCheck;

impl<'de> DeserializeSeed<'de> for StrictCheck {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Objects with more keys than this are checked for duplicates with a hash set.
const LINEAR_KEYS: usize = 16;

impl<'de> Visitor<'de> for StrictCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(StrictCheck)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys borrow from the input unless they hold escapes.
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let seen = if keys.len() < LINEAR_KEYS { keys.contains(&key) } else { many.contains(&key) };
            if seen {
                return Err(duplicate_key(&key));
            }
            if keys.len() < LINEAR_KEYS {
                keys.push(key);
                if keys.len() == LINEAR_KEYS {
                    many.extend(keys.iter().cloned());
                }
            } else {
                many.insert(key);
            }
            map.next_value_seed(StrictCheck)?;
        }
        Ok(())
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LineCol {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in bytes).
    pub col: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Where the values of a JSON text start, by JSON pointer (`/3/personality/traits`), up to depth 4.
#[derive(Debug, Default)]
pub struct PositionIndex {
    starts: HashMap<String, usize>,
    line_starts: Vec<usize>,
}

const MAX_INDEXED_DEPTH: usize = 4;

impl PositionIndex {
    /// Scans `text` once. Parse it first: on text that is not JSON the positions mean little,
    /// though the scan still ends without panicking.
    pub fn build(text: &[u8]) -> Self {
        let text = strip_bom(text);
        let mut line_starts = vec![0];
        line_starts.extend(memchr_all(b'\n', text).map(|i| i + 1));
        let mut idx = PositionIndex { starts: HashMap::new(), line_starts };
        let mut sc = Scanner { s: text, i: 0 };
        sc.ws();
        idx.value(&mut sc, String::new(), 0);
        idx
    }

    /// The `line:col` of the value at `pointer`, or of its nearest indexed ancestor.
    pub fn locate(&self, pointer: &str) -> Option<LineCol> {
        let mut p = pointer;
        loop {
            if let Some(&off) = self.starts.get(p) {
                return Some(self.line_col(off));
            }
            match p.rfind('/') {
                Some(cut) => p = &p[..cut],
                None => return None,
            }
        }
    }

    fn line_col(&self, off: usize) -> LineCol {
        let line = self.line_starts.partition_point(|&s| s <= off);
        LineCol { line, col: off - self.line_starts[line - 1] + 1 }
    }

    fn value(&mut self, sc: &mut Scanner<'_>, path: String, depth: usize) {
        self.starts.insert(path.clone(), sc.i);
        if depth >= MAX_INDEXED_DEPTH {
            sc.skip_value();
            return;
        }
        match sc.peek() {
            Some(b'{') => {
                sc.i += 1;
                loop {
                    sc.ws();
                    match sc.peek() {
                        Some(b'}') | None => {
                            sc.i += 1;
                            return;
                        }
                        Some(b',') => {
                            sc.i += 1;
                            continue;
                        }
                        _ => {}
                    }
                    let key = sc.string();
                    sc.ws();
                    sc.i += 1; // ':'
                    sc.ws();
                    let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                    self.value(sc, child, depth + 1);
                    sc.ws();
                }
            }
            Some(b'[') => {
                sc.i += 1;
                let mut n = 0usize;
                loop {
                    sc.ws();
                    match sc.peek() {
                        Some(b']') | None => {
                            sc.i += 1;
                            return;
                        }
                        Some(b',') => {
                            sc.i += 1;
                            continue;
                        }
                        _ => {}
                    }
                    let before = sc.i;
                    self.value(sc, format!("{path}/{n}"), depth + 1);
                    n += 1;
                    if sc.i == before {
                        // Not JSON (a stray `:` or `}`): step over it so the scan always ends.
                        sc.i += 1;
                    }
                    sc.ws();
                }
            }
            _ => sc.skip_value(),
        }
    }
}

fn memchr_all(needle: u8, hay: &[u8]) -> impl Iterator<Item = usize> + '_ {
    hay.iter().enumerate().filter(move |(_, b)| **b == needle).map(|(i, _)| i)
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }
    /// Reads a string token and returns its (unescaped enough for keys) contents.
    fn string(&mut self) -> String {
        let start = self.i;
        self.skip_string();
        // On text that is not JSON the scan can stop past the end.
        let raw = self.s.get(start..self.i.min(self.s.len())).unwrap_or_default();
        serde_json::from_slice::<String>(raw).unwrap_or_default()
    }
    fn skip_string(&mut self) {
        self.i += 1; // opening quote
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'\\' => self.i += 1,
                b'"' => return,
                _ => {}
            }
        }
    }
    /// Skips one value of any depth without recursion.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    self.skip_string();
                    if depth == 0 {
                        return;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        return;
                    }
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return;
                    }
                }
                b',' | b' ' | b'\n' | b'\r' | b'\t' | b':' if depth == 0 => return,
                _ => {}
            }
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_rejected_with_position() {
        let err = parse_strict(b"{\n  \"a\": 1,\n  \"a\": 2\n}").unwrap_err();
        assert!(err.to_string().contains("duplicate key `a`"), "{err}");
        assert_eq!(err.line(), 3);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(10_000);
        let err = parse_strict(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn positions_by_pointer() {
        let text = b"[\n {\"id\": \"a\",\n  \"personality\": {\"traits\": [\"x\", \"y\"]}},\n {\"id\": \"b\"}\n]";
        let idx = PositionIndex::build(text);
        assert_eq!(idx.locate("/0/id"), Some(LineCol { line: 2, col: 9 }));
        assert_eq!(idx.locate("/0/personality/traits/1"), Some(LineCol { line: 3, col: 35 }));
        assert_eq!(idx.locate("/1"), Some(LineCol { line: 4, col: 2 }));
        // Missing fields fall back to the nearest ancestor.
        assert_eq!(idx.locate("/1/role"), Some(LineCol { line: 4, col: 2 }));
    }
}
