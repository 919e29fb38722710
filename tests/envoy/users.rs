//! The Keycloak auto-create-user tutorial through real Envoy (gRPC ext_authz) in front of
//! an echo upstream: the upstream sees the created User's name, never a client's copy.
//!
//! Needs Envoy: `scripts/install-test-deps.sh` (or `ENVOY_BIN`). Fails, never skips.

use crate::support;

use support::envoy::Envoy;
use support::stub_idp::{StubIdp, TUTORIAL_CLIENT, TUTORIAL_SUB};
use support::upstream::EchoServer;
use support::users::{keycloak_user_name, serve_creating_users, user_files, write_tutorial_config};

#[tokio::test]
async fn the_tutorial_through_envoy() {
    let idp = StubIdp::keycloak().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, users) = (dir.path().join("config"), dir.path().join("users"));
    write_tutorial_config(&config, &idp, "");
    let portcullis = serve_creating_users(&config, &users).await;
    let upstream = EchoServer::start();
    let envoy = Envoy::grpc_ext_authz(portcullis.grpc_addr().port(), upstream.port()).await;
    let http = support::http_client();
    let token = idp.client_credentials(TUTORIAL_CLIENT).await;
    let name = keycloak_user_name(TUTORIAL_SUB);

    // The tutorial's `curl -H "Authorization: Bearer ..." .../fhir/Patient`, with a
    // spoofed identity header that must not reach the upstream.
    for _ in 0..2 {
        let response = http
            .get(envoy.url("/fhir/Patient"))
            .bearer_auth(&token)
            .header("x-portcullis-user", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", portcullis.log());
    }
    let seen = upstream.requests_to("/fhir/Patient");
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.header("x-portcullis-user"), Some(name.as_str()));
        assert_eq!(request.header("x-portcullis-subject"), Some(TUTORIAL_SUB));
    }
    assert_eq!(idp.userinfo_calls(TUTORIAL_SUB), 1);
    // Verified with the key from the tutorial's jwks_uri, fetched once.
    assert_eq!(idp.jwks_fetches(), 1);
    let files = user_files(&users);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[&format!("{name}.yaml")]["spec"]["identifier"],
        serde_json::json!([{"system": "keycloak", "value": TUTORIAL_SUB}])
    );
    drop(envoy);
}
