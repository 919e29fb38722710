use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

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

/// (name, body, expected decision) against [`ctx`].
fn table() -> Vec<(&'static str, Value, bool)> {
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
        // json-schema
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
        // complex
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
    let r = json_schema::rewritten(&schema);
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

#[test]
fn compile_errors_carry_paths() {
    let e = errors_of(m(json!({"uri": {"$one-of": ["#a"], "x": 1}})));
    assert_eq!(e[0].path, "matcho.uri ($one-of)");
    assert_eq!(
        e[0].to_string(),
        format!("matcho.uri ($one-of): {}", e[0].message)
    );

    let e = errors_of(m(json!({"x": {"$foo": 1}})));
    assert_eq!(e[0].path, "matcho.x.$foo");
    assert!(e[0].message.contains("$enum"));

    let e = errors_of(m(json!({"headers": {"x-role": "#(unclosed"}})));
    assert_eq!(e[0].path, "matcho.headers.x-role");

    let e = errors_of(m(
        json!({"a": {"$enum": "x"}, "b": ["#(", "..c"], "c": {"$one-of": []}}),
    ));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "matcho.a.$enum",
            "matcho.b[0]",
            "matcho.b[1]",
            "matcho.c.$one-of"
        ],
        "all errors at once"
    );
}

#[test]
fn compile_errors_for_engines_and_body_keys() {
    let e = errors_of(json!({"engine": "sql", "sql": {"query": "select true"}}));
    assert_eq!(e[0].path, "engine");
    for name in ENGINES {
        assert!(e[0].message.contains(name), "{}", e[0].message);
    }
    assert!(e[0].message.contains("sql"));
    assert_eq!(errors_of(json!({"matcho": {}}))[0].path, "engine");
    assert_eq!(errors_of(json!({"engine": 1}))[0].path, "engine");
    assert_eq!(errors_of(json!([]))[0].path, "(body)");

    let e = errors_of(json!({"engine": "matcho"}));
    assert_eq!(
        (e[0].path.as_str(), e[0].message.contains("matcho")),
        ("matcho", true)
    );
    assert_eq!(
        errors_of(json!({"engine": "json-schema"}))[0].path,
        "schema"
    );
    assert_eq!(
        errors_of(json!({"engine": "json-schema", "schema": "x"}))[0].path,
        "schema"
    );
    assert_eq!(errors_of(json!({"engine": "complex"}))[0].path, "and");
    // Other keys are ignored.
    compiled(
        &json!({"engine": "allow", "link": [{"reference": "User/u1"}], "description": "d", "id": "x", "resourceType": "AccessPolicy"}),
    );
}

#[test]
fn compile_errors_for_complex() {
    let both = errors_of(
        json!({"engine": "complex", "and": [{"engine": "allow"}], "or": [{"engine": "allow"}]}),
    );
    assert!(both[0].message.contains("both"));
    assert_eq!(
        errors_of(json!({"engine": "complex", "and": []}))[0].path,
        "and"
    );
    assert_eq!(
        errors_of(json!({"engine": "complex", "or": {}}))[0].path,
        "or"
    );
    let e = errors_of(
        json!({"engine": "complex", "and": [{"engine": "allow"}, m(json!({"x": {"$bad": 1}}))]}),
    );
    assert_eq!(e[0].path, "and[1].matcho.x.$bad");
    let e = errors_of(json!({"engine": "complex", "or": [
        {"engine": "complex", "and": [{"engine": "allow"}, {"engine": "json-schema"}]},
        {"engine": "nope"},
        "x"
    ]}));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["or[0].and[1].schema", "or[1].engine", "or[2]"]);
}

#[test]
fn compile_errors_for_json_schema() {
    let e = errors_of(s(json!({"properties": {"a": {"type": "strin"}}})));
    assert!(e[0].path.starts_with("schema"), "{}", e[0]);
    let e = errors_of(s(json!({"properties": {"a": {"const": 1, "constant": 1}}})));
    assert_eq!(e[0].path, "schema.properties.a.constant");
    let e = errors_of(s(
        json!({"properties": {"a": {"pattern": "(a{1000}){1000}"}}}),
    ));
    assert!(e[0].path.starts_with("schema"), "{}", e[0]);
    // A misspelt keyword would be ignored by a validator and allow everyone.
    let e = errors_of(s(
        json!({"requried": ["jwt"], "properties": {"jwt": {"propertes": {}}}}),
    ));
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["schema.requried", "schema.properties.jwt.propertes"],
        "{e:?}"
    );
    assert!(
        e[0].message.contains("unknown JSON Schema keyword"),
        "{}",
        e[0]
    );
    // Annotations and x- extensions are fine; a property named like a typo is data.
    assert!(crate::policy::compile(&s(json!({
        "title": "t", "x-owner": "team", "properties": {"requried": {"type": "string"}}
    })))
    .is_ok());
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
