//! The `allow` and `complex` engines: conformance cases and short-circuiting.

use serde_json::{json, Value};

use super::*;

/// (name, body, expected decision) against [`ctx`].
pub(super) fn cases() -> Vec<(&'static str, Value, bool)> {
    let iss = "https://issuer.example";
    vec![
        ("allow", json!({"engine": "allow"}), true),
        (
            "and all true",
            json!({"engine": "complex", "and": [{"engine": "allow"}, m(json!({"jwt": {"sub": "u1"}}))]}),
            true,
        ),
        (
            "and one false",
            json!({"engine": "complex", "and": [{"engine": "allow"}, m(json!({"jwt": {"sub": "u2"}}))]}),
            false,
        ),
        (
            "or one true",
            json!({"engine": "complex", "or": [m(json!({"jwt": {"sub": "u2"}})), m(json!({"jwt": {"sub": "u1"}}))]}),
            true,
        ),
        (
            "or all false",
            json!({"engine": "complex", "or": [m(json!({"jwt": {"sub": "u2"}})), s(json!({"required": ["token"]}))]}),
            false,
        ),
        (
            "nested and(or(false, schema true), matcho true)",
            json!({"engine": "complex", "and": [
                {"engine": "complex", "or": [m(json!({"client": {"id": "x"}})), s(json!({"properties": {"jwt": {"properties": {"iss": {"constant": iss}}}}}))]},
                m(json!({"request-method": "get"}))
            ]}),
            true,
        ),
        (
            "nested or(and(true, false), and(true, true))",
            json!({"engine": "complex", "or": [
                {"engine": "complex", "and": [{"engine": "allow"}, m(json!({"uri": "#Observation"}))]},
                {"engine": "complex", "and": [{"engine": "allow"}, m(json!({"uri": "#Patient"}))]}
            ]}),
            true,
        ),
    ]
}

#[test]
fn explain_complex_short_circuits_like_evaluate() {
    let c = ctx();
    let body = json!({"engine": "complex", "and": [
        {"engine": "allow"},
        m(json!({"jwt": {"sub": "u2"}})),
        {"engine": "allow"}
    ]});
    let e = compiled(&body).explain(&EvalContext::new(&c));
    assert!(!e.allowed);
    assert_eq!(e.engine, "complex");
    assert_eq!(e.children.len(), 2, "stops at the first false");
    assert_eq!(e.children[1].errors[0].path, "jwt.sub");
    let body =
        json!({"engine": "complex", "or": [m(json!({"jwt": {"sub": "u1"}})), {"engine": "allow"}]});
    assert_eq!(
        compiled(&body)
            .explain(&EvalContext::new(&c))
            .children
            .len(),
        1
    );
}
