//! The `json-schema` engine: draft-07, validator built once at compile time.
//!
//! - `constant` is an alias of `const` (Aidbox's validator treats it so and its tutorial relies
//!   on it; a plain draft-07 validator would ignore it and let every issuer in). It is rewritten
//!   only where a schema is expected, so a property named `constant` stays a property. A schema
//!   with both `const` and `constant` is rejected: which one wins would be a guess.
//! - the instance is the request context with empty values removed (see
//!   [`super::EvalContext::stripped`]).
//! - `pattern` and `patternProperties` use the linear-time regex crate with the same size
//!   limits as matcho, not a backtracking engine.

use serde_json::{Map, Value};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{PatternOptions, Validator};

use super::budget::{Refusal, RegexBudget, REGEX_SIZE_LIMIT};
use super::cost::Cost;

mod cost;
use super::{is_empty_value, join_field, redact_telling, EvalContext, Mismatch, PolicyError};

/// Keywords that describe but never constrain.
const ANNOTATIONS: [&str; 11] = [
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "definitions",
    "$defs",
    "readOnly",
    "writeOnly",
];

/// `true`, `{}`, or a schema of annotations only (unknown keywords are refused at compile).
fn accepts_everything(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(map) => map.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

/// Keywords whose value is one schema.
const SCHEMA_KEYWORDS: [&str; 9] = [
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "not",
];
/// Keywords whose value is a list of schemas (`items` may also be one: handled by shape).
const LIST_KEYWORDS: [&str; 4] = ["allOf", "anyOf", "oneOf", "items"];
/// Keywords whose value maps names to schemas (`dependencies` may also map to name lists).
const MAP_KEYWORDS: [&str; 5] = [
    "properties",
    "patternProperties",
    "definitions",
    "$defs",
    "dependencies",
];

/// Every `pattern` and `patternProperties` name, paid for from `budget` before the validator
/// compiles its own copy (which costs what ours does). Only a budget refusal is reported
/// here; the validator words a bad pattern itself.
fn pay_for_patterns(
    schema: &Value,
    path: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) {
    fn pay(source: &str, at: String, budget: &mut RegexBudget, errors: &mut Vec<PolicyError>) {
        if let Err(Refusal::OverBudget(message)) = budget.regex(source) {
            errors.push(PolicyError::new(at, message));
        }
    }
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                let here = join_field(path, k);
                match (k.as_str(), v) {
                    ("pattern", Value::String(source)) => pay(source, here.clone(), budget, errors),
                    ("patternProperties", Value::Object(patterns)) => {
                        for name in patterns.keys() {
                            pay(name, join_field(&here, name), budget, errors);
                        }
                    }
                    _ => {}
                }
                pay_for_patterns(v, &here, budget, errors);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pay_for_patterns(item, &format!("{path}[{i}]"), budget, errors);
            }
        }
        _ => {}
    }
}

pub(crate) struct JsonSchema {
    validator: Validator,
    /// Where its nodes apply, every `$ref` inlined ([`cost::check`]).
    cost: Cost,
    /// `true`, or an object of annotations only: it validates every instance.
    accepts_everything: bool,
    /// The rewritten schema, serialized: only explanations read it (to show the failing
    /// keyword's value), and a tree of maps costs kilobytes per policy.
    schema: Box<str>,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl JsonSchema {
    pub(crate) fn cost(&self) -> &Cost {
        &self.cost
    }

    pub(crate) fn compile(
        schema: &Value,
        path: &str,
        budget: &mut RegexBudget,
        errors: &mut Vec<PolicyError>,
    ) -> Option<Self> {
        if !schema.is_object() && !schema.is_boolean() {
            errors.push(PolicyError::new(path, "must be a JSON Schema object"));
            return None;
        }
        let before = errors.len();
        let mut schema = schema.clone();
        rewrite_constant(&mut schema, path, errors);
        if errors.len() > before {
            return None;
        }
        let cost = match cost::check(&schema) {
            Ok(cost) => cost,
            Err(message) => {
                errors.push(PolicyError::new(path, message));
                return None;
            }
        };
        pay_for_patterns(&schema, path, budget, errors);
        if errors.len() > before {
            return None;
        }
        let built = jsonschema::draft7::options()
            .with_pattern_options(
                PatternOptions::regex()
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT),
            )
            .build(&schema);
        match built {
            Ok(validator) => Some(Self {
                validator,
                cost,
                accepts_everything: accepts_everything(&schema),
                schema: schema.to_string().into(),
            }),
            Err(e) => {
                let inner = dotted(e.instance_path().as_str());
                let at = if inner.is_empty() {
                    path.to_owned()
                } else {
                    join_field(path, &inner)
                };
                errors.push(PolicyError::new(at, format!("invalid schema: {e}")));
                None
            }
        }
    }

    pub(crate) fn is_valid(&self, stripped: &Value) -> bool {
        self.validator.is_valid(stripped)
    }

    pub(crate) fn accepts_everything(&self) -> bool {
        self.accepts_everything
    }

