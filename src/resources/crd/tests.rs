//! The CRDs as an operator meets them: every field described, no format the API server
//! warns of, columns, short names and category, bounded lists and strings, and CEL rules
//! that refuse what `validate` and the webhook refuse, with the same message, and accept
//! what they accept.
//!
//! The CEL rules run here on the `cel` crate's interpreter, so a rule that does not parse,
//! does not hold on a shipped example, or lets through a mistake that `validate` refuses,
//! fails these tests. What is NOT verified here: admission by a real API server — its cost
//! estimator (the bounds below are what keeps it low), its CEL environment and Kubernetes'
//! CEL libraries (the rules use none), and `fieldPath` as it resolves it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::resources::checks::{self, Rule, RULES};
use crate::resources::for_each_document;
use crate::snapshot::Compiler;
use crate::source::cluster::judge::{review, Candidate};

/// Each CRD's kind and root schema.
fn schemas() -> Vec<(Kind, Value)> {
    crds()
        .into_iter()
        .map(|crd| {
            let kind = Kind::from_name(&crd.spec.names.kind).unwrap();
            let version = serde_json::to_value(&crd.spec.versions[0]).unwrap();
            (kind, version["schema"]["openAPIV3Schema"].clone())
        })
        .collect()
}

/// `(path, schema)` of every schema node below `node`, its own path first.
fn nodes(node: &Value, path: String, out: &mut Vec<(String, Value)>) {
    out.push((path.clone(), node.clone()));
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            nodes(p, format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        nodes(items, format!("{path}[]"), out);
    }
}

fn all_nodes() -> Vec<(Kind, String, Value)> {
    let mut out = Vec::new();
    for (kind, schema) in schemas() {
        let mut found = Vec::new();
        nodes(&schema, String::new(), &mut found);
        out.extend(found.into_iter().map(|(p, n)| (kind, p, n)));
    }
    out
}

#[test]
fn every_property_has_a_description() {
    let missing: Vec<String> = all_nodes()
        .into_iter()
        .filter(|(_, path, _)| !path.is_empty())
        .filter(|(_, _, node)| {
            node.get("description")
                .and_then(Value::as_str)
                .is_none_or(|d| d.trim().is_empty())
        })
        // The items of a list are described by the list's own description.
        .filter(|(_, path, _)| !path.ends_with("[]"))
        .map(|(kind, path, _)| format!("{kind}{path}"))
        .collect();
    assert!(missing.is_empty(), "without a description: {missing:#?}");
}

#[test]
fn no_format_the_api_server_does_not_know() {
    for (kind, path, node) in all_nodes() {
        if let Some(format) = node.get("format") {
            let format = format.as_str().unwrap();
            assert!(
                node["type"] == "string" && KUBERNETES_FORMATS.contains(&format),
                "{kind}{path}: format {format:?} on a {}",
                node["type"]
            );
        }
        // An unsigned integer says so by its bound.
        if node["type"] == "integer" && !path.contains("status") {
            assert!(node.get("minimum").is_some(), "{kind}{path}: no minimum");
        }
        assert_ne!(
            node.get("additionalProperties"),
            Some(&Value::Bool(false)),
            "{kind}{path}"
        );
    }
    let text = serde_json::to_string(&crds()).unwrap();
    for unknown in ["uint", "int32", "int64", "\"double\"", "\"float\""] {
        assert!(!text.contains(unknown), "{unknown}");
    }
}

/// Short names that a cluster running Istio already has: `ap` (AuthorizationPolicy) above
/// all, in the very clusters portcullis serves.
const TAKEN_SHORT_NAMES: [&str; 8] = ["ap", "vs", "dr", "gw", "se", "pa", "ra", "po"];

