//! What compilation reports for a bad body: every mistake, each at its path.

use serde_json::json;

use super::*;

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