    pub(crate) fn explain(&self, ctx: &EvalContext, errors: &mut Vec<Mismatch>) -> bool {
        let stripped = ctx.stripped();
        let valid = self.is_valid(stripped);
        if valid {
            return true;
        }
        for e in self.validator.iter_errors(stripped) {
            let at = dotted(e.instance_path().as_str());
            let (path, but, redacted) = match e.kind() {
                // The missing property is the interesting path, and its value is absent.
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    (join_field(&at, &name), Value::Null, false)
                }
                _ => {
                    let (but, redacted) = redact_telling(&at, e.instance().clone().into_owned());
                    (at, but, redacted)
                }
            };
            let expected = self.failed_keyword(e.schema_path().as_str());
            let note = if but.is_null() && is_empty_at(ctx.value(), &path) {
                Some("present but empty: empty values are removed before validation".to_owned())
            } else if redacted {
                // The message quotes the instance, which holds a secret.
                None
            } else {
                Some(e.to_string())
            };
            errors.push(Mismatch {
                path,
                expected,
                but,
                note,
            });
        }
        false
    }

    /// `{keyword: value}` for the schema location an error points at.
    fn failed_keyword(&self, schema_path: &str) -> Value {
        let segs: Vec<String> = pointer_segments(schema_path).collect();
        let Some(keyword) = segs.last() else {
            return Value::Null;
        };
        let schema: Value = serde_json::from_str(&self.schema).unwrap_or(Value::Null);
        let value = lookup_schema(&schema, &segs)
            .cloned()
            .unwrap_or(Value::Null);
        let mut m = Map::new();
        m.insert(keyword.clone(), value);
        Value::Object(m)
    }
}

/// Walks a schema by JSON-pointer segments, following local `$ref`s that the validator's
/// schema path passes through.
fn lookup_schema<'s>(root: &'s Value, segs: &[String]) -> Option<&'s Value> {
    let mut cur = root;
    for seg in segs {
        cur = match cur {
            Value::Object(o) if seg == "$ref" => {
                let target = o.get("$ref")?.as_str()?.strip_prefix('#')?;
                root.pointer(target)?
            }
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn pointer_segments(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
}

/// A JSON pointer as a dotted context path: `/jwt/iss` becomes `jwt.iss`.
fn dotted(pointer: &str) -> String {
    pointer_segments(pointer).collect::<Vec<_>>().join(".")
}

/// Whether the original context holds an empty value at a dotted path.
fn is_empty_at(ctx: &Value, path: &str) -> bool {
    let mut cur = ctx;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(o) => match o.get(seg) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    is_empty_value(cur)
}

/// Every draft-07 keyword (validation and annotation), plus `$defs`.
const DRAFT7_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$comment",
    "$defs",
    "title",
    "description",
    "default",
    "readOnly",
    "writeOnly",
    "examples",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "additionalItems",
    "items",
    "maxItems",
    "minItems",
    "uniqueItems",
    "contains",
    "maxProperties",
    "minProperties",
    "required",
    "additionalProperties",
    "definitions",
    "properties",
    "patternProperties",
    "dependencies",
    "propertyNames",
    "const",
    "enum",
    "type",
    "format",
    "contentMediaType",
    "contentEncoding",
    "if",
    "then",
    "else",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
];

/// Renames `constant` to `const` in every schema position, recursively, and refuses
/// keywords that draft-07 does not define.
fn rewrite_constant(schema: &mut Value, path: &str, errors: &mut Vec<PolicyError>) {
    let Value::Object(obj) = schema else {
        return;
    };
    if let Some(v) = obj.shift_remove("constant") {
        if obj.contains_key("const") {
            errors.push(PolicyError::new(
                join_field(path, "constant"),
                "both \"const\" and its alias \"constant\" given; keep one",
            ));
        }
        obj.insert("const".to_owned(), v);
    }
    for (key, value) in obj.iter_mut() {
        let here = join_field(path, key);
        let k = key.as_str();
        // A validator ignores keywords it does not know, so a typo such as `requried`
        // would silently let every request through.
        if !DRAFT7_KEYWORDS.contains(&k) && !k.starts_with("x-") {
            errors.push(PolicyError::new(
                here.clone(),
                format!("unknown JSON Schema keyword {k:?} (draft-07; extensions start with x-)"),
            ));
            continue;
        }
        if LIST_KEYWORDS.contains(&k) {
            if let Value::Array(items) = value {
                for (i, item) in items.iter_mut().enumerate() {
                    rewrite_constant(item, &format!("{here}[{i}]"), errors);
                }
                continue;
            }
        }
        if SCHEMA_KEYWORDS.contains(&k) {
            rewrite_constant(value, &here, errors);
        } else if MAP_KEYWORDS.contains(&k) {
            if let Value::Object(entries) = value {
                for (name, sub) in entries.iter_mut() {
                    // Array values under `dependencies` are property lists, left alone.
                    rewrite_constant(sub, &join_field(&here, name), errors);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) fn rewritten(schema: &Value) -> Value {
    let mut s = schema.clone();
    rewrite_constant(&mut s, "schema", &mut Vec::new());
    s
}