#[test]
fn columns_short_names_and_category() {
    let mut short = Vec::new();
    for crd in crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["portcullis".to_string()][..])
        );
        let own = names.short_names.clone().unwrap_or_default();
        assert_eq!(own.len(), 1, "{}: {own:?}", names.kind);
        assert!(!TAKEN_SHORT_NAMES.contains(&own[0].as_str()), "{own:?}");
        short.extend(own);
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        let shown: Vec<(&str, i32)> = columns
            .iter()
            .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
            .collect();
        let own_columns = match names.kind.as_str() {
            "TokenIntrospector" => vec![("Type", 0), ("Issuer", 0)],
            "AccessPolicy" => vec![("Engine", 0), ("Description", 1)],
            "IdentityProvider" => vec![("System", 0), ("Active", 1)],
            "User" => vec![("Inactive", 0), ("Systems", 1), ("Email", 1)],
            other => panic!("{other}"),
        };
        let mut expected = own_columns;
        expected.extend([("Ready", 0), ("Reason", 0), ("Age", 0), ("Message", 1)]);
        assert_eq!(shown, expected, "{}", names.kind);
        let age = columns.iter().find(|c| c.name == "Age").unwrap();
        assert_eq!(
            (age.type_.as_str(), age.json_path.as_str()),
            ("date", ".metadata.creationTimestamp")
        );
        let ready = columns.iter().find(|c| c.name == "Ready").unwrap();
        assert_eq!(
            ready.json_path,
            r#".status.conditions[?(@.type=="Ready")].status"#
        );
        for c in &columns {
            assert!(c.json_path.starts_with('.'), "{}", c.json_path);
        }
    }
    let before = short.len();
    short.sort();
    short.dedup();
    assert_eq!(short.len(), before, "short names collide: {short:?}");
}

