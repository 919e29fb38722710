//! The `json-schema` engine: its conformance cases, its explanations, and the
//! empty-stripped context it validates.

use serde_json::{json, Value};

use super::*;

/// (name, body, expected decision) against [`ctx`].
pub(super) fn cases() -> Vec<(&'static str, Value, bool)> {
    let iss = "https://issuer.example";
    vec![
        (
            "schema const hit",
            s(
                json!({"type": "object", "required": ["jwt"], "properties": {"jwt": {"required": ["iss"], "properties": {"iss": {"const": iss}}}}}),
            ),
            true,
        ),
        (
            "schema const miss",
            s(json!({"properties": {"jwt": {"properties": {"iss": {"const": "https://evil"}}}}})),
            false,
        ),
        (
            "schema constant alias hit",
            s(json!({"properties": {"jwt": {"properties": {"iss": {"constant": iss}}}}})),
            true,
        ),
        (
            "schema constant alias miss",
            s(
                json!({"properties": {"jwt": {"properties": {"iss": {"constant": "https://evil"}}}}}),
            ),
            false,
        ),
        (
            "schema property named constant left alone, hit",
            s(
                json!({"properties": {"jwt": {"required": ["constant"], "properties": {"constant": {"const": "yes"}}}}}),
            ),
            true,
        ),
        (
            "schema property named constant left alone, miss",
            s(json!({"properties": {"jwt": {"properties": {"constant": {"const": "no"}}}}})),
            false,
        ),
        (
            "schema constant under contains",
            s(
                json!({"properties": {"jwt": {"properties": {"roles": {"contains": {"constant": "admin"}}}}}}),
            ),
            false,
        ),
        (
            "schema constant under anyOf",
            s(
                json!({"anyOf": [{"properties": {"client": {"properties": {"id": {"constant": "my-client"}}}}}]}),
            ),
            true,
        ),
        (
            "schema constant in definitions via $ref",
            s(
                json!({"definitions": {"iss": {"constant": "https://evil"}}, "properties": {"jwt": {"properties": {"iss": {"$ref": "#/definitions/iss"}}}}}),
            ),
            false,
        ),
        (
            "schema pattern",
            s(json!({"properties": {"uri": {"pattern": "^/fhir/"}}})),
            true,
        ),
        (
            "schema type miss",
            s(json!({"properties": {"jwt": {"properties": {"level": {"type": "string"}}}}})),
            false,
        ),
        (
            "strip: empty string removed",
            s(json!({"properties": {"headers": {"not": {"required": ["x-empty"]}}}})),
            true,
        ),
        (
            "strip: required empty string fails",
            s(json!({"properties": {"headers": {"required": ["x-empty"]}}})),
            false,
        ),
        (
            "strip: empty object removed",
            s(json!({"not": {"required": ["context-extensions"]}})),
            true,
        ),
        (
            "strip: null removed",
            s(json!({"properties": {"jwt": {"not": {"required": ["nothing"]}}}})),
            true,
        ),
        (
            "strip: container emptied by stripping removed",
            s(
                json!({"properties": {"user": {"properties": {"data": {"not": {"required": ["prefs"]}}}}}}),
            ),
            true,
        ),
        (
            "strip: empty array elements removed",
            s(json!({"properties": {"jwt": {"properties": {"list_with_empty": {"maxItems": 1}}}}})),
            true,
        ),
        (
            "strip: whitespace kept",
            s(json!({"properties": {"headers": {"required": ["x-blank"]}}})),
            true,
        ),
    ]
}

