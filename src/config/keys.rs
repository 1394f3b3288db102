//! Every setting's dotted key, the unset ones included.
//!
//! Optional settings are left out when serialized (`skip_serializing_if`), so flattening the
//! JSON of a config loses them. serde's derive still announces each skipped field to the
//! serializer (`SerializeStruct::skip_field`); the serializer here records those as unset, so
//! `troupe config show` and the test of `config/troupe.toml` see every key a config has.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible, SerializeStruct};
use serde_json::Value;

/// One setting: its dotted key and value, `None` when it is unset.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Dotted key, such as `llm.base_url`.
    pub key: String,
    /// The value as JSON; `None` for an optional setting that is not set.
    pub value: Option<Value>,
}

/// Every leaf setting of `value` (a config section or the whole config), in field order.
/// Nested structs are descended into; lists, maps of data and scalars are leaves.
pub fn leaves(value: &impl Serialize) -> Vec<Leaf> {
    let mut out = Vec::new();
    // Only a struct (or a struct in an Option) yields keys; anything else has none.
    let _ = value.serialize(Collector { prefix: "", out: &mut out });
    out
}

struct Collector<'a> {
    prefix: &'a str,
    out: &'a mut Vec<Leaf>,
}

/// Stops the walk at something that is not a struct; never shown to a user.
#[derive(Debug)]
struct NotAStruct;

impl fmt::Display for NotAStruct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for NotAStruct {}

impl ser::Error for NotAStruct {
    fn custom<T: fmt::Display>(_: T) -> Self {
        NotAStruct
    }
}

type Res = Result<(), NotAStruct>;

macro_rules! not_a_struct {
    ($($name:ident($($t:ty),*);)*) => {
        $(fn $name(self, $(_: $t),*) -> Res { Err(NotAStruct) })*
    };
}

impl<'a> ser::Serializer for Collector<'a> {
    type Ok = ();
    type Error = NotAStruct;
    type SerializeSeq = Impossible<(), NotAStruct>;
    type SerializeTuple = Impossible<(), NotAStruct>;
    type SerializeTupleStruct = Impossible<(), NotAStruct>;
    type SerializeTupleVariant = Impossible<(), NotAStruct>;
    type SerializeMap = Impossible<(), NotAStruct>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Impossible<(), NotAStruct>;

    not_a_struct! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32); serialize_i64(i64);
        serialize_u8(u8); serialize_u16(u16); serialize_u32(u32); serialize_u64(u64); serialize_f32(f32);
        serialize_f64(f64); serialize_char(char); serialize_str(&str); serialize_bytes(&[u8]);
        serialize_none(); serialize_unit(); serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Res {
        Err(NotAStruct)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotAStruct> {
        Ok(Fields { prefix: self.prefix, out: self.out })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAStruct> {
        Err(NotAStruct)
    }
}

struct Fields<'a> {
    prefix: &'a str,
    out: &'a mut Vec<Leaf>,
}

impl Fields<'_> {
    fn key(&self, field: &str) -> String {
        if self.prefix.is_empty() { field.to_string() } else { format!("{}.{field}", self.prefix) }
    }
}

impl SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = NotAStruct;

    fn serialize_field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Res {
        let key = self.key(name);
        let json = serde_json::to_value(value).unwrap_or(Value::Null);
        if json.is_object() {
            // A section (or an optional one that is set): its fields are the leaves.
            let before = self.out.len();
            if value.serialize(Collector { prefix: &key, out: self.out }).is_ok() {
                return Ok(());
            }
            self.out.truncate(before);
        }
        self.out.push(Leaf { key, value: Some(json) });
        Ok(())
    }
    fn skip_field(&mut self, name: &'static str) -> Res {
        let key = self.key(name);
        self.out.push(Leaf { key, value: None });
        Ok(())
    }
    fn end(self) -> Res {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimulationConfig;

    #[test]
    fn unset_options_are_listed_and_sections_are_descended() {
        let leaves = leaves(&SimulationConfig::default());
        let get = |k: &str| leaves.iter().find(|l| l.key == k).unwrap_or_else(|| panic!("{k}"));
        assert_eq!(get("llm.base_url").value, None);
        assert_eq!(get("llm.local.model_path").value, None);
        assert_eq!(get("simulation.turn_policy").value, None);
        assert_eq!(get("llm.model").value, Some(Value::from("gpt-4o-mini")));
        assert_eq!(get("llm.simulated.latency.p99_ms").value, Some(Value::from(1000.0)));
        assert_eq!(get("output.journal_fsync").value, Some(Value::from("turn")));
        assert!(!leaves.iter().any(|l| l.key == "llm" || l.key == "llm.simulated"), "sections are not leaves");
        // Set later, an optional setting is listed with its value, and no key comes or goes.
        let mut c = SimulationConfig::default();
        c.llm.top_p = Some(0.5);
        assert_eq!(super::leaves(&c).iter().find(|l| l.key == "llm.top_p").unwrap().value, Some(Value::from(0.5)));
        assert_eq!(super::leaves(&c).len(), leaves.len());
    }
}