/// `fieldPath` below `node`, as `.jwt.iss`.
fn field_exists(node: &Value, field: &str) -> bool {
    let mut node = node;
    for name in field.trim_start_matches('.').split('.') {
        match node.get("properties").and_then(|p| p.get(name)) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

#[test]
fn every_rule_compiles_and_stands_where_it_says() {
    let schemas = schemas();
    for rule in RULES {
        cel::Program::compile(rule.cel)
            .unwrap_or_else(|e| panic!("rule {}: {e}\n{}", rule.id, rule.cel));
        let (_, schema) = schemas.iter().find(|(k, _)| *k == rule.kind).unwrap();
        let mut schema = schema.clone();
        let node = node_at(&mut schema, rule.at).expect(rule.id);
        let listed = node["x-kubernetes-validations"]
            .as_array()
            .unwrap_or_else(|| panic!("rule {}: not in the CRD", rule.id));
        assert!(
            listed
                .iter()
                .any(|r| r["rule"] == rule.cel && r["message"] == rule.message),
            "rule {}",
            rule.id
        );
        if let Some(field) = rule.field {
            assert!(
                field_exists(node, field),
                "rule {}: no field {field}",
                rule.id
            );
        }
        assert!(!rule.message.is_empty() && !rule.cel.contains("oldSelf"));
    }
}

/// What the API server's cost estimate multiplies: each list on the way to a rule has
/// `maxItems`, and each string that a rule compares or matches has `maxLength`.
#[test]
fn lists_and_strings_that_rules_walk_are_bounded() {
    let compared =
        regex::Regex::new(r"self((?:\.[A-Za-z_]+)+)(?:\.matches\(|\s*==|\s*!=|\s+in\s)").unwrap();
    let item_compared = regex::Regex::new(r"\b[a-z]\.([A-Za-z_]+)\s*==").unwrap();
    let schemas = schemas();
    for rule in RULES {
        let (_, schema) = schemas.iter().find(|(k, _)| *k == rule.kind).unwrap();
        let mut schema = schema.clone();
        // Every list on the way.
        let mut prefix = Vec::new();
        for segment in rule.at.split('.') {
            prefix.push(segment);
            if segment.ends_with("[]") {
                let list = prefix.join(".");
                let list = node_at(&mut schema, list.trim_end_matches("[]")).unwrap();
                assert!(list.get("maxItems").is_some(), "rule {}: {list}", rule.id);
            }
        }
        let node = node_at(&mut schema, rule.at).unwrap().clone();
        if node["type"] == "array" {
            assert!(node.get("maxItems").is_some(), "rule {}", rule.id);
            for c in item_compared.captures_iter(rule.cel) {
                let item = &node["items"]["properties"][&c[1]];
                assert!(
                    item.get("maxLength").is_some(),
                    "rule {}: {}",
                    rule.id,
                    &c[1]
                );
            }
        }
        if rule.cel.contains("self.matches(") {
            assert!(node.get("maxLength").is_some(), "rule {}", rule.id);
        }
        for c in compared.captures_iter(rule.cel) {
            let mut field = &node;
            for name in c[1].trim_start_matches('.').split('.') {
                field = &field["properties"][name];
            }
            assert!(
                field.get("maxLength").is_some() || field["type"] == "boolean",
                "rule {}: self{} unbounded",
                rule.id,
                &c[1]
            );
        }
    }
}

#[test]
fn the_schema_states_the_bounds_the_code_checks() {
    let schemas = schemas();
    let at = |kind: Kind, path: &str, key: &str| -> f64 {
        let (_, schema) = schemas.iter().find(|(k, _)| *k == kind).unwrap();
        let mut schema = schema.clone();
        node_at(&mut schema, path).unwrap()[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{kind} {path}: no {key}"))
    };
    let ti = Kind::TokenIntrospector;
    let cases: [(Kind, &str, &str, f64); 11] = [
        (
            ti,
            "spec.cache_ttl",
            "minimum",
            checks::MIN_CACHE_TTL_SECONDS.into(),
        ),
        (
            ti,
            "spec.cache_ttl",
            "maximum",
            checks::MAX_CACHE_TTL_SECONDS.into(),
        ),
        (
            ti,
            "spec.jwt.leewaySeconds",
            "maximum",
            checks::MAX_LEEWAY_SECONDS.into(),
        ),
        (ti, "spec.jwt.keys", "maxItems", checks::MAX_JWT_KEYS as f64),
        (
            ti,
            "spec.jwt.allowedAudiences",
            "maxItems",
            checks::MAX_AUDIENCES as f64,
        ),
        (
            ti,
            "spec.claimToHeaders",
            "maxItems",
            checks::MAX_CLAIM_TO_HEADERS as f64,
        ),
        (
            ti,
            "spec.claimToHeaders[].header",
            "maxLength",
            checks::MAX_HEADER_NAME_BYTES as f64,
        ),
        (
            ti,
            "spec.claimToHeaders[].claim",
            "maxLength",
            checks::MAX_CLAIM_PATH_BYTES as f64,
        ),
        (
            ti,
            "spec.identity_provider.reference",
            "maxLength",
            checks::MAX_REFERENCE_BYTES as f64,
        ),
        (
            Kind::AccessPolicy,
            "spec.link",
            "maxItems",
            checks::MAX_LINKS as f64,
        ),
        (
            Kind::AccessPolicy,
            "spec.link[].resourceType",
            "maxLength",
            checks::MAX_KIND_BYTES as f64,
        ),
    ];
    for (kind, path, key, bound) in cases {
        assert_eq!(at(kind, path, key), bound, "{kind} {path} {key}");
    }
}

/// Aidbox's other IdentityProvider and User fields are kept (and ignored), as the docs
/// say; TokenIntrospector and AccessPolicy keep no field they do not know.
#[test]
fn unknown_fields_are_kept_where_the_docs_say() {
    for (kind, schema) in schemas() {
        let keeps = schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] == true;
        let expected = matches!(kind, Kind::IdentityProvider | Kind::User);
        assert_eq!(keeps, expected, "{kind}");
    }
}

// ---- The CEL rules, evaluated. ----

/// The values a rule's `at` names in `object` (the whole object, `{spec: ...}`).
fn values_at<'a>(object: &'a Value, at: &str) -> Vec<&'a Value> {
    let mut found = vec![object];
    for segment in at.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        found = found
            .into_iter()
            .filter_map(|v| v.get(name))
            .flat_map(|v| match (items, v.as_array()) {
                (true, Some(list)) => list.iter().collect(),
                (true, None) => Vec::new(),
                (false, _) => vec![v],
            })
            .collect();
    }
    found
}

