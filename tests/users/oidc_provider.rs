//! User auto-creation with a real, certified OpenID provider (npm `oidc-provider`, see
//! tests/oidc): a person logs in with the authorization-code flow, scripted through the
//! provider's dev interactions (login form, consent form); the OPAQUE access token they
//! get, presented through real Envoy to `portcullis serve --create-users`, is introspected
//! and creates a User whose `data` is the provider's real userinfo answer.
//!
//! Needs Envoy and node: `scripts/install-test-deps.sh`. Fails without them, never skips.

use crate::support;

use std::path::Path;

use serde_json::json;
use support::envoy::Envoy;
use support::ext_authz;
use support::oidc_provider::{OidcProvider, LOGIN_CLIENT, TEST_ACCOUNT};
use support::portcullis::Portcullis;
use support::tokens::{bearer, jwt_claims};
use support::upstream::{EchoServer, Echoed};
use support::users::user_files;

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
    support::write_documents(&dir.join("oidc.yaml"), &docs);
}

/// `GET path` through Envoy with the token and a spoofed `x-portcullis-user`: allowed,
/// and what the upstream saw of it.
async fn expect_allowed(envoy: &Envoy, upstream: &EchoServer, path: &str, token: &str) -> Echoed {
    let authorization = bearer(token);
    let headers = [
        ("authorization", authorization.as_str()),
        ("x-portcullis-user", "admin"),
    ];
    let answer = ext_authz::get(&envoy.url(path), &headers).await;
    upstream.answered_once(&answer, path)
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
        .create_users(&users)
        .start()
        .await;
    let envoy = Envoy::grpc_ext_authz(portcullis.grpc_addr().port(), upstream.port()).await;
    // docs/users.md, "Naming": `<system>-<sub>` when that is a valid RFC 1123 label.
    let name = format!("{SYSTEM}-{TEST_ACCOUNT}");

    // The first request introspects the token, calls userinfo with it, creates the User.
    let seen = expect_allowed(&envoy, &upstream, "/fhir/Patient", &token).await;
    assert_eq!(
        seen.header("x-portcullis-user"),
        Some(name.as_str()),
        "{seen:#?}"
    );
    seen.assert_identity(Some(TEST_ACCOUNT), Some(op.issuer()), Some(TOKEN_POLICY));

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
    let seen = expect_allowed(&envoy, &upstream, "/profile", &token).await;
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
    let seen = expect_allowed(&envoy, &upstream, "/fhir/Observation", &token).await;
    assert_eq!(
        seen.header("x-portcullis-user"),
        Some(name.as_str()),
        "{seen:#?}"
    );
    let metrics = portcullis.metrics().await;
    assert_eq!(metrics.user_event("created"), 1);
    assert_eq!(metrics.user_event("userinfo_call"), 1);
    metrics.assert_no_user_event("userinfo_error");
    assert_eq!(user_files(&users).len(), 1);
    assert_eq!(upstream.requests().len(), 3);

    let log = portcullis.log();
    assert!(!log.contains(&token), "portcullis logged the access token");
    drop(envoy);
}
