//! User auto-creation with a real, certified OpenID provider (npm `oidc-provider`, see
//! tests/oidc): a person logs in with the authorization-code flow, scripted through the
//! provider's dev interactions (login form, consent form); the OPAQUE access token they
//! get, presented through real Envoy to `portcullis serve --create-users`, is introspected
//! and creates a User whose `data` is the provider's real userinfo answer.
//!
//! Needs Envoy and node: `scripts/install-test-deps.sh`. Fails without them, never skips.

mod oidc_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use oidc_support::{jwt_claims, OidcProvider, LOGIN_CLIENT, TEST_ACCOUNT};
use serde_json::{json, Value};
use support::envoy::Envoy;
use support::portcullis::Portcullis;
use support::upstream::{EchoServer, Echoed};

const SYSTEM: &str = "oidc";
const TOKEN_POLICY: &str = "external-auth-server";
const USER_POLICY: &str = "verified-email-users";

/// The IdentityProvider `oidc` on the provider's userinfo endpoint, an opaque
/// TokenIntrospector that names it, the external-auth-server tutorial's `token.active`
/// policy (for /fhir), and a policy on the resolved User's data (for /profile).
fn write_config(dir: &Path, op: &OidcProvider) {
    let docs = [
        json!({
            "resourceType": "IdentityProvider",
            "id": "oidc",
            "title": "oidc-provider",
            "system": SYSTEM,
            "scopes": ["openid", "email", "profile"],
            "userinfo_endpoint": op.userinfo_url(),
            "userinfo-source": "userinfo-endpoint",
            "active": true,
        }),
        json!({
            "resourceType": "TokenIntrospector",
            "id": "oidc-provider-opaque",
            "type": "opaque",
            "introspection_endpoint": {
                "url": op.introspection_url(),
                "authorization": op.introspection_authorization(),
            },
            "identity_provider": {"reference": "IdentityProvider/oidc"},
        }),
        json!({
            "resourceType": "AccessPolicy",
            "id": TOKEN_POLICY,
            "engine": "matcho",
            "matcho": {"uri": "#^/fhir/", "token": {"active": true}},
        }),
        json!({
            "resourceType": "AccessPolicy",
            "id": USER_POLICY,
            "engine": "matcho",
            "matcho": {
                "uri": "#^/profile$",
                "user": {"data": {"email_verified": true, "email": "#@example\\.com$"}},
            },
        }),
    ];
    let text = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(dir.join("oidc.yaml"), text).expect("write config");
}

/// The User manifests in the users directory, by file name (hidden temp files included,
/// so a leftover would show).
fn user_files(dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not YAML ({e}):\n{text}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            )
        })
        .collect()
}

/// `portcullis_user_events_total{event="<event>"}` from `/metrics`.
async fn user_event(portcullis: &Portcullis, event: &str) -> u64 {
    let metrics = support::http_client()
        .get(portcullis.http_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let needle = format!("portcullis_user_events_total{{event=\"{event}\"}} ");
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(&needle)
                .map(|n| n.trim().parse().expect("a count"))
        })
        .unwrap_or(0)
}

async fn get(envoy: &Envoy, path: &str, token: &str) -> reqwest::Response {
    support::http_client()
        .get(envoy.url(path))
        .bearer_auth(token)
        .header("x-portcullis-user", "admin")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}"))
}