/// Whether `rule` holds at `value`. A rule that errors is a bug of the rule.
fn holds(rule: &Rule, value: &Value) -> bool {
    let program = cel::Program::compile(rule.cel).unwrap();
    let mut context = cel::Context::default();
    context
        .add_variable("self", cel::to_value(value).unwrap())
        .unwrap();
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => b,
        other => panic!("rule {} on {value}: {other:?}", rule.id),
    }
}

/// The rules of `kind` that `spec` breaks, as the API server would find them.
fn broken(kind: Kind, spec: &Value) -> Vec<&'static str> {
    let object = json!({ "spec": spec });
    RULES
        .iter()
        .filter(|r| r.kind == kind)
        .filter(|r| values_at(&object, r.at).iter().any(|v| !holds(r, v)))
        .map(|r| r.id)
        .collect()
}

const NS: &str = "team-a";

/// An IdentityProvider `kc` and a Secret `hmac` with key `k`, for the references of the
/// samples.
const BESIDE: &str = "---\napiVersion: portcullis.dev/v1alpha1\nkind: IdentityProvider\n\
    metadata: {name: kc, namespace: team-a}\nspec: {system: https://kc}\n\
    ---\napiVersion: v1\nkind: Secret\nmetadata: {name: hmac, namespace: team-a}\n\
    stringData: {k: sup3r-s3cret}\n";

/// `validate` on one object in the Kubernetes form, with [`BESIDE`]: its errors as
/// `(field, message)`.
fn validate(kind: Kind, spec: &Value) -> Vec<(String, String)> {
    let object = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": kind.name(),
        "metadata": {"name": "sample", "namespace": NS}, "spec": spec,
    });
    let text = format!("{object}\n{BESIDE}");
    let mut compiler = Compiler::offline();
    for_each_document(Path::new("sample.yaml"), &text, |item| compiler.push(item));
    match compiler.finish_with_warnings().0 {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.field.unwrap_or_default(), e.message))
            .collect(),
    }
}

/// The webhook's refusal of one object, when it refuses.
fn webhook(kind: Kind, spec: &Value) -> Option<String> {
    let candidate = Candidate {
        kind,
        namespace: NS.into(),
        name: "sample".into(),
        spec: Some(spec.clone()),
        old_spec: None,
        annotations: None,
        old_annotations: None,
        labels: Default::default(),
    };
    review(&candidate, None).refused.map(|ready| ready.message)
}

fn jwt_with(extra: Value) -> Value {
    let mut spec = json!({"type": "jwt", "jwt": {"iss": "https://a", "secret": "s"}});
    merge(&mut spec, extra);
    spec
}

fn merge(into: &mut Value, extra: Value) {
    match (into, extra) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match (a.get_mut(&k), v) {
                    (_, Value::Null) => {
                        a.remove(&k);
                    }
                    (Some(existing), v @ Value::Object(_)) => merge(existing, v),
                    (_, v) => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (into, extra) => *into = extra,
    }
}

fn key(key: Value) -> Value {
    json!({"type": "jwt", "jwt": {"iss": "https://a", "keys": [key]}})
}

fn claim(header: &str, claim: &str) -> Value {
    jwt_with(json!({"claimToHeaders": [{"header": header, "claim": claim}]}))
}

fn link(link: Value) -> Value {
    json!({"engine": "allow", "link": [link]})
}

