//! Tenancy through the shipped gRPC Envoy configuration: its per-route
//! `context_extensions` (`/team-a`, `/team-b`) choose whose resources decide, beside the
//! root's; a route without one gets the root's alone. Files with `--root-namespace` stand
//! in for the cluster, as docs/tenancy.md shows.

use crate::support;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;

use support::envoy::{Envoy, SHIPPED_GRPC};
use support::ext_authz::{check_request, send};
use support::portcullis::Portcullis;
use support::tokens::{bearer, Jwt};
use support::upstream::EchoServer;

const CORP: &str = "https://corp.example.com";
const CORP_SECRET: &str = "corp-secret";
const TEAM_A: &str = "https://a.example.com";
const TEAM_A_SECRET: &str = "team-a-secret";

const CONFIG: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: TokenIntrospector
metadata: {name: corp, namespace: platform}
spec: {type: jwt, jwt: {iss: "https://corp.example.com", secret: corp-secret}}
---
apiVersion: portcullis.dev/v1alpha1
kind: TokenIntrospector
metadata: {name: auth, namespace: team-a}
spec:
  type: jwt
  jwt: {iss: "https://a.example.com", secret: team-a-secret}
  claimToHeaders: [{claim: team, header: x-team}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: open, namespace: team-a}
spec: {engine: allow}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bob, namespace: team-b}
spec: {engine: matcho, matcho: {jwt: {sub: bob}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_routes_namespace_chooses_whose_resources_decide() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("c.yaml"), CONFIG).unwrap();
    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder()
        .config(config.path())
        .arg("--root-namespace")
        .arg("platform")
        .start()
        .await;
    let envoy = Envoy::shipped(SHIPPED_GRPC, portcullis.grpc_addr().port(), upstream.port()).await;
    let client = support::http_client();
    let get = |path: &str, token: &str| {
        client
            .get(envoy.url(path))
            .header("authorization", bearer(token))
            .header("x-team", "forged")
            .send()
    };
    let anyone = Jwt::new(CORP, "anyone").sign_hs256(CORP_SECRET);
    let bob = Jwt::new(CORP, "bob").sign_hs256(CORP_SECRET);

    // Team A's allow-all opens team A's route, not team B's nor the one of no namespace.
    assert_eq!(get("/team-a/x", &anyone).await.unwrap().status(), 200);
    assert_eq!(get("/team-b/x", &anyone).await.unwrap().status(), 403);
    assert_eq!(get("/x", &anyone).await.unwrap().status(), 403);
    let answer = get("/team-b/y", &bob).await.unwrap();
    assert_eq!(answer.status(), 200);
    let seen = &upstream.requests_to("/team-b/y")[0];
    assert_eq!(seen.header_values("x-portcullis-policy"), ["team-b/bob"]);
    // Team A's claim header is team A's business: stripped from team A's requests only.
    assert_eq!(seen.header_values("x-team"), ["forged"], "{seen:#?}");
    let seen = &upstream.requests_to("/team-a/x")[0];
    assert!(seen.header_values("x-team").is_empty(), "{seen:#?}");

    // Team A's issuer is trusted on team A's routes only.
    let a_token = Jwt::new(TEAM_A, "ann")
        .claim("team", "a")
        .sign_hs256(TEAM_A_SECRET);
    let answer = get("/team-a/z", &a_token).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        upstream.requests_to("/team-a/z")[0].header_values("x-team"),
        ["a"]
    );
    assert_eq!(get("/team-b/z", &a_token).await.unwrap().status(), 401);
    drop(envoy);

    // Under Istio's mTLS, the destination's SPIFFE identity names the namespace: a
    // CheckRequest as a sidecar sends it, with no route namespace.
    let mut client = portcullis.ext_authz_client().await;
    let by_identity = |principal: &str| {
        let mut request = check_request("GET", "/x", &[("authorization", &bearer(&anyone))], false);
        request.attributes.as_mut().unwrap().destination = Some(Peer {
            principal: principal.into(),
            ..Default::default()
        });
        request
    };
    let answer = send(
        &mut client,
        by_identity("spiffe://cluster.local/ns/team-a/sa/web"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-policy"), Some("team-a/open"));
    let answer = send(
        &mut client,
        by_identity("spiffe://cluster.local/ns/team-b/sa/web"),
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
}