async fn expect_allowed(envoy: &Envoy, path: &str, token: &str, portcullis: &Portcullis) -> Echoed {
    let response = get(envoy, path, token).await;
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(
        status,
        200,
        "GET {path} was not allowed: {body}\n{}",
        portcullis.log_report()
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not the echo JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_login_then_its_opaque_token_creates_the_user() {
    let op = OidcProvider::start().await;

    // A person logs in: the provider's own login and consent pages, then the code.
    let login = op.login(TEST_ACCOUNT).await;
    assert_eq!(
        login.prompts,
        ["login", "consent"],
        "the dev interactions ran"
    );
    let token = login.access_token.clone();
    assert!(
        !token.contains('.'),
        "an opaque access token (no resource indicator)"
    );
    let scope = login.token_response["scope"].as_str().unwrap_or_default();
    for wanted in ["openid", "email", "profile"] {
        assert!(
            scope.split(' ').any(|s| s == wanted),
            "scope {scope:?} lacks {wanted}"
        );
    }
    let id_token = jwt_claims(&login.id_token);
    assert_eq!(id_token["iss"], op.issuer());
    assert_eq!(id_token["sub"], TEST_ACCOUNT);
    assert_eq!(id_token["aud"], LOGIN_CLIENT.0);
    // What the provider itself says about the token, before portcullis asks.
    let introspected = op.introspect(&token).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], TEST_ACCOUNT, "{introspected}");
    assert_eq!(introspected["client_id"], LOGIN_CLIENT.0, "{introspected}");

    let dir = tempfile::tempdir().expect("tempdir");
    let (config, users) = (dir.path().join("config"), dir.path().join("users"));
    std::fs::create_dir(&config).expect("mkdir config");
    write_config(&config, &op);
    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder()
        .config(&config)
        .arg("--create-users")
        .arg("--users-dir")
        .arg(&users)
        .start()
        .await;
    let envoy = Envoy::grpc_ext_authz(portcullis.grpc_addr().port(), upstream.port()).await;
    // docs/users.md, "Naming": `<system>-<sub>` when that is a valid RFC 1123 label.
    let name = format!("{SYSTEM}-{TEST_ACCOUNT}");

    // The first request introspects the token, calls userinfo with it, creates the User.
    let seen = expect_allowed(&envoy, "/fhir/Patient", &token, &portcullis).await;
    assert_eq!(
        seen.header("x-portcullis-user"),
        Some(name.as_str()),
        "{seen:#?}"
    );
    assert_eq!(
        seen.header("x-portcullis-subject"),
        Some(TEST_ACCOUNT),
        "{seen:#?}"
    );
    assert_eq!(
        seen.header("x-portcullis-issuer"),
        Some(op.issuer()),
        "{seen:#?}"
    );
    assert_eq!(
        seen.header("x-portcullis-policy"),
        Some(TOKEN_POLICY),
        "{seen:#?}"
    );

    // The User file holds the provider's real userinfo answer.
    let userinfo = op.userinfo(&token).await;
    assert_eq!(
        userinfo,
        json!({
            "sub": TEST_ACCOUNT,
            "email": "testuser@example.com",
            "email_verified": true,
            "preferred_username": "testuser",
            "name": "Test User",
        }),
        "the provider's userinfo for scope openid email profile"
    );
    let files = user_files(&users);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [&format!("{name}.yaml")],
        "exactly one User file"
    );
    let user = &files[&format!("{name}.yaml")];
    assert_eq!(user["apiVersion"], "portcullis.dev/v1alpha1", "{user:#}");
    assert_eq!(user["kind"], "User", "{user:#}");
    assert_eq!(user["metadata"]["name"], name.as_str(), "{user:#}");
    assert_eq!(
        user["spec"],
        json!({
            "data": userinfo,
            "identifier": [{"system": SYSTEM, "value": TEST_ACCOUNT}],
        }),
        "{user:#}"
    );

    // The User is in the request context: a policy on its data allows /profile.
    let seen = expect_allowed(&envoy, "/profile", &token, &portcullis).await;
    assert_eq!(
        seen.header("x-portcullis-user"),
        Some(name.as_str()),
        "{seen:#?}"
    );
    assert_eq!(
        seen.header("x-portcullis-policy"),
        Some(USER_POLICY),
        "{seen:#?}"
    );

    // Later requests find it: no second userinfo call, no second file.
    let seen = expect_allowed(&envoy, "/fhir/Observation", &token, &portcullis).await;
    assert_eq!(
        seen.header("x-portcullis-user"),
        Some(name.as_str()),
        "{seen:#?}"
    );
    assert_eq!(user_event(&portcullis, "created").await, 1);
    assert_eq!(user_event(&portcullis, "userinfo_call").await, 1);
    assert_eq!(user_event(&portcullis, "userinfo_error").await, 0);
    assert_eq!(user_files(&users).len(), 1);
    assert_eq!(upstream.requests().len(), 3);

    let log = portcullis.log();
    assert!(!log.contains(&token), "portcullis logged the access token");
    drop(envoy);
}