/// Mistakes that `validate` and the webhook refuse: the kind, the spec, the field they
/// name, and the rule whose message they give.
fn mistakes() -> Vec<(Kind, Value, &'static str, Rule)> {
    use checks::*;
    let ti = Kind::TokenIntrospector;
    let ap = Kind::AccessPolicy;
    let iss = "https://a";
    let secret_ref = json!({"name": "hmac", "key": "k"});
    let mut out = vec![
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss}}),
            "jwt",
            KEY_SOURCE,
        ),
        (
            ti,
            jwt_with(json!({"jwks_uri": "https://a/jwks"})),
            "jwt.secret",
            KEY_SOURCE,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss, "secretRef": secret_ref},
                   "openidDiscovery": true}),
            "jwt.secret",
            KEY_SOURCE,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss, "keys": [
                {"kty": "OCT", "alg": "HS256", "format": "plain", "k": "x"}]},
                "jwks_uri": "https://a/jwks"}),
            "jwt.keys",
            KEY_SOURCE,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"secret": "s"}}),
            "jwt.iss",
            ISSUER_REQUIRED,
        ),
        (
            ti,
            jwt_with(json!({"jwt": {"iss": ""}})),
            "jwt.iss",
            ISSUER_REQUIRED,
        ),
        (
            ti,
            json!({"type": "jwt", "jwks_uri": "https://a/jwks"}),
            "jwt.iss",
            ISSUER_REQUIRED,
        ),
        (
            ti,
            jwt_with(json!({"introspection_endpoint": {"url": "https://i"}})),
            "introspection_endpoint",
            ENDPOINT_ONLY_OPAQUE,
        ),
        (
            ti,
            json!({"type": "opaque", "jwks_uri": "https://a/jwks",
                   "introspection_endpoint": {"url": "https://i"}}),
            "type",
            OPAQUE_NO_KEYS,
        ),
        (
            ti,
            json!({"type": "opaque", "jwt": {"iss": iss, "secret": "s"},
                   "introspection_endpoint": {"url": "https://i"}}),
            "type",
            OPAQUE_NO_KEYS,
        ),
        (
            ti,
            json!({"type": "opaque"}),
            "introspection_endpoint.url",
            OPAQUE_ENDPOINT,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss, "keys": []}}),
            "jwt.keys",
            KEYS_NOT_EMPTY,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss}, "jwks_uri": "ftp://a/jwks"}),
            "jwks_uri",
            JWKS_URL,
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": iss}, "jwks_uri": "https://"}),
            "jwks_uri",
            JWKS_URL,
        ),
        (
            ti,
            json!({"type": "opaque", "introspection_endpoint": {"url": "localhost:8080/i"}}),
            "introspection_endpoint.url",
            ENDPOINT_URL,
        ),
        (
            ti,
            jwt_with(json!({"jwt": {"secretRef": secret_ref}})),
            "jwt.secretRef",
            SECRET_BOTH,
        ),
        (
            ti,
            jwt_with(json!({"jwt": {"secret": ""}})),
            "jwt.secret",
            SECRET_NOT_EMPTY,
        ),
        (
            ti,
            jwt_with(json!({"jwt": {"allowedAudiences": []}})),
            "jwt.allowedAudiences",
            AUDIENCES_NOT_EMPTY,
        ),
        (
            ti,
            key(json!({"kty": "OCT", "alg": "HS256", "k": "x"})),
            "jwt.keys[0].format",
            KEY_OCT_PLAIN,
        ),
        (
            ti,
            key(json!({"kty": "RSA", "alg": "RS256", "format": "plain", "k": "x"})),
            "jwt.keys[0].format",
            KEY_PUBLIC_PEM,
        ),
        (
            ti,
            key(json!({"kty": "EC", "alg": "ES256"})),
            "jwt.keys[0].pub",
            KEY_PUB_REQUIRED,
        ),
        (
            ti,
            key(json!({"kty": "OCT", "alg": "HS256", "format": "plain"})),
            "jwt.keys[0].k",
            KEY_K_REQUIRED,
        ),
        (
            ti,
            key(json!({"kty": "oct", "alg": "HS256", "format": "plain", "k": ""})),
            "jwt.keys[0].k",
            KEY_K_REQUIRED,
        ),
        (
            ti,
            key(
                json!({"kty": "OCT", "alg": "HS256", "format": "plain", "k": "x",
                       "kRef": secret_ref}),
            ),
            "jwt.keys[0].kRef",
            K_BOTH,
        ),
        (
            ti,
            json!({"type": "opaque", "introspection_endpoint": {"url": "https://i",
                   "authorization": "Basic eA==", "authorizationRef": secret_ref}}),
            "introspection_endpoint.authorizationRef",
            AUTHORIZATION_BOTH,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider":
                {"reference": "IdentityProvider/kc", "id": "kc"}})),
            "identity_provider",
            PROVIDER_REF_SHAPE,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"resourceType": "IdentityProvider"}})),
            "identity_provider",
            PROVIDER_REF_SHAPE,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {}})),
            "identity_provider",
            PROVIDER_REF_EMPTY,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"reference": "kc"}})),
            "identity_provider",
            PROVIDER_REF_FORM,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"reference": "IdentityProvider/kc/x"}})),
            "identity_provider",
            PROVIDER_REF_FORM,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"reference": "User/kc"}})),
            "identity_provider",
            PROVIDER_REF_KIND,
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"resourceType": "User", "id": "kc"}})),
            "identity_provider",
            PROVIDER_REF_KIND,
        ),
        (
            ti,
            jwt_with(json!({"claimToHeaders": [
                {"header": "x-ok", "claim": "a"}, {"header": "x-ok", "claim": "b"}]})),
            "claimToHeaders[1].header",
            CLAIM_HEADER_ONCE,
        ),
        (
            ap,
            json!({"engine": "complex", "and": [{"engine": "allow"}],
                    "or": [{"engine": "allow"}]}),
            "and",
            AND_OR_BOTH,
        ),
        (ap, json!({"engine": "complex"}), "and", COMPLEX_BODY),
        (
            ap,
            json!({"engine": "complex", "and": []}),
            "and",
            AND_NOT_EMPTY,
        ),
        (
            ap,
            json!({"engine": "complex", "or": []}),
            "or",
            OR_NOT_EMPTY,
        ),
        (ap, json!({"engine": "matcho"}), "matcho", MATCHO_BODY),
        (ap, json!({"engine": "json-schema"}), "schema", SCHEMA_BODY),
        (
            ap,
            json!({"engine": "allow", "link": []}),
            "link",
            LINK_NOT_EMPTY,
        ),
        (
            ap,
            link(json!({"reference": "User/u", "id": "u"})),
            "link[0]",
            LINK_SHAPE,
        ),
        (ap, link(json!({"id": "u"})), "link[0]", LINK_SHAPE),
        (ap, link(json!({})), "link[0]", LINK_EMPTY),
        (ap, link(json!({"reference": "u"})), "link[0]", LINK_FORM),
        (
            ap,
            link(json!({"reference": "Patient/x"})),
            "link[0]",
            LINK_KIND,
        ),
        (
            ap,
            link(json!({"resourceType": "Group", "id": "g"})),
            "link[0]",
            LINK_KIND,
        ),
        (
            ap,
            link(json!({"reference": "User/u", "issuer": iss})),
            "link[0].issuer",
            LINK_USER_NO_ISSUER,
        ),
        (
            ap,
            link(json!({"resourceType": "User", "id": "u", "issuer": ""})),
            "link[0].issuer",
            LINK_USER_NO_ISSUER,
        ),
        (
            ap,
            link(json!({"reference": "Client/app"})),
            "link[0].issuer",
            LINK_CLIENT_ISSUER,
        ),
        (
            ap,
            link(json!({"resourceType": "Client", "id": "app", "issuer": ""})),
            "link[0].issuer",
            LINK_CLIENT_ISSUER,
        ),
    ];
    for (kty, alg) in [
        ("RSA", "HS256"),
        ("EC", "RS256"),
        ("OKP", "ES256"),
        ("OCT", "RS256"),
    ] {
        let format = if kty == "OCT" { "plain" } else { "PEM" };
        out.push((
            ti,
            key(json!({"kty": kty, "alg": alg, "format": format, "k": "x", "pub": "x"})),
            "jwt.keys[0].alg",
            KEY_ALG_FITS,
        ));
    }
    let headers: [(&str, Rule); 12] = [
        ("X-Tenant", CLAIM_HEADER_TOKEN),
        ("bad header", CLAIM_HEADER_TOKEN),
        ("", CLAIM_HEADER_TOKEN),
        ("authorization", CLAIM_HEADER_CREDENTIALS),
        ("proxy-authorization", CLAIM_HEADER_CREDENTIALS),
        ("cookie", CLAIM_HEADER_CREDENTIALS),
        ("host", CLAIM_HEADER_CREDENTIALS),
        ("content-type", CLAIM_HEADER_X),
        ("x-forwarded-for", CLAIM_HEADER_RESERVED),
        ("x-envoy-original-path", CLAIM_HEADER_RESERVED),
        ("x-b3-traceid", CLAIM_HEADER_RESERVED),
        ("x-portcullis-user", CLAIM_HEADER_RESERVED),
    ];
    for (header, rule) in headers {
        out.push((ti, claim(header, "sub"), "claimToHeaders[0].header", rule));
    }
    out.push((
        ti,
        claim("x-request-id", "sub"),
        "claimToHeaders[0].header",
        CLAIM_HEADER_RESERVED,
    ));
    for path in ["a..b", "", ".a", "a."] {
        out.push((
            ti,
            claim("x-c", path),
            "claimToHeaders[0].claim",
            CLAIM_PATH,
        ));
    }
    out
}

