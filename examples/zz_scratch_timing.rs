use std::time::Instant;
use troupe_sim::persona::PersonaDatabase;
use troupe_sim::persona::json::parse_strict;
use troupe_sim::persona::load::persona_from_value;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let t = Instant::now();
    let bytes = std::fs::read(&path).unwrap();
    eprintln!("read {:?}", t.elapsed());
    more(&bytes);
    let t = Instant::now();
    let v = parse_strict(&bytes).unwrap();
    eprintln!("parse_strict {:?}", t.elapsed());
    let t = Instant::now();
    let v2: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    eprintln!("serde_json::from_slice Value {:?}", t.elapsed());
    let t = Instant::now();
    drop(v2);
    eprintln!("drop value {:?}", t.elapsed());
    let items = match v {
        serde_json::Value::Array(a) => a,
        _ => panic!(),
    };
    let t = Instant::now();
    let specs: Vec<_> = items
        .clone()
        .into_iter()
        .map(|v| persona_from_value(v).unwrap())
        .collect();
    eprintln!("persona_from_value {:?}", t.elapsed());
    let t = Instant::now();
    let specs2: Vec<troupe_sim::persona::PersonaSpec> = items
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    eprintln!("from_value {:?}", t.elapsed());
    let t = Instant::now();
    drop(specs);
    drop(specs2);
    eprintln!("drop specs {:?}", t.elapsed());
    let t = Instant::now();
    let db = PersonaDatabase::load(std::path::Path::new(&path)).unwrap();
    eprintln!("load {:?}", t.elapsed());
    let t = Instant::now();
    drop(db);
    eprintln!("drop db {:?}", t.elapsed());
}

mod strict {
    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::fmt;
    pub struct Check;
    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(V)
        }
    }
    struct V;
    impl<'de> Visitor<'de> for V {
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
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys: Vec<Cow<'de, str>> = Vec::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if keys.contains(&key) {
                    return Err(de::Error::custom("dup"));
                }
                keys.push(key);
                map.next_value_seed(Check)?;
            }
            let _ = IgnoredAny;
            Ok(())
        }
    }
}

#[allow(dead_code)]
fn more(bytes: &[u8]) {
    use serde::de::DeserializeSeed;
    let t = Instant::now();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    strict::Check.deserialize(&mut de).unwrap();
    eprintln!("strict check {:?}", t.elapsed());
    let t = Instant::now();
    let v: Vec<troupe_sim::persona::PersonaSpec> = serde_json::from_slice(bytes).unwrap();
    eprintln!("typed parse {:?}", t.elapsed());
    let t = Instant::now();
    drop(v);
    eprintln!("drop typed {:?}", t.elapsed());
}
