//! The `matcho` engine: its conformance cases and what its explanations say.

use serde_json::{json, Value};

use super::*;

/// (name, body, expected decision) against [`ctx`].
pub(super) fn cases() -> Vec<(&'static str, Value, bool)> {
    let iss = "https://issuer.example";
    vec![
        // scalars
        ("string equal", m(json!({"request-method": "get"})), true),
        (
            "string unequal",
            m(json!({"request-method": "post"})),
            false,
        ),
        ("int equal", m(json!({"jwt": {"level": 2}})), true),
        (
            "int pattern 2.0 equals 2",
            m(json!({"jwt": {"level": 2.0}})),
            true,
        ),
        (
            "float value 2.0 equals pattern 2",
            m(json!({"jwt": {"level_float": 2}})),
            true,
        ),
        ("int unequal", m(json!({"jwt": {"level": 3}})), false),
        (
            "number is not its string",
            m(json!({"jwt": {"level": "2"}})),
            false,
        ),
        (
            "bool equal",
            m(json!({"jwt": {"email_verified": true}})),
            true,
        ),
        (
            "bool unequal",
            m(json!({"jwt": {"email_verified": false}})),
            false,
        ),
        (
            "null pattern matches absent",
            m(json!({"jwt": {"nonce": null}})),
            true,
        ),
        (
            "null pattern matches null",
            m(json!({"jwt": {"nothing": null}})),
            true,
        ),
        (
            "null pattern rejects a value",
            m(json!({"jwt": {"sub": null}})),
            false,
        ),
        // maps
        (
            "map nested, extra keys fine",
            m(json!({"user": {"data": {"tenant": "t1"}}})),
            true,
        ),
        ("map against a string", m(json!({"uri": {"a": 1}})), false),
        (
            "map against an absent key",
            m(json!({"token": {"active": true}})),
            false,
        ),
        (
            "empty map matches an object",
            m(json!({"context-extensions": {}})),
            true,
        ),
        ("empty map rejects a string", m(json!({"uri": {}})), false),
        (
            "one key of several fails",
            m(json!({"request-method": "get", "uri": "#Observation"})),
            false,
        ),
        // arrays
        (
            "array prefix of one",
            m(json!({"jwt": {"aud": ["api"]}})),
            true,
        ),
        (
            "array full",
            m(json!({"jwt": {"aud": ["api", "web"]}})),
            true,
        ),
        (
            "array not a prefix",
            m(json!({"jwt": {"aud": ["web"]}})),
            false,
        ),
        (
            "array longer than value",
            m(json!({"jwt": {"aud": ["api", "web", "x"]}})),
            false,
        ),
        (
            "empty array matches any array",
            m(json!({"jwt": {"empty_list": []}})),
            true,
        ),
        ("array against a string", m(json!({"uri": ["x"]})), false),
        (
            "array of maps",
            m(json!({"user": {"identifier": [{"system": "keycloak"}]}})),
            true,
        ),
        // regex
        ("regex is a search", m(json!({"uri": "#Patient"})), true),
        (
            "regex anchored start fails",
            m(json!({"uri": "#^Patient"})),
            false,
        ),
        (
            "regex anchored full",
            m(json!({"uri": "#^/fhir/Patient/[^/]+$"})),
            true,
        ),
        (
            "regex anchored end fails",
            m(json!({"uri": "#^/fhir/Patient$"})),
            false,
        ),
        (
            "regex never matches a number",
            m(json!({"jwt": {"level": "#2"}})),
            false,
        ),
        (
            "regex on absent",
            m(json!({"jwt": {"missing": "#.*"}})),
            false,
        ),
        // predicates
        (
            "present? on value",
            m(json!({"jwt": {"sub": "present?"}})),
            true,
        ),
        (
            "present? on absent",
            m(json!({"jwt": {"missing": "present?"}})),
            false,
        ),
        (
            "present? on null",
            m(json!({"jwt": {"nothing": "present?"}})),
            false,
        ),
        (
            "nil? on absent",
            m(json!({"jwt": {"missing": "nil?"}})),
            true,
        ),
        ("nil? on null", m(json!({"jwt": {"nothing": "nil?"}})), true),
        ("nil? on value", m(json!({"jwt": {"sub": "nil?"}})), false),
        (
            "not-blank? on text",
            m(json!({"headers": {"x-role": "not-blank?"}})),
            true,
        ),
        (
            "not-blank? whitespace only is blank",
            m(json!({"headers": {"x-blank": "not-blank?"}})),
            false,
        ),
        (
            "not-blank? on empty",
            m(json!({"headers": {"x-empty": "not-blank?"}})),
            false,
        ),
        (
            "not-blank? on absent",
            m(json!({"headers": {"x-none": "not-blank?"}})),
            false,
        ),
        (
            "not-blank? on a number",
            m(json!({"jwt": {"level": "not-blank?"}})),
            false,
        ),
        // references
        (
            "ref equal",
            m(json!({"headers": {"x-tenant": ".jwt.tenant"}})),
            true,
        ),
        (
            "ref unequal",
            m(json!({"headers": {"x-role": ".jwt.tenant"}})),
            false,
        ),
        (
            "ref indexes arrays",
            m(json!({"user": {"id": ".user.identifier.0.value"}})),
            true,
        ),
        (
            "ref index out of range",
            m(json!({"user": {"id": ".user.identifier.5.value"}})),
            false,
        ),
        (
            "ref compares numbers by value",
            m(json!({"jwt": {"level": ".jwt.level_float"}})),
            true,
        ),
        (
            "pitfall: ref missing both sides null = null",
            m(json!({"headers": {"x-missing": ".jwt.missing"}})),
            true,
        ),
        (
            "ref missing on one side",
            m(json!({"headers": {"x-missing": ".jwt.tenant"}})),
            false,
        ),
        (
            "ref missing on the other side",
            m(json!({"headers": {"x-tenant": ".jwt.missing"}})),
            false,
        ),
        // $enum
        (
            "$enum hit",
            m(json!({"request-method": {"$enum": ["get", "head"]}})),
            true,
        ),
        (
            "$enum miss",
            m(json!({"request-method": {"$enum": ["post", "put"]}})),
            false,
        ),
        (
            "$enum numbers by value",
            m(json!({"jwt": {"level": {"$enum": [1.0, 2.0]}}})),
            true,
        ),
        (
            "$enum is literal, no regex",
            m(json!({"uri": {"$enum": ["#Patient"]}})),
            false,
        ),
        // $one-of
        (
            "$one-of hit",
            m(json!({"uri": {"$one-of": ["#^/fhir/Observation", "#^/fhir/Patient"]}})),
            true,
        ),
        (
            "$one-of miss",
            m(json!({"uri": {"$one-of": ["#^/fhir/Observation", "#^/admin"]}})),
            false,
        ),
        (
            "$one-of of maps",
            m(json!({"$one-of": [{"client": {"id": "other"}}, {"jwt": {"sub": "u1"}}]})),
            true,
        ),
        // $contains
        (
            "$contains hit",
            m(json!({"jwt": {"roles": {"$contains": "writer"}}})),
            true,
        ),
        (
            "$contains miss",
            m(json!({"jwt": {"roles": {"$contains": "admin"}}})),
            false,
        ),
        (
            "$contains on a string",
            m(json!({"uri": {"$contains": "P"}})),
            false,
        ),
        (
            "$contains a map",
            m(json!({"user": {"data": {"groups": {"$contains": {"name": "b"}}}}})),
            true,
        ),
        (
            "$contains a regex",
            m(json!({"jwt": {"aud": {"$contains": "#^w"}}})),
            true,
        ),
        // $every
        (
            "$every hit",
            m(json!({"jwt": {"roles": {"$every": "#er$"}}})),
            true,
        ),
        (
            "$every miss",
            m(json!({"jwt": {"roles": {"$every": "reader"}}})),
            false,
        ),
        (
            "$every on absent fails",
            m(json!({"jwt": {"missing": {"$every": "x"}}})),
            false,
        ),
        (
            "$every on empty array passes",
            m(json!({"jwt": {"empty_list": {"$every": "x"}}})),
            true,
        ),
        // $not
        (
            "$not hit",
            m(json!({"request-method": {"$not": "post"}})),
            true,
        ),
        (
            "$not miss",
            m(json!({"request-method": {"$not": "get"}})),
            false,
        ),
        (
            "pitfall: $not on an absent field passes",
            m(json!({"jwt": {"act": {"$not": "admin"}}})),
            true,
        ),
        (
            "$not nil?",
            m(json!({"jwt": {"sub": {"$not": "nil?"}}})),
            true,
        ),
        // nesting
        (
            "$not $contains",
            m(json!({"jwt": {"roles": {"$not": {"$contains": "admin"}}}})),
            true,
        ),
        (
            "$every map $enum",
            m(json!({"user": {"identifier": {"$every": {"system": {"$enum": ["keycloak"]}}}}})),
            true,
        ),
        (
            "$one-of of $enum and regex",
            m(json!({"headers": {"x-role": {"$one-of": [{"$enum": ["ops"]}, "#^adm"]}}})),
            true,
        ),
        (
            "operator beside keys, both hold",
            m(json!({"jwt": {"iss": iss, "$not": {"sub": "u2"}}})),
            true,
        ),
        (
            "operator beside keys, operator fails",
            m(json!({"jwt": {"iss": iss, "$not": {"sub": "u1"}}})),
            false,
        ),
        (
            "$contains with a ref",
            m(json!({"user": {"identifier": {"$contains": {"value": ".jwt.sub"}}}})),
            true,
        ),
    ]
}

