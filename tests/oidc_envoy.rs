//! End to end with real components only: HTTP through real Envoy, whose gRPC ext_authz
//! asks a real `portcullis serve`, trusting tokens of the real npm `oidc-provider`
//! (tests/oidc): a client_credentials JWT verified through the provider's `jwks_uri`, an
//! opaque token introspected (RFC 7662) and refused once revoked and out of the cache,
//! and tokens the provider never issued.
//!
//! Needs Envoy and node: `scripts/install-test-deps.sh`. Fails without them, never skips.

mod oidc_support;
mod support;

use std::time::{Duration, Instant};

use oidc_support::{jwt_claims, OidcProvider, JWT_API, OPAQUE_API, TEST_CLIENT};
use reqwest::StatusCode;
use serde_json::json;
use support::envoy::Envoy;
use support::portcullis::Portcullis;
use support::steps::Steps;
use support::upstream::{EchoServer, Echoed};

const JWT_INTROSPECTOR: &str = "oidc-provider-jwt";
const OPAQUE_INTROSPECTOR: &str = "oidc-provider-opaque";
const JWT_POLICY: &str = "oidc-provider-jwt-issuer";
/// The external-auth-server tutorial's opaque-token policy.
const OPAQUE_POLICY: &str = "external-auth-server";
/// The opaque introspector's `cache_ttl`: how long a revoked token may still pass.
const CACHE_TTL: Duration = Duration::from_secs(1);

/// Aidbox-style resources for the provider: one JWT introspector on its JWKS, one opaque
/// introspector on its introspection endpoint, a policy for each kind of token.
fn write_config(dir: &std::path::Path, op: &OidcProvider) {
    let docs = [
        json!({
            "resourceType": "TokenIntrospector",
            "id": JWT_INTROSPECTOR,
            "type": "jwt",
            "jwt": {"iss": op.issuer()},
            "jwks_uri": op.jwks_uri(),
        }),
        json!({
            "resourceType": "TokenIntrospector",
            "id": OPAQUE_INTROSPECTOR,
            "type": "opaque",
            "cache_ttl": CACHE_TTL.as_secs(),
            "introspection_endpoint": {
                "url": op.introspection_url(),
                "authorization": op.introspection_authorization(),
            },
        }),
        json!({
            "resourceType": "AccessPolicy",
            "id": JWT_POLICY,
            "engine": "matcho",
            "matcho": {"jwt": {"iss": op.issuer()}},
        }),
        json!({
            "resourceType": "AccessPolicy",
            "id": OPAQUE_POLICY,
            "engine": "matcho",
            "matcho": {"token": {"active": true}},
        }),
    ];
    let text = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(dir.join("oidc-provider.yaml"), text).expect("write config");
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn echoed(&self) -> Echoed {
        assert_eq!(self.status, StatusCode::OK, "not from upstream: {self:#?}");
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("upstream body is not the echo JSON ({e}): {}", self.body))
    }
}

struct Harness {
    http: reqwest::Client,
    envoy: Envoy,
    upstream: EchoServer,
}