#[test]
fn explain_json_schema_gives_instance_path_keyword_and_value() {
    let c = ctx();
    let p = compiled(&s(
        json!({"properties": {"jwt": {"properties": {"iss": {"constant": "https://evil"}}}}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    assert!(!e.allowed);
    assert_eq!(e.engine, "json-schema");
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].path, "jwt.iss");
    assert_eq!(e.errors[0].expected, json!({"const": "https://evil"}));
    assert_eq!(e.errors[0].but, json!("https://issuer.example"));
}

#[test]
fn explain_json_schema_required_and_stripped_empty() {
    let c = ctx();
    let p = compiled(&s(
        json!({"properties": {"headers": {"required": ["x-empty", "x-gone"]}}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    let paths: Vec<&str> = e.errors.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["headers.x-empty", "headers.x-gone"]);
    assert_eq!(
        e.errors[0].expected,
        json!({"required": ["x-empty", "x-gone"]})
    );
    assert_eq!(e.errors[0].but, Value::Null);
    assert!(e.errors[0]
        .note
        .as_deref()
        .unwrap()
        .contains("empty values are removed"));
    assert!(e.errors[1].note.as_deref().unwrap().contains("required"));
}

#[test]
fn explain_json_schema_follows_ref_for_expected() {
    let c = ctx();
    let p = compiled(&s(
        json!({"definitions": {"iss": {"constant": "https://evil"}}, "properties": {"jwt": {"properties": {"iss": {"$ref": "#/definitions/iss"}}}}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    assert_eq!(e.errors[0].path, "jwt.iss");
    assert_eq!(e.errors[0].expected, json!({"const": "https://evil"}));
}
#[test]
fn stripped_context_is_lazy_and_shared() {
    let c = ctx();
    let ec = EvalContext::new(&c);
    let or = compiled(
        &json!({"engine": "complex", "or": [{"engine": "allow"}, s(json!({"required": ["jwt"]}))]}),
    );
    assert!(or.evaluate(&ec));
    assert!(!ec.is_stripped(), "short-circuit: the schema never ran");
    let matcho = compiled(&m(json!({"jwt": {"sub": "u1"}})));
    assert!(matcho.evaluate(&ec));
    assert!(!ec.is_stripped(), "matcho sees the raw context");
    let schema = compiled(&s(json!({"required": ["jwt"]})));
    assert!(schema.evaluate(&ec));
    let first: *const Value = ec.stripped();
    assert!(compiled(&s(json!({"required": ["user"]}))).evaluate(&ec));
    assert!(
        std::ptr::eq(first, ec.stripped()),
        "computed once per context"
    );
    let st = ec.stripped();
    assert!(st.get("context-extensions").is_none());
    assert_eq!(st["jwt"]["list_with_empty"], json!(["a"]));
    assert!(st["user"]["data"].get("prefs").is_none());
    assert_eq!(st["headers"]["x-blank"], json!("   "));
    assert_eq!(
        c["headers"]["x-empty"],
        json!(""),
        "the original is untouched"
    );
}

#[test]
fn stripping_an_all_empty_context_keeps_an_object_root() {
    let c = json!({"a": null, "b": {"c": ""}});
    let ec = EvalContext::new(&c);
    assert_eq!(ec.stripped(), &json!({}));
    assert!(compiled(&s(json!({"type": "object"}))).evaluate(&ec));
}

#[test]
fn constant_is_rewritten_only_in_schema_positions() {
    let schema = json!({
        "properties": {"constant": {"constant": 1}},
        "required": ["constant"],
        "items": [{"constant": 2}],
        "dependencies": {"a": ["constant"], "b": {"constant": 3}},
        "enum": [{"constant": 4}],
        "const": {"constant": 5},
        "default": {"constant": 6}
    });
    let r = crate::policy::json_schema::rewritten(&schema);
    assert_eq!(r["properties"], json!({"constant": {"const": 1}}));
    assert_eq!(r["required"], json!(["constant"]));
    assert_eq!(r["items"], json!([{"const": 2}]));
    assert_eq!(
        r["dependencies"],
        json!({"a": ["constant"], "b": {"const": 3}})
    );
    assert_eq!(r["enum"], json!([{"constant": 4}]));
    assert_eq!(r["const"], json!({"constant": 5}));
    assert_eq!(r["default"], json!({"constant": 6}));
}