#[test]
fn explain_matcho_names_context_path_expected_and_but() {
    let c = ctx();
    let p = compiled(&m(
        json!({"jwt": {"iss": "https://other"}, "headers": {"x-role": "ops"}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    assert!(!e.allowed);
    assert_eq!(e.engine, "matcho");
    assert_eq!(
        e.errors.len(),
        2,
        "every failing key is reported: {:?}",
        e.errors
    );
    assert_eq!(e.errors[0].path, "jwt.iss");
    assert_eq!(e.errors[0].expected, json!("https://other"));
    assert_eq!(e.errors[0].but, json!("https://issuer.example"));
    assert_eq!(e.errors[1].path, "headers.x-role");
    assert_eq!(e.errors[1].but, json!("admin"));
}

#[test]
fn explain_shows_absent_as_null_and_array_paths() {
    let c = ctx();
    let p = compiled(&m(
        json!({"token": {"active": true}, "user": {"identifier": [{"system": "other"}]}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    assert_eq!(e.errors[0].path, "token");
    assert_eq!(e.errors[0].but, Value::Null);
    assert_eq!(e.errors[0].expected, json!({"active": true}));
    assert_eq!(e.errors[1].path, "user.identifier.0.system");
    assert_eq!(e.errors[1].but, json!("keycloak"));
}

#[test]
fn explain_notes_the_pitfalls_on_allowed_requests() {
    let c = ctx();
    let p = compiled(&m(
        json!({"headers": {"x-missing": ".jwt.missing"}, "jwt": {"act": {"$not": "admin"}}}),
    ));
    let e = p.explain(&EvalContext::new(&c));
    assert!(e.allowed && e.errors.is_empty());
    assert_eq!(e.notes.len(), 2);
    assert_eq!(e.notes[0].path, "headers.x-missing");
    assert!(e.notes[0]
        .note
        .as_deref()
        .unwrap()
        .contains("both sides absent: null = null"));
    assert_eq!(e.notes[1].path, "jwt.act");
    assert!(e.notes[1].note.as_deref().unwrap().contains("$not passes"));
    let json = serde_json::to_value(&e).unwrap();
    assert!(json["notes"][0]["note"].is_string());
}

#[test]
fn explain_ref_mismatch_shows_referenced_value() {
    let c = ctx();
    let e =
        compiled(&m(json!({"headers": {"x-role": ".jwt.tenant"}}))).explain(&EvalContext::new(&c));
    let mm = &e.errors[0];
    assert_eq!(
        (mm.path.as_str(), &mm.expected, &mm.but),
        ("headers.x-role", &json!("t1"), &json!("admin"))
    );
    assert!(mm.note.as_deref().unwrap().contains(".jwt.tenant"));
}
