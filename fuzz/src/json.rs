//! JSON properties the gateway's output must have: parseable, and no object with the same key twice.
//!
//! Duplicate keys are legal-looking JSON that different parsers read differently (first wins, last wins,
//! or an error), so a body with one means the upstream may see a different request than we built.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Walks any JSON value and fails on the first object that repeats a key.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_none<E: de::Error>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Whether `text` is JSON with an object that repeats a key.
pub fn has_duplicate_keys(text: &str) -> bool {
    matches!(serde_json::from_str::<Unique>(text), Err(e) if e.to_string().starts_with("duplicate key"))
}

/// Panics unless `bytes` is one JSON value whose objects never repeat a key; `what` names the document.
pub fn assert_clean_json(bytes: &[u8], what: &str) {
    if let Err(e) = serde_json::from_slice::<Unique>(bytes) {
        panic!("{what} is not clean JSON ({e}): {}", String::from_utf8_lossy(bytes));
    }
}