#[test]
fn cel_rules_refuse_what_validate_and_the_webhook_refuse_with_the_same_message() {
    let mistakes = mistakes();
    for (kind, spec, field, rule) in &mistakes {
        let errors = validate(*kind, spec);
        assert!(
            errors.iter().any(|(f, m)| f == field && m == rule.message),
            "validate on {spec}: expected field `{field}`: {}\ngot {errors:#?}",
            rule.message
        );
        let refused = webhook(*kind, spec).unwrap_or_else(|| panic!("the webhook allowed {spec}"));
        assert!(
            refused.contains(&format!("field `{field}`: {}", rule.message)),
            "webhook on {spec}: {refused}"
        );
        let broken = broken(*kind, spec);
        assert!(
            broken.contains(&rule.id),
            "rule {} holds on {spec} (broken: {broken:?})",
            rule.id
        );
    }
    // Every rule is shown to catch at least one mistake.
    for rule in RULES {
        assert!(
            mistakes.iter().any(|(_, _, _, r)| r.id == rule.id),
            "rule {} has no mistake that shows it",
            rule.id
        );
    }
}

/// Objects that `validate` accepts, at the edges of the rules: no rule may refuse them.
fn accepted() -> Vec<(Kind, Value)> {
    let ti = Kind::TokenIntrospector;
    let ap = Kind::AccessPolicy;
    let secret_ref = json!({"name": "hmac", "key": "k"});
    vec![
        (
            ti,
            json!({"type": "opaque", "jwt": {"iss": "https://a"},
                    "introspection_endpoint": {"url": "http://i/x", "authorization": "Basic eA=="},
                    "openidDiscovery": true}),
        ),
        (
            ti,
            json!({"type": "opaque",
                    "introspection_endpoint": {"url": "https://i", "authorizationRef": secret_ref}}),
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": "https://a", "secretRef": secret_ref,
                    "allowedAudiences": ["api"], "leewaySeconds": 0}, "cache_ttl": 1}),
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": "https://a", "keys": [
                    {"kty": "oct", "alg": "HS384", "format": "plain", "kRef": secret_ref},
                    {"kty": "OCT", "alg": "HS512", "format": "plain", "k": "x", "kid": "b"}]}}),
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": "https://a"}, "openidDiscovery": true,
                    "cache_ttl": 86400}),
        ),
        (
            ti,
            json!({"type": "jwt", "jwt": {"iss": "https://a"}, "jwks_uri": "https://a/jwks",
                    "openidDiscovery": false}),
        ),
        (
            ti,
            jwt_with(
                json!({"identity_provider": {"resourceType": "IdentityProvider", "id": "kc"}}),
            ),
        ),
        (
            ti,
            jwt_with(json!({"identity_provider": {"reference": "IdentityProvider/kc"}})),
        ),
        (
            ti,
            jwt_with(json!({"claimToHeaders": [
                    {"header": "x-tenant", "claim": "tenant"},
                    {"header": "x-roles", "claim": "realm_access.roles"},
                    {"header": "x-a_b.c~1", "claim": "a-b"}]})),
        ),
        (
            ap,
            json!({"engine": "complex", "or": [{"engine": "allow"}]}),
        ),
        (
            ap,
            json!({"engine": "complex", "and": [{"engine": "matcho", "matcho": {"uri": "/x"}}]}),
        ),
        (
            ap,
            json!({"engine": "matcho", "matcho": {"uri": "/x"}, "and": []}),
        ),
        (
            ap,
            json!({"engine": "json-schema", "schema": {"required": ["jwt"]}}),
        ),
        (
            ap,
            json!({"engine": "allow", "description": "everyone", "link": [
                    {"reference": "Client/app", "issuer": "https://a"},
                    {"resourceType": "User", "id": "u"},
                    {"resourceType": "Client", "id": "b", "issuer": "https://a"},
                    {"reference": "User/u2"}]}),
        ),
    ]
}

