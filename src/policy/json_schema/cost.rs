//! The worst-case cost of evaluating a JSON Schema, estimated when it compiles, as
//! Kubernetes estimates a CEL expression's: schema nodes counted with every `$ref`
//! inlined, so that `anyOf` over `$ref`s nested twenty deep counts its 2^20 paths, not its
//! forty nodes; and where in the request context each node applies ([`Cost`]), so that a
//! request is charged for what it holds where the schema looks.

use std::collections::HashMap;

use serde_json::Value;

use crate::policy::cost::Cost;
use crate::resources::json_weight;

/// Schema nodes of a policy, every `$ref` inlined. A hand-written access policy has tens to
/// hundreds; the limit leaves room for generated ones and refuses exponential fan-out. At
/// the limit, a request that fails every branch visits about that many nodes.
pub const MAX_SCHEMA_COST: u64 = 10_000;

/// Where the schema's nodes apply ([`Cost`]); `Err` with the message when it has more
/// than [`MAX_SCHEMA_COST`] nodes with every `$ref` inlined, or a `$ref` refers back to a
/// schema that contains it (recursion over the request context is never needed to decide
/// access, and its cost has no bound).
pub fn check(schema: &Value) -> Result<Cost, String> {
    let mut estimate = Estimate {
        root: schema,
        memo: HashMap::new(),
        open: Vec::new(),
    };
    let nodes = estimate.cost(schema)?;
    if nodes > MAX_SCHEMA_COST {
        return Err(format!(
            "its worst case visits {} schema nodes (every $ref inlined), over the limit of \
             {MAX_SCHEMA_COST}: share fewer $refs under anyOf/oneOf/allOf",
            if nodes == u64::MAX {
                "more than 2^64".to_string()
            } else {
                nodes.to_string()
            }
        ));
    }
    let mut cost = Cost::default();
    estimate.place(schema, &mut Vec::new(), &mut cost)?;
    Ok(cost)
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
            total = total.saturating_add(self.part(key, value)?);
        }
        Ok(total)
    }

    /// The nodes under one keyword of a schema object.
    fn part(&mut self, key: &str, value: &'s Value) -> Result<u64, String> {
        Ok(match key {
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
            // Compared value by value with what the request holds.
            "enum" | "const" => u64::from(json_weight(value)),
            _ => 1,
        })
    }

    /// Where in the request context each node of `schema` applies, `place` being where
    /// `schema` itself does: `properties` go down a key, `allOf`/`anyOf`/`oneOf`/`not`/
    /// `if`/`then`/`else` stay, and whatever meets many values (`items`, `additional*`,
    /// `patternProperties`, `contains`, `propertyNames`, `dependencies`, a `$ref`'s
    /// target, a `pattern` or `format` scanning a string) is a site at `place`.
    fn place(
        &mut self,
        schema: &'s Value,
        place: &mut Vec<&'s str>,
        out: &mut Cost,
    ) -> Result<(), String> {
        out.add_fixed(1);
        let Value::Object(map) = schema else {
            return Ok(());
        };
        for (key, value) in map {
            match (key.as_str(), value) {
                ("properties", Value::Object(children)) => {
                    for (name, child) in children {
                        place.push(name);
                        self.place(child, place, out)?;
                        place.pop();
                    }
                }
                ("allOf" | "anyOf" | "oneOf", Value::Array(branches)) => {
                    for branch in branches {
                        self.place(branch, place, out)?;
                    }
                }
                ("not" | "if" | "then" | "else", _) => self.place(value, place, out)?,
                (
                    "$ref"
                    | "items"
                    | "additionalItems"
                    | "additionalProperties"
                    | "contains"
                    | "propertyNames"
                    | "patternProperties"
                    | "dependencies"
                    | "pattern"
                    | "format",
                    _,
                ) => out.add_site(place, self.part(key, value)?),
                _ => out.add_fixed(self.part(key, value)?),
            }
        }
        Ok(())
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
        let cost = check(&ordinary).unwrap();
        // Only the `pattern` scans what the request holds; the rest meets one value each.
        let mut expected = Cost::default();
        expected.add_fixed(cost.nodes() - 1);
        expected.add_site(&["jwt", "scope"], 1);
        assert_eq!(cost, expected);
    }

    #[test]
    fn what_meets_many_values_is_counted_where_it_applies() {
        let groups = json!({"properties": {"jwt": {"properties": {"groups": {
            "items": {"anyOf": [{"const": "a"}, {"const": "b"}]}}}}}});
        let cost = check(&groups).unwrap();
        // The three objects on the way meet one value each; under `items`, its own node
        // and anyOf's two branches of two nodes each meet every group.
        let mut expected = Cost::fixed(3);
        expected.add_site(&["jwt", "groups"], 5);
        assert_eq!(cost, expected);
        let big_enum = json!({"enum": vec![0; 20_000]});
        assert!(check(&big_enum).unwrap_err().contains("over the limit"));
    }
}
