//! What a client can and cannot make portcullis believe, through the Envoy configurations
//! that `deploy/examples/envoy/` ships (both flavours), run by the real Envoy:
//! - `remote-addr` and `scheme` are Envoy's own view, never the client's
//!   `X-Forwarded-For` / `X-Forwarded-Proto`;
//! - paths are normalised before policies see them: `/public/../admin` never meets a
//!   `#^/public/` pattern;
//! - the root path and a query-only path are asked about, and answered, like any other.
//!
//! Requests are written byte for byte (`support::raw`): an HTTP client would normalise the
//! very paths under test before sending them.

use crate::support;

use support::envoy::{Envoy, SHIPPED_GRPC, SHIPPED_HTTP};
use support::portcullis::Portcullis;
use support::raw;
use support::steps::Steps;
use support::upstream::EchoServer;

/// Anonymous policies, each of which a forged header or an unnormalised path would open.
const POLICIES: &str = r#"
resourceType: AccessPolicy
id: public
engine: matcho
matcho: {uri: '#^/public/'}
---
resourceType: AccessPolicy
id: internal-network
engine: matcho
matcho: {uri: '#^/internal', remote-addr: '#^10\.'}
---
resourceType: AccessPolicy
id: https-only
engine: matcho
matcho: {uri: '#^/secure', scheme: https}
---
resourceType: AccessPolicy
id: plain-http
engine: matcho
matcho: {uri: '#^/plain', scheme: http, remote-addr: not-blank?}
---
resourceType: AccessPolicy
id: root
engine: matcho
matcho: {uri: /}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_grpc_config_keeps_clients_from_choosing_what_policies_see() {
    hardening(SHIPPED_GRPC).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_http_config_keeps_clients_from_choosing_what_policies_see() {
    hardening(SHIPPED_HTTP).await
}

async fn hardening(shipped: &str) {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("policies.yaml"), POLICIES).unwrap();
    let upstream = EchoServer::start();
    let mut portcullis = Portcullis::builder().config(config.path());
    if shipped == SHIPPED_HTTP {
        // As the shipped HTTP configuration says: its Envoy is the edge
        // (`use_remote_address: true`), so its X-Forwarded-For / -Proto are Envoy's own.
        portcullis = portcullis.arg("--http-trust-forwarded");
    }
    let portcullis = portcullis.start().await;
    let port = if shipped == SHIPPED_GRPC {
        portcullis.grpc_addr().port()
    } else {
        portcullis.http_addr().port()
    };
    let envoy = Envoy::shipped(shipped, port, upstream.port()).await;
    let mut steps = Steps::new();

    // What reached the upstream since the last look.
    let seen = std::sync::Mutex::new(0usize);
    let new_requests = || {
        let all = upstream.requests();
        let mut before = seen.lock().unwrap();
        let new: Vec<String> = all[*before..].iter().map(|r| r.path.clone()).collect();
        *before = all.len();
        new
    };
    let get = |target: &'static str, headers: &'static [(&'static str, &'static str)]| {
        raw::get(envoy.addr(), target, headers)
    };

    steps
        .run("a public path is allowed: the policies work", async {
            let r = get("/public/page", &[]).await;
            assert_eq!(r.status, 200, "{r:#?}");
            assert_eq!(new_requests(), ["/public/page"]);
        })
        .await;

    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
    ] {
        steps
            .run(&format!("{target} is judged as /admin: 401"), async {
                let r = get(target, &[]).await;
                assert_eq!(r.status, 401, "{r:#?}");
                assert_eq!(new_requests(), Vec::<String>::new());
            })
            .await;
    }

    for target in ["/public%2F..%2Fadmin", "/public/..%5Cadmin"] {
        steps
            .run(&format!("{target} is redirected, never forwarded"), async {
                let r = get(target, &[]).await;
                assert_eq!(r.status, 307, "{r:#?}");
                assert_eq!(
                    r.header("location").map(|l| l.ends_with("/admin")),
                    Some(true)
                );
                assert_eq!(new_requests(), Vec::<String>::new());
            })
            .await;
    }

    steps
        .run(
            "a client's X-Forwarded-For is not the remote address",
            async {
                let r = get("/internal", &[("x-forwarded-for", "10.9.9.9")]).await;
                assert_eq!(r.status, 401, "{r:#?}");
                let r = get(
                    "/internal",
                    &[
                        ("x-forwarded-for", "10.9.9.9"),
                        ("x-envoy-external-address", "10.9.9.9"),
                    ],
                )
                .await;
                assert_eq!(r.status, 401, "{r:#?}");
                assert_eq!(new_requests(), Vec::<String>::new());
            },
        )
        .await;

    steps
        .run("a client's X-Forwarded-Proto is not the scheme", async {
            let r = get("/secure", &[("x-forwarded-proto", "https")]).await;
            assert_eq!(r.status, 401, "{r:#?}");
            assert_eq!(new_requests(), Vec::<String>::new());
            // The scheme and the address policies see are Envoy's own.
            let r = get(
                "/plain",
                &[
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-for", "10.9.9.9"),
                ],
            )
            .await;
            assert_eq!(r.status, 200, "{r:#?}");
            assert_eq!(new_requests(), ["/plain"]);
        })
        .await;

    for target in ["/", "/?a=1"] {
        steps
            .run(
                &format!("the root path {target} is decided like any other"),
                async {
                    let r = get(target, &[]).await;
                    assert_eq!(r.status, 200, "{r:#?}");
                    assert_eq!(new_requests(), ["/"]);
                },
            )
            .await;
    }

    steps.finish();
    drop(envoy);
    drop(portcullis);
}

/// The issue's case: an Envoy that is not the edge (no `use_remote_address`, Envoy's
/// default) passes a client's `X-Forwarded-For` / `-Proto` on. Without
/// `--http-trust-forwarded` they decide nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envoy_that_passes_forwarded_headers_on_is_not_trusted_by_default() {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("policies.yaml"), POLICIES).unwrap();
    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder().config(config.path()).start().await;
    let envoy = Envoy::http_ext_authz(portcullis.http_addr().port(), upstream.port()).await;
    let get = |target: &'static str, headers: &'static [(&'static str, &'static str)]| {
        raw::get(envoy.addr(), target, headers)
    };
    let r = get("/internal", &[("x-forwarded-for", "10.9.9.9")]).await;
    assert_eq!(r.status, 401, "{r:#?}");
    let r = get("/secure", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(r.status, 401, "{r:#?}");
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}
