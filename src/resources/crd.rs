//! The CustomResourceDefinitions, as `portcullis crds` prints them and `deploy/` and the
//! chart carry them: the schemas derived from the types, then made what the API server
//! wants (structural, no formats it does not know), with the columns every kind shares
//! and the CEL rules of [`checks`](super::checks).

use serde_json::{json, Map, Value};

use super::checks::{self, Rule};
use super::{AccessPolicy, IdentityProvider, Kind, TokenIntrospector, User};

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The formats the API server knows (`format` of a string); it warns of any other, and
/// of `int32`/`int64` too in some versions, so integers carry bounds instead.
const KUBERNETES_FORMATS: [&str; 25] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "date-time",
];

/// Every kind, for the `crds` command.
pub fn crds() -> Vec<Crd> {
    use kube::CustomResourceExt;
    [
        TokenIntrospector::crd(),
        AccessPolicy::crd(),
        IdentityProvider::crd(),
        User::crd(),
    ]
    .into_iter()
    .map(finish)
    .collect()
}

fn finish(crd: Crd) -> Crd {
    let kind = Kind::from_name(&crd.spec.names.kind).expect("one of the four kinds");
    let mut value = serde_json::to_value(&crd).expect("CRD serialises");
    for version in value["spec"]["versions"].as_array_mut().expect("versions") {
        let schema = &mut version["schema"]["openAPIV3Schema"];
        walk(schema, &mut |node| {
            structural(node);
            integers_without_format(node);
            known_formats_only(node);
            enums_bounded(node);
        });
        for rule in checks::RULES.iter().filter(|r| r.kind == kind) {
            attach(schema, rule);
        }
        let columns = version
            .as_object_mut()
            .expect("version")
            .entry("additionalPrinterColumns")
            .or_insert_with(|| json!([]));
        columns
            .as_array_mut()
            .expect("columns")
            .extend(common_columns());
    }
    serde_json::from_value(value).expect("CRD deserialises")
}

/// Calls `f` on every schema below and including `node`: properties, items, and the
/// schemas of `additionalProperties`, `allOf`, `anyOf`, `oneOf` and `not`.
fn walk(node: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Some(map) = node.as_object_mut() else {
        return;
    };
    f(map);
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(|p| walk(p, f));
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get_mut(key) {
            walk(child, f);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(|c| walk(c, f));
        }
    }
}

/// The API server rejects `additionalProperties: false` beside `properties` in a structural
/// schema; it prunes unknown fields instead. `deny_unknown_fields` stays for file input.
fn structural(node: &mut Map<String, Value>) {
    if node.get("additionalProperties") == Some(&Value::Bool(false)) {
        node.remove("additionalProperties");
    }
}

/// schemars writes `format: uint32` (and `int64`) for Rust integers; the API server knows
/// no such format. The bounds say it instead: `minimum: 0` for an unsigned integer unless
/// a tighter one is set.
fn integers_without_format(node: &mut Map<String, Value>) {
    if node.get("type") != Some(&json!("integer")) {
        return;
    }
    if let Some(Value::String(format)) = node.remove("format") {
        if format.starts_with("uint") && !node.contains_key("minimum") {
            node.insert("minimum".into(), json!(0));
        }
    }
}

/// Any other format the API server would warn of, and ignore.
fn known_formats_only(node: &mut Map<String, Value>) {
    if let Some(Value::String(format)) = node.get("format") {
        if !KUBERNETES_FORMATS.contains(&format.as_str()) {
            node.remove("format");
        }
    }
}

/// A string that must be one of a few values is no longer than the longest: the API
/// server's cost estimate of a rule that compares it stays small.
fn enums_bounded(node: &mut Map<String, Value>) {
    if node.get("type") != Some(&json!("string")) || node.contains_key("maxLength") {
        return;
    }
    let Some(Value::Array(values)) = node.get("enum") else {
        return;
    };
    let longest = values.iter().filter_map(Value::as_str).map(str::len).max();
    if let Some(longest) = longest {
        node.insert("maxLength".into(), json!(longest));
    }
}

/// The schema node a rule's `at` names, from the object's root schema.
fn node_at<'a>(root: &'a mut Value, at: &str) -> Option<&'a mut Value> {
    let mut node = root;
    for segment in at.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        node = node.get_mut("properties")?.get_mut(name)?;
        if items {
            node = node.get_mut("items")?;
        }
    }
    Some(node)
}

fn attach(schema: &mut Value, rule: &Rule) {
    let node = node_at(schema, rule.at)
        .unwrap_or_else(|| panic!("rule {}: no schema at {}", rule.id, rule.at));
    let mut entry = json!({"rule": rule.cel, "message": rule.message});
    if let Some(field) = rule.field {
        entry["fieldPath"] = json!(field);
    }
    let rules = node
        .as_object_mut()
        .expect("a rule stands on an object schema")
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    rules.as_array_mut().expect("a list of rules").push(entry);
}

/// The columns of every kind after its own: whether it serves, why not, and its age; the
/// message only with `-o wide`.
fn common_columns() -> [Value; 4] {
    let ready = r#".status.conditions[?(@.type=="Ready")]"#;
    [
        json!({"name": "Ready", "type": "string", "jsonPath": format!("{ready}.status"),
               "description": "Whether the object compiled into the configuration that serves."}),
        json!({"name": "Reason", "type": "string", "jsonPath": format!("{ready}.reason"),
               "description": "Accepted, Invalid, Conflict or SecretNotFound."}),
        json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
        json!({"name": "Message", "type": "string", "priority": 1,
               "jsonPath": format!("{ready}.message"),
               "description": "Why the object does not serve, naming the field."}),
    ]
}

#[cfg(test)]
mod tests;
