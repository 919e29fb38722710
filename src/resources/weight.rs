//! How much JSON a policy may have to walk: the unit in which a request's context and a
//! policy's worst case are both counted (`docs/policies.md`, "What a policy may cost").

use serde_json::Value;

/// Bytes of a string that count as one more value: a regex or a comparison reads a long
/// string as it would this many short ones.
const BYTES_PER_VALUE: usize = 32;

/// The values in `v` (itself, each item, each key's value), each string counting one more
/// for every [`BYTES_PER_VALUE`] of its length and each key as a string. Saturates at
/// `u32::MAX`, far above anything the size limits let in.
pub fn json_weight(v: &Value) -> u32 {
    let mut total: u64 = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        total += 1;
        match v {
            Value::String(s) => total += (s.len() / BYTES_PER_VALUE) as u64,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, v) in map {
                    total += (k.len() / BYTES_PER_VALUE) as u64;
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Whether `v` weighs at most `limit` ([`json_weight`]), walking no further than that.
pub fn weighs_at_most(v: &Value, limit: u32) -> bool {
    let mut left = u64::from(limit) + 1;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        let w = match v {
            Value::String(s) => 1 + (s.len() / BYTES_PER_VALUE) as u64,
            Value::Array(items) => {
                stack.extend(items);
                1
            }
            Value::Object(map) => {
                for (k, v) in map {
                    left = left.saturating_sub((k.len() / BYTES_PER_VALUE) as u64);
                    stack.push(v);
                }
                1
            }
            _ => 1,
        };
        left = left.saturating_sub(w);
        if left == 0 {
            return false;
        }
    }
    true
}

/// The [`json_weight`] of the JSON text `text`, read as it streams: nothing is built, and
/// reading stops once it weighs more than `limit` (`Ok(None)`). `Err`: not JSON.
pub fn weigh_text(text: &str, limit: u32) -> Result<Option<u32>, serde_json::Error> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;
    use std::fmt;

    struct Weigh<'c> {
        left: &'c Cell<u64>,
    }

    impl Weigh<'_> {
        fn pay<E: Error>(&self, w: u64) -> Result<(), E> {
            let left = self.left.get().saturating_sub(w);
            self.left.set(left);
            if left == 0 {
                return Err(E::custom(OVER));
            }
            Ok(())
        }
    }

    const OVER: &str = "over the weight limit";

    impl<'de> DeserializeSeed<'de> for Weigh<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Weigh<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            self.pay(1)
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            self.pay(1)
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            self.pay(1)
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            self.pay(1)
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<(), E> {
            self.pay(1 + (s.len() / BYTES_PER_VALUE) as u64)
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            self.pay(1)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            self.pay(1)?;
            while seq.next_element_seed(Weigh { left: self.left })?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.pay(1)?;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                self.pay((key.len() / BYTES_PER_VALUE) as u64)?;
                map.next_value_seed(Weigh { left: self.left })?;
            }
            Ok(())
        }
    }

    let left = Cell::new(u64::from(limit) + 1);
    let mut de = serde_json::Deserializer::from_str(text);
    match (Weigh { left: &left }).deserialize(&mut de) {
        Ok(()) => {
            de.end()?;
            Ok(Some((u64::from(limit) + 1 - left.get()) as u32))
        }
        Err(_) if left.get() == 0 => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`json_weight`] of a string value, without building it.
pub fn text_weight(s: &str) -> u32 {
    u32::try_from(1 + s.len() / BYTES_PER_VALUE).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_value_counts_once_and_long_strings_count_more() {
        assert_eq!(json_weight(&json!(1)), 1);
        assert_eq!(json_weight(&json!({"a": 1, "b": [1, 2, 3]})), 6);
        assert_eq!(json_weight(&json!("x".repeat(64))), 3);
        assert_eq!(text_weight(&"x".repeat(64)), 3);
        let wide = Value::Array(vec![json!(0); 100_000]);
        assert_eq!(json_weight(&wide), 100_001);
    }

    #[test]
    fn the_limit_is_found_without_building_or_walking_past_it() {
        let doc = json!({"a": [1, "x", {"long": "y".repeat(100)}], "b": null});
        let weight = json_weight(&doc);
        let text = doc.to_string();
        assert_eq!(weigh_text(&text, weight).unwrap(), Some(weight));
        assert_eq!(weigh_text(&text, weight - 1).unwrap(), None);
        assert!(weighs_at_most(&doc, weight));
        assert!(!weighs_at_most(&doc, weight - 1));
        assert!(weigh_text("{\"a\": ", 100).is_err());
        // A long array stops being read at the limit.
        let wide = format!("[{}0]", "0,".repeat(1_000_000));
        assert_eq!(weigh_text(&wide, 1_000).unwrap(), None);
    }
}
