//! The worst-case cost of evaluating a JSON Schema, estimated when it compiles, as
//! Kubernetes estimates a CEL expression's: schema nodes counted with every `$ref`
//! inlined, so that `anyOf` over `$ref`s nested twenty deep counts its 2^20 paths, not its
//! forty nodes. Evaluation then costs at most this many node visits per value of the
//! request context a node applies to, and the request context is bounded by Envoy's
//! header limits.

use std::collections::HashMap;

use serde_json::Value;

/// Schema nodes of a policy, every `$ref` inlined. A hand-written access policy has tens to
/// hundreds; the limit leaves room for generated ones and refuses exponential fan-out. At
/// the limit, a request that fails every branch visits about that many nodes.
pub const MAX_SCHEMA_COST: u64 = 10_000;

/// `Err` with the message when the schema's estimated cost is over [`MAX_SCHEMA_COST`] or
/// a `$ref` refers back to a schema that contains it (recursion over the request context
/// is never needed to decide access, and its cost has no bound).
pub fn check(schema: &Value) -> Result<(), String> {
    let mut estimate = Estimate {
        root: schema,
        memo: HashMap::new(),
        open: Vec::new(),
    };
    let cost = estimate.cost(schema)?;
    if cost > MAX_SCHEMA_COST {
        return Err(format!(
            "its worst case visits {} schema nodes (every $ref inlined), over the limit of \
             {MAX_SCHEMA_COST}: share fewer $refs under anyOf/oneOf/allOf",
            if cost == u64::MAX {
                "more than 2^64".to_string()
            } else {
                cost.to_string()
            }
        ));
    }
    Ok(())
}

struct Estimate<'s> {
    root: &'s Value,
    /// Cost of each `$ref` target already estimated.
    memo: HashMap<&'s str, u64>,
    /// The `$ref`s being estimated, outermost first: one of them again is recursion.
    open: Vec<&'s str>,
}

impl<'s> Estimate<'s> {
    fn cost(&mut self, schema: &'s Value) -> Result<u64, String> {
        let Value::Object(map) = schema else {
            return Ok(1);
        };
        let mut total: u64 = 1;
        for (key, value) in map {
            let part = match key.as_str() {
                "$ref" => match value.as_str() {
                    Some(reference) => self.reference(reference)?,
                    None => 1,
                },
                // Only reached through a `$ref`.
                "definitions" | "$defs" => 0,
                "properties" | "patternProperties" | "dependencies" => match value {
                    Value::Object(children) => self.sum(children.values())?,
                    _ => 1,
                },
                "allOf" | "anyOf" | "oneOf" | "items" if value.is_array() => {
                    self.sum(value.as_array().into_iter().flatten())?
                }
                "items"
                | "additionalItems"
                | "additionalProperties"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "not" => self.cost(value)?,
                _ => 1,
            };
            total = total.saturating_add(part);
        }
        Ok(total)
    }

    fn sum(&mut self, schemas: impl Iterator<Item = &'s Value>) -> Result<u64, String> {
        let mut total: u64 = 0;
        for s in schemas {
            total = total.saturating_add(self.cost(s)?);
        }
        Ok(total)
    }

    /// A reference within the schema (`#`, `#/definitions/x`, `#/$defs/x`); one that goes
    /// elsewhere the validator refuses or resolves on its own, and counts as one node here.
    fn reference(&mut self, reference: &'s str) -> Result<u64, String> {
        let Some(pointer) = reference.strip_prefix('#') else {
            return Ok(1);
        };
        if let Some(&cost) = self.memo.get(reference) {
            return Ok(cost);
        }
        if self.open.contains(&reference) {
            return Err(format!(
                "$ref {reference:?} refers back to a schema that contains it: recursion has \
                 no bound on the cost of a decision"
            ));
        }
        let Some(target) = self.root.pointer(pointer) else {
            return Ok(1);
        };
        self.open.push(reference);
        let cost = self.cost(target);
        self.open.pop();
        let cost = cost?;
        self.memo.insert(reference, cost);
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `anyOf` of two `$ref`s to the level below, `depth` levels deep.
    fn doubling(depth: usize) -> Value {
        let mut definitions = serde_json::Map::new();
        definitions.insert("l0".into(), json!({"type": "string"}));
        for i in 1..=depth {
            let below = format!("#/definitions/l{}", i - 1);
            definitions.insert(
                format!("l{i}"),
                json!({"anyOf": [{"$ref": below}, {"$ref": below}]}),
            );
        }
        json!({"definitions": definitions, "$ref": format!("#/definitions/l{depth}")})
    }

    #[test]
    fn fan_out_through_refs_is_counted_and_refused() {
        assert!(check(&doubling(10)).is_ok());
        assert!(check(&doubling(12)).is_err());
        let refused = check(&doubling(28)).unwrap_err();
        assert!(refused.contains("over the limit"), "{refused}");
        // Deep enough to overflow a u64 count: still refused, never a panic.
        assert!(check(&doubling(80)).is_err());
    }

    #[test]
    fn recursion_is_refused_and_ordinary_schemas_pass() {
        let recursive = json!({"definitions": {"node": {"properties": {
            "next": {"$ref": "#/definitions/node"}}}}, "$ref": "#/definitions/node"});
        assert!(check(&recursive).unwrap_err().contains("refers back"));
        let ordinary = json!({
            "required": ["jwt"],
            "properties": {
                "jwt": {"properties": {"iss": {"const": "https://a"},
                                       "scope": {"pattern": "read"}}},
                "request-method": {"enum": ["get", "post"]},
            }
        });
        assert!(check(&ordinary).is_ok());
    }
}
