//! The HTTP flavour fails closed on forwarded headers: a client's `X-Forwarded-For` and
//! `X-Forwarded-Proto` become `remote-addr` and `scheme` only with `--http-trust-forwarded`
//! (set when Envoy is the edge with `use_remote_address: true`).

use crate::support;

use support::ext_authz::http_check;
use support::portcullis::Portcullis;

/// Anonymous policies that a forged header would open.
const POLICIES: &str = r#"
resourceType: AccessPolicy
id: internal-network
engine: matcho
matcho: {uri: '#^/internal', remote-addr: 10.9.9.9}
---
resourceType: AccessPolicy
id: https-only
engine: matcho
matcho: {uri: '#^/secure', scheme: https}
---
resourceType: AccessPolicy
id: plain-http
engine: matcho
matcho: {uri: '#^/plain', scheme: http}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_count_only_with_http_trust_forwarded() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("policies.yaml"), POLICIES).unwrap();
    let forged = [
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-proto", "https"),
    ];

    // The default: a client's copies are ignored. No remote-addr, and the scheme is http.
    let p = Portcullis::builder().config(config.path()).start().await;
    assert_eq!(
        http_check(&p, "/internal", &forged).await.status.as_u16(),
        401
    );
    assert_eq!(
        http_check(&p, "/secure", &forged).await.status.as_u16(),
        401
    );
    assert_eq!(http_check(&p, "/plain", &forged).await.status.as_u16(), 200);
    drop(p);

    // Trusted (Envoy is the edge): the last X-Forwarded-For entry and X-Forwarded-Proto.
    let p = Portcullis::builder()
        .config(config.path())
        .arg("--http-trust-forwarded")
        .start()
        .await;
    assert_eq!(
        http_check(&p, "/internal", &forged).await.status.as_u16(),
        200
    );
    assert_eq!(
        http_check(&p, "/secure", &forged).await.status.as_u16(),
        200
    );
    assert_eq!(http_check(&p, "/plain", &forged).await.status.as_u16(), 401);
    // The environment variable works as the flag does.
    drop(p);
    let p = Portcullis::builder()
        .config(config.path())
        .env("PORTCULLIS_HTTP_TRUST_FORWARDED", "true")
        .start()
        .await;
    assert_eq!(
        http_check(&p, "/internal", &forged).await.status.as_u16(),
        200
    );
}