impl Harness {
    /// `GET path` through Envoy with `Authorization: Bearer <token>`, and spoofed copies of
    /// the identity headers that must never reach the upstream.
    async fn get(&self, path: &str, token: &str) -> Answer {
        let response = self
            .http
            .get(self.envoy.url(path))
            .bearer_auth(token)
            .header("x-portcullis-subject", "mallory")
            .header("x-portcullis-issuer", "https://evil.example.com")
            .header("x-portcullis-policy", "spoofed")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}"));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        Answer {
            status: response.status(),
            www_authenticate: header("www-authenticate"),
            content_type: header("content-type"),
            body: response.text().await.expect("read body"),
        }
    }

    /// Allowed: 200 from the upstream, which saw the request once.
    async fn expect_allowed(&self, path: &str, token: &str) -> Echoed {
        let answer = self.get(path, token).await;
        let seen = answer.echoed();
        assert_eq!(seen.path, path);
        assert_eq!(
            self.upstream.requests_to(path).len(),
            1,
            "upstream saw {path} once"
        );
        seen
    }

    /// 401 with the RFC 6750 `invalid_token` challenge and a JSON body that does not
    /// repeat the token; the upstream never saw it.
    fn assert_invalid_token(&self, path: &str, token: &str, answer: &Answer) {
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {answer:#?}"
        );
        let challenge = answer
            .www_authenticate
            .as_deref()
            .unwrap_or_else(|| panic!("{path}: 401 without WWW-Authenticate: {answer:#?}"));
        assert!(
            challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
            "{path}: WWW-Authenticate {challenge:?}"
        );
        assert!(
            answer
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{path}: {answer:#?}"
        );
        serde_json::from_str::<serde_json::Value>(&answer.body)
            .unwrap_or_else(|e| panic!("{path}: deny body is not JSON ({e}): {:?}", answer.body));
        assert!(
            !answer.body.contains(token),
            "{path}: the deny body repeats the token"
        );
        assert!(
            self.upstream.requests_to(path).is_empty(),
            "{path}: denied, yet the upstream saw it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_tokens_through_envoy() {
    let op = OidcProvider::start().await;
    let config = tempfile::tempdir().expect("tempdir");
    write_config(config.path(), &op);
    let upstream = EchoServer::start();
    let portcullis = Portcullis::builder().config(config.path()).start().await;
    let envoy = Envoy::grpc_ext_authz(portcullis.grpc_addr().port(), upstream.port()).await;
    let h = Harness {
        http: support::http_client(),
        envoy,
        upstream,
    };
    let mut tokens: Vec<String> = Vec::new();
    let mut steps = Steps::new();

    let jwt = op.client_credentials(JWT_API).await;
    tokens.push(jwt.clone());
    steps
        .run(
            "client_credentials JWT, verified through jwks_uri: 200 with identity headers",
            async {
                let claims = jwt_claims(&jwt);
                assert_eq!(claims["iss"], op.issuer(), "the provider's own iss");
                assert_eq!(claims["client_id"], TEST_CLIENT.0);
                let sub = claims["sub"].as_str().expect("the JWT has a sub");
                let seen = h.expect_allowed("/oidc/jwt", &jwt).await;
                assert_eq!(seen.header("x-portcullis-subject"), Some(sub), "{seen:#?}");
                assert_eq!(
                    seen.header("x-portcullis-issuer"),
                    Some(op.issuer()),
                    "{seen:#?}"
                );
                assert_eq!(
                    seen.header("x-portcullis-policy"),
                    Some(JWT_POLICY),
                    "{seen:#?}"
                );
            },
        )
        .await;

    steps
        .run(
            "a JWT with the provider's iss and kid but another key's signature: 401",
            async {
                let forged = oidc_support::forge_rs256(&jwt);
                assert_eq!(jwt_claims(&forged), jwt_claims(&jwt));
                assert_ne!(forged, jwt);
                let answer = h.get("/oidc/jwt-forged", &forged).await;
                h.assert_invalid_token("/oidc/jwt-forged", &forged, &answer);
            },
        )
        .await;

    let opaque = op.client_credentials(OPAQUE_API).await;
    tokens.push(opaque.clone());
    steps
        .run(
            "opaque token, introspected, allowed by the tutorial's token.active policy; \
             after revocation and cache_ttl: 401 invalid_token",
            async {
                assert!(!opaque.contains('.'), "an opaque access token");
                let seen = h.expect_allowed("/oidc/opaque", &opaque).await;
                assert_eq!(
                    seen.header("x-portcullis-policy"),
                    Some(OPAQUE_POLICY),
                    "{seen:#?}"
                );
                assert_eq!(
                    seen.header("x-portcullis-issuer"),
                    Some(op.issuer()),
                    "the introspection answer's iss: {seen:#?}"
                );
                // A client_credentials token has no end user: the answer has no `sub`,
                // and the client's spoofed subject is removed, not passed on.
                assert_eq!(seen.header("x-portcullis-subject"), None, "{seen:#?}");

                op.revoke(&opaque).await;
                assert_eq!(
                    op.introspect(&opaque).await,
                    json!({"active": false}),
                    "the provider itself no longer vouches for it"
                );
                let revoked_at = Instant::now();
                // Until the cached answer is older than cache_ttl it may still pass; after
                // that never. Poll instead of sleeping a fixed time.
                let deadline = revoked_at + CACHE_TTL + Duration::from_secs(3);
                let mut attempt = 0;
                let (path, answer) = loop {
                    attempt += 1;
                    let path = format!("/oidc/opaque-revoked/{attempt}");
                    let answer = h.get(&path, &opaque).await;
                    if answer.status != StatusCode::OK {
                        break (path, answer);
                    }
                    assert!(
                        revoked_at.elapsed() <= CACHE_TTL + Duration::from_millis(500),
                        "the revoked token still passed {:?} after revocation (cache_ttl {CACHE_TTL:?})",
                        revoked_at.elapsed()
                    );
                    assert!(Instant::now() < deadline, "still allowed at the deadline");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                h.assert_invalid_token(&path, &opaque, &answer);
                // And it stays refused.
                let again = h.get("/oidc/opaque-revoked/again", &opaque).await;
                h.assert_invalid_token("/oidc/opaque-revoked/again", &opaque, &again);
            },
        )
        .await;

    let garbage = [
        (
            "not-a-token",
            "garbage-token-the-provider-never-issued".to_string(),
        ),
        (
            "jwt-shaped-garbage",
            "eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_string(),
        ),
    ];
    for (name, token) in &garbage {
        steps
            .run(&format!("{name}: 401 invalid_token"), async {
                let path = format!("/oidc/garbage/{name}");
                let answer = h.get(&path, token).await;
                h.assert_invalid_token(&path, token, &answer);
            })
            .await;
    }

    steps
        .run("portcullis logged no token", async {
            let log = portcullis.log();
            for token in &tokens {
                // An opaque token whole; a JWT's claims and signature (its header is shared).
                let parts: Vec<&str> = token.split('.').collect();
                let secret_parts = if parts.len() == 3 {
                    &parts[1..]
                } else {
                    &parts[..]
                };
                for part in secret_parts.iter().filter(|p| p.len() >= 16) {
                    assert!(!log.contains(part), "portcullis logged part of a token");
                }
            }
        })
        .await;

    // On failure this panics while the processes live; their logs print as they drop.
    if steps.any_failed() {
        eprintln!("{}", op.log_report());
    }
    steps.finish();
    drop(portcullis);
}
