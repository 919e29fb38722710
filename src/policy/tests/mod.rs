//! The policy engines against one request context, [`ctx`]: each engine's conformance
//! cases and tests in its own file, the checks that read every engine's cases here.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

mod compile_errors;
mod complex;
mod json_schema;
mod matcho;

fn ctx() -> Value {
    json!({
        "request-method": "get",
        "scheme": "https",
        "uri": "/fhir/Patient/pt-1",
        "query-string": "_count=1",
        "params": {"_count": "1"},
        "headers": {
            "authorization": "Bearer secret-token",
            "host": "api.example.com",
            "x-role": "admin",
            "x-tenant": "t1",
            "x-blank": "   ",
            "x-empty": ""
        },
        "remote-addr": "10.0.0.6",
        "context-extensions": {},
        "jwt": {
            "iss": "https://issuer.example",
            "sub": "u1",
            "exp": 1758805244,
            "aud": ["api", "web"],
            "tenant": "t1",
            "level": 2,
            "level_float": 2.0,
            "email_verified": true,
            "nothing": null,
            "roles": ["reader", "writer"],
            "empty_list": [],
            "list_with_empty": ["a", "", null, {}],
            "constant": "yes"
        },
        "user": {
            "id": "u1",
            "data": {
                "tenant": "t1",
                "groups": [{"name": "a"}, {"name": "b"}],
                "prefs": {"x": null, "y": "", "z": {"w": []}}
            },
            "identifier": [{"system": "keycloak", "value": "u1"}]
        },
        "client": {"id": "my-client"}
    })
}

fn m(pattern: Value) -> Value {
    json!({"engine": "matcho", "matcho": pattern})
}

fn s(schema: Value) -> Value {
    json!({"engine": "json-schema", "schema": schema})
}

fn compiled(body: &Value) -> Policy {
    compile(body).unwrap_or_else(|e| panic!("{body} should compile: {e:?}"))
}

fn errors_of(body: Value) -> Vec<PolicyError> {
    match compile(&body) {
        Ok(_) => panic!("{body} should not compile"),
        Err(e) => e,
    }
}

/// (name, body, expected decision) against [`ctx`], every engine's cases.
fn table() -> Vec<(&'static str, Value, bool)> {
    let mut cases = matcho::cases();
    cases.extend(json_schema::cases());
    cases.extend(complex::cases());
    cases
}

#[test]
fn conformance_table() {
    let c = ctx();
    let cases = table();
    assert!(cases.len() >= 45, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, body, want) in &cases {
        let policy = compiled(body);
        let got = policy.evaluate(&EvalContext::new(&c));
        if got != *want {
            failures.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn evaluate_and_explain_agree_on_every_case() {
    let c = ctx();
    for (name, body, want) in table() {
        let policy = compiled(&body);
        let e = policy.explain(&EvalContext::new(&c));
        assert_eq!(e.allowed, want, "{name}: explain disagrees with the table");
        assert_eq!(
            e.allowed,
            policy.evaluate(&EvalContext::new(&c)),
            "{name}: explain disagrees with evaluate"
        );
        if e.allowed {
            assert!(
                e.errors.is_empty(),
                "{name}: allowed with errors {:?}",
                e.errors
            );
        } else if e.engine != "complex" {
            assert!(!e.errors.is_empty(), "{name}: denied without a reason");
        }
    }
}

#[test]
fn explain_redacts_secret_headers() {
    let c = ctx();
    let e = compiled(&m(json!({"headers": {"authorization": "#^Basic "}})))
        .explain(&EvalContext::new(&c));
    assert_eq!(e.errors[0].path, "headers.authorization");
    assert_eq!(e.errors[0].but, json!("[redacted]"));
    let e = compiled(&m(json!({"headers": ["x"]}))).explain(&EvalContext::new(&c));
    assert_eq!(e.errors[0].but["authorization"], json!("[redacted]"));
    assert_eq!(e.errors[0].but["host"], json!("api.example.com"));
    let e = compiled(&s(json!({"type": "string"}))).explain(&EvalContext::new(&c));
    assert_eq!(e.errors[0].path, "");
    assert_eq!(
        e.errors[0].but["headers"]["authorization"],
        json!("[redacted]")
    );
    let text = serde_json::to_string(&e).unwrap();
    assert!(!text.contains("secret-token"), "{text}");
}
#[test]
fn catastrophic_regex_is_rejected_or_linear() {
    let e = errors_of(m(json!({"uri": "#(a{1000}){1000}"})));
    assert_eq!(e[0].path, "matcho.uri");
    assert!(e[0].message.contains("size limit"), "{}", e[0].message);

    // Exponential for a backtracking engine; linear here.
    let input = format!("{}!", "a".repeat(50_000));
    let c = json!({"uri": input});
    let p = compiled(&m(json!({"uri": "#^(a|aa|a*)*$"})));
    let start = Instant::now();
    assert!(!p.evaluate(&EvalContext::new(&c)));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let p = compiled(&s(json!({"properties": {"uri": {"pattern": "^(a+)+$"}}})));
    let start = Instant::now();
    assert!(!p.evaluate(&EvalContext::new(&c)));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn numbers_compare_by_value() {
    assert!(json_eq(&json!(1), &json!(1.0)));
    assert!(json_eq(&json!(-3), &json!(-3.0)));
    assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
    assert!(!json_eq(&json!(-1), &json!(u64::MAX)));
    assert!(!json_eq(
        &json!(9007199254740993_i64),
        &json!(9007199254740992.0)
    ));
    assert!(!json_eq(&json!(1), &json!(1.5)));
    assert!(json_eq(
        &json!({"a": [1, {"b": 2.0}]}),
        &json!({"a": [1.0, {"b": 2}]})
    ));
    assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
}

#[test]
fn explanation_serializes() {
    let c = ctx();
    let e = compiled(&m(json!({"jwt": {"sub": "u2"}}))).explain(&EvalContext::new(&c));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({"allowed": false, "engine": "matcho", "errors": [{"path": "jwt.sub", "expected": "u2", "but": "u1"}], "children": []})
    );
}

#[test]
fn policy_and_context_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Policy>();
    check::<EvalContext<'static>>();
    check::<PolicyError>();
    check::<Explanation>();
}