#[test]
fn cel_rules_accept_what_validate_accepts() {
    for (kind, spec) in accepted() {
        let errors = validate(kind, &spec);
        assert!(errors.is_empty(), "validate refuses {spec}: {errors:#?}");
        assert_eq!(webhook(kind, &spec), None, "the webhook refuses {spec}");
        assert_eq!(broken(kind, &spec), Vec::<&str>::new(), "{spec}");
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The objects of the four kinds in `deploy/examples/` and `examples/quickstart/`, in
/// either form: `(file, kind, spec)`.
fn shipped_examples() -> Vec<(PathBuf, Kind, Value)> {
    let mut files = Vec::new();
    yaml_files(&repo().join("deploy/examples"), &mut files);
    yaml_files(&repo().join("examples/quickstart"), &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if doc["apiVersion"] == crate::resources::API_VERSION {
                let kind = Kind::from_name(doc["kind"].as_str().unwrap()).unwrap();
                out.push((file.clone(), kind, doc["spec"].clone()));
            } else if let Some(kind) = doc["resourceType"].as_str().and_then(Kind::from_name) {
                let mut spec = doc.clone();
                for field in ["resourceType", "id", "meta"] {
                    spec.as_object_mut().unwrap().remove(field);
                }
                out.push((file.clone(), kind, spec));
            }
        }
    }
    out
}

#[test]
fn cel_rules_accept_the_shipped_examples() {
    let examples = shipped_examples();
    for kind in [Kind::TokenIntrospector, Kind::AccessPolicy] {
        let n = examples.iter().filter(|(_, k, _)| *k == kind).count();
        assert!(n >= 4, "only {n} shipped {kind}s found");
    }
    for (file, kind, spec) in &examples {
        assert_eq!(
            broken(*kind, spec),
            Vec::<&str>::new(),
            "{}: {kind} {spec}",
            file.display()
        );
    }
}

/// docs/kubernetes.md lists every rule, so that the page says what `kubectl apply`
/// refuses.
#[test]
fn the_docs_list_every_rule() {
    let docs = std::fs::read_to_string(repo().join("docs/kubernetes.md")).unwrap();
    for rule in RULES {
        assert!(
            docs.contains(&format!("`{}`", rule.id)),
            "docs/kubernetes.md lacks rule `{}`",
            rule.id
        );
    }
}
