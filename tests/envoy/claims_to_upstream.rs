//! Claims to the upstream, through the shipped gRPC Envoy configuration: `claimToHeaders`
//! sets request headers from the validated token, a client's copies never reach the
//! upstream, and Envoy's access log shows the dynamic metadata portcullis sends on allow.

use crate::support;

use support::envoy::{Envoy, SHIPPED_GRPC};
use support::portcullis::Portcullis;
use support::tokens::{bearer, Jwt};
use support::upstream::EchoServer;

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";
const CONFIG: &str = "
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
claimToHeaders:
  - {header: x-tenant, claim: tenant}
  - {header: x-roles, claim: realm_access.roles}
---
resourceType: AccessPolicy
id: trusted-issuer
engine: matcho
matcho: {jwt: {iss: https://auth.example.com}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_reach_the_upstream_and_client_copies_do_not() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("c.yaml"), CONFIG).unwrap();
    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder().config(config.path()).start().await;
    let envoy = Envoy::shipped(SHIPPED_GRPC, portcullis.grpc_addr().port(), upstream.port()).await;
    let client = support::http_client();
    let get = |path: &'static str, token: String| {
        client
            .get(envoy.url(path))
            .header("authorization", bearer(&token))
            .header("x-tenant", "evil")
            .header("x-roles", "admin")
            .send()
    };

    let with_claims = Jwt::new(ISS, "ann")
        .claim("tenant", "acme")
        .claim(
            "realm_access",
            serde_json::json!({"roles": ["reader", "writer"]}),
        )
        .sign_hs256(SECRET);
    let answer = get("/with-claims", with_claims).await.unwrap();
    assert_eq!(answer.status(), 200);
    let seen = &upstream.requests_to("/with-claims")[0];
    assert_eq!(seen.header_values("x-tenant"), ["acme"], "{seen:#?}");
    assert_eq!(
        seen.header_values("x-roles"),
        ["reader,writer"],
        "{seen:#?}"
    );

    let without = Jwt::new(ISS, "bob").sign_hs256(SECRET);
    let answer = get("/without-claims", without).await.unwrap();
    assert_eq!(answer.status(), 200);
    let seen = &upstream.requests_to("/without-claims")[0];
    assert!(seen.header_values("x-tenant").is_empty(), "{seen:#?}");
    assert!(seen.header_values("x-roles").is_empty(), "{seen:#?}");

    // Envoy's access log (shipped format) reads portcullis's dynamic metadata.
    support::eventually("the access log line of the allowed request", || async {
        let log = envoy.log();
        let line = log
            .lines()
            .find(|l| l.contains("/with-claims"))
            .map(str::to_owned);
        line.filter(|l| l.contains("subject=ann") && l.contains("policy=trusted-issuer"))
    })
    .await;
    drop(envoy);
}
