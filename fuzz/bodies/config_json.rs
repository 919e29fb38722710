//! Fuzz body `config_json`: the configuration loader on the text of one JSON file (a
//! resource, an array of them or a Kubernetes `List`, in either form), parsed and compiled
//! into a snapshot as `validate` and the file source do.
//!
//! Input: JSON text, read as the file `fuzz.json`. An input that is not JSON is turned into
//! a configuration by `common::Gen::configuration` (the four kinds, their field names and
//! mostly the right shapes), written as JSON (compact or pretty), and read the same way.
//! Properties: see `common::check_config`; and JSON that serde_json reads is read by the
//! loader too (no "invalid YAML" for a `.json` file that is valid JSON).

#[path = "common.rs"]
mod common;

pub fn run(data: &[u8]) {
    let text = match std::str::from_utf8(data)
        .ok()
        .filter(|t| serde_json::from_str::<serde_json::Value>(t).is_ok())
    {
        Some(text) => text.to_string(),
        None => {
            let mut gen = common::Gen::new(data);
            let pretty = gen.byte() & 1 == 1;
            let config = gen.configuration();
            if pretty {
                serde_json::to_string_pretty(&config).expect("JSON")
            } else {
                serde_json::to_string(&config).expect("JSON")
            }
        }
    };
    if !outside_yaml(&text) {
        let (_, errors) =
            portcullis::resources::parse_documents(std::path::Path::new("fuzz.json"), &text);
        for e in &errors {
            assert!(
                !e.message.starts_with("invalid YAML"),
                "valid JSON refused as YAML: {e}"
            );
        }
    }
    common::check_config("fuzz.json", &text);
}

/// JSON that the YAML reader (which reads `.json` files too) refuses, known and left as is:
/// characters YAML does not allow unescaped (DEL, C1 controls, surrogates' neighbours:
/// YAML 1.2's `c-printable`), implicit keys longer than 1024 characters, and a key repeated
/// in one object (serde_json keeps the last; the loader refuses the file, on purpose).
fn outside_yaml(text: &str) -> bool {
    let printable = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}'
            | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    };
    fn long_key(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
                serde_json::to_string(k).map_or(true, |k| k.len() > 1024) || long_key(v)
            }),
            serde_json::Value::Array(items) => items.iter().any(long_key),
            _ => false,
        }
    }
    !text.chars().all(printable)
        || serde_json::from_str(text).map_or(true, |v: serde_json::Value| long_key(&v))
        || serde_json::from_str::<Unique>(text).is_err()
}

/// Any JSON value whose objects never repeat a key.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("a repeated key"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}
