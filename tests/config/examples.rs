//! Every example the project ships, decided: a token it should allow gets 200 and one it
//! should refuse does not. `portcullis test` decides offline as `serve` would, so each
//! example is run as written (Kubernetes form with its Secret beside it, as the file
//! ships); only the opaque example's endpoint is pointed at the stub identity provider,
//! which answers the introspection for real.
//!
//! `jwt:` claims stand for a JWT already validated (used where the key is elsewhere, a
//! JWKS); `token:` is validated for real (shared secret, static key, introspection).

use crate::support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::portcullis::portcullis_bin;
use support::stub_idp::StubIdp;
use support::tokens::Jwt;

const AIDBOX: &str = "deploy/examples/aidbox";
const ISS: &str = "https://auth.example.com";

/// `portcullis test --config CONFIG CASES` with these cases: exit code and output.
fn decide(config: &Path, cases: serde_json::Value) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.yaml");
    std::fs::write(
        &file,
        serde_yaml::to_string(&json!({ "tests": cases })).unwrap(),
    )
    .unwrap();
    let out = Command::new(portcullis_bin())
        .arg("test")
        .arg("--config")
        .arg(config)
        .arg(&file)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("running portcullis test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

/// Every case passes, and there were `n` of them.
fn assert_all_pass(config: &Path, cases: serde_json::Value) {
    let n = cases.as_array().unwrap().len();
    let (code, out) = decide(config, cases);
    assert_eq!(code, 0, "{}:\n{out}", config.display());
    assert!(
        out.contains(&format!("{n} passed, 0 failed")),
        "{}:\n{out}",
        config.display()
    );
}

fn example(file: &str) -> std::path::PathBuf {
    support::repo_path(format!("{AIDBOX}/{file}"))
}

fn get(path: &str) -> serde_json::Value {
    json!({"method": "GET", "path": path})
}

#[test]
fn the_shared_secret_example_allows_its_tokens_and_refuses_forged_ones() {
    let tutorial = Jwt::new(ISS, "alice").exp_in(600);
    assert_all_pass(
        &example("external-auth-server-secret.yaml"),
        json!([
            {"name": "signed with the Secret's key", "request": get("/fhir/Patient"),
             "token": tutorial.sign_hs256("change-me-to-a-long-random-secret"),
             "expect": {"status": 200, "policy": "external-auth-server"}},
            {"name": "signed with another key", "request": get("/fhir/Patient"),
             "token": tutorial.sign_hs256("not-the-secret-of-the-example!!!"),
             "expect": {"status": 401}},
            {"name": "another issuer", "request": get("/fhir/Patient"),
             "jwt": {"iss": "https://other.example.com", "sub": "alice"},
             "expect": {"status": 401}},
            {"name": "no token", "request": get("/fhir/Patient"), "expect": {"status": 401}},
        ]),
    );
}

#[test]
fn the_static_key_example_allows_its_tokens_and_refuses_forged_ones() {
    let tutorial = Jwt::new(ISS, "alice").exp_in(600);
    assert_all_pass(
        &example("external-auth-server-keys.yaml"),
        json!([
            {"name": "signed with the key's private half", "request": get("/fhir/Patient"),
             "token": tutorial.sign_with("rsa-a", jsonwebtoken::Algorithm::RS256),
             "expect": {"status": 200, "policy": "external-auth-server"}},
            {"name": "signed with another RSA key", "request": get("/fhir/Patient"),
             "token": tutorial.sign_with("rsa-b", jsonwebtoken::Algorithm::RS256),
             "expect": {"status": 401}},
            {"name": "HS256 against an RSA key", "request": get("/fhir/Patient"),
             "token": tutorial.sign_hs256("any-secret-at-all-any-secret-at"),
             "expect": {"status": 401}},
        ]),
    );
}

/// The key set lives at the tutorial's server: claims stand for a token it validated.
#[test]
fn the_jwks_example_allows_its_issuer_and_no_other() {
    assert_all_pass(
        &example("external-auth-server-jwks.yaml"),
        json!([
            {"name": "the tutorial's issuer", "request": get("/fhir/Patient"),
             "jwt": {"iss": ISS, "sub": "alice"}, "expect": {"status": 200}},
            {"name": "another issuer", "request": get("/fhir/Patient"),
             "jwt": {"iss": "https://other.example.com", "sub": "alice"},
             "expect": {"status": 401}},
            {"name": "no token", "request": get("/fhir/Patient"), "expect": {"status": 401}},
        ]),
    );
}

#[test]
fn the_keycloak_example_allows_its_realm_and_no_other() {
    let realm = "http://keycloak.keycloak.svc:8080/realms/master";
    assert_all_pass(
        &example("keycloak-auto-create-users.yaml"),
        json!([
            {"name": "a token of the realm", "request": get("/fhir/Patient"),
             "jwt": {"iss": realm, "sub": "b1c2"},
             "expect": {"status": 200, "policy": "keycloak-users-policy"}},
            {"name": "another realm", "request": get("/fhir/Patient"),
             "jwt": {"iss": "http://keycloak.keycloak.svc:8080/realms/other", "sub": "b1c2"},
             "expect": {"status": 401}},
            {"name": "no token", "request": get("/fhir/Patient"), "expect": {"status": 401}},
        ]),
    );
}

/// The opaque example as shipped, its endpoint URL alone pointed at the stub: an active
/// token is allowed (the answer is the policy's `token`), an inactive one is refused, and
/// the endpoint is asked with the Secret's `Authorization`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opaque_token_example_allows_active_tokens_and_refuses_inactive_ones() {
    let idp = StubIdp::start(json!({"keys": []})).await;
    idp.answer(
        "opaque-active-token",
        json!({"active": true, "sub": "alice", "client_id": "app", "scope": "read"}),
    );
    let shipped = std::fs::read_to_string(example("external-auth-server-opaque.yaml")).unwrap();
    let url = "https://auth.example.com/oauth2/introspect";
    assert!(shipped.contains(url), "the example's endpoint moved");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("opaque.yaml"),
        shipped.replace(url, &idp.introspection_url()),
    )
    .unwrap();
    let config = dir.path().to_path_buf();
    let (code, out) = tokio::task::spawn_blocking(move || {
        decide(
            &config,
            json!([
                {"name": "an active token", "request": get("/fhir/Patient"),
                 "token": "opaque-active-token",
                 "expect": {"status": 200, "policy": "external-auth-server-opaque"}},
                {"name": "a token the server does not know", "request": get("/fhir/Patient"),
                 "token": "opaque-unknown-token", "expect": {"status": 401}},
                {"name": "no token", "request": get("/fhir/Patient"), "expect": {"status": 401}},
            ]),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 passed, 0 failed"), "{out}");
    let st = idp.state.lock().unwrap();
    assert!(
        !st.authorizations.is_empty(),
        "the endpoint was never asked"
    );
    for authorization in &st.authorizations {
        assert_eq!(
            authorization.as_deref(),
            Some("Basic cG9ydGN1bGxpczpjaGFuZ2UtbWU="),
            "the Secret's authorization"
        );
    }
}

/// The quickstart (README "Try it"): the README's token finds the tutorial's User.
#[test]
fn the_quickstart_allows_the_tutorial_issuer() {
    assert_all_pass(
        &support::repo_path("examples/quickstart"),
        json!([
            {"name": "the README's token", "request": get("/fhir/Patient"),
             "token": Jwt::new(ISS, "some-user-id").exp_in(600).sign_hs256("very-secret"),
             "expect": {"status": 200, "policy": "external-auth-server"}},
            {"name": "signed with another secret", "request": get("/fhir/Patient"),
             "token": Jwt::new(ISS, "some-user-id").exp_in(600).sign_hs256("not-very-secret"),
             "expect": {"status": 401}},
        ]),
    );
}
