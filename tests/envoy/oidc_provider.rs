//! End to end with real components only: HTTP through real Envoy, whose gRPC ext_authz
//! asks a real `portcullis serve`, trusting tokens of the real npm `oidc-provider`
//! (tests/oidc): a client_credentials JWT verified through the provider's `jwks_uri`, an
//! opaque token introspected (RFC 7662) and refused once revoked and out of the cache,
//! and tokens the provider never issued.
//!
//! Needs Envoy and node: `scripts/install-test-deps.sh`. Fails without them, never skips.

use crate::support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::envoy::Envoy;
use support::ext_authz::{self, Answer};
use support::oidc_provider::{OidcProvider, JWT_API, OPAQUE_API, TEST_CLIENT};
use support::portcullis::Portcullis;
use support::steps::Steps;
use support::tokens::{bearer, forge_rs256, jwt_claims};
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
    support::write_documents(&dir.join("oidc-provider.yaml"), &docs);
}

struct Harness {
    envoy: Envoy,
    upstream: EchoServer,
}

impl Harness {
    /// `GET path` through Envoy with `Authorization: Bearer <token>`, and spoofed copies of
    /// the identity headers that must never reach the upstream.
    async fn get(&self, path: &str, token: &str) -> Answer {
        let authorization = bearer(token);
        let headers = [
            ("authorization", authorization.as_str()),
            ("x-portcullis-subject", "mallory"),
            ("x-portcullis-issuer", "https://evil.example.com"),
            ("x-portcullis-policy", "spoofed"),
        ];
        ext_authz::get(&self.envoy.url(path), &headers).await
    }

    /// Allowed: 200 from the upstream, which saw the request once.
    async fn expect_allowed(&self, path: &str, token: &str) -> Echoed {
        let answer = self.get(path, token).await;
        self.upstream.answered_once(&answer, path)
    }

    /// 401 with the RFC 6750 `invalid_token` challenge and a JSON body that does not
    /// repeat the token; the upstream never saw it.
    fn assert_invalid_token(&self, path: &str, token: &str, answer: &Answer) {
        answer.assert_denial(path, StatusCode::UNAUTHORIZED, true);
        assert!(
            !answer.body.contains(token),
            "{path}: the deny body repeats the token"
        );
        self.upstream.assert_never_saw(path);
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
    let h = Harness { envoy, upstream };
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
                seen.assert_identity(Some(sub), Some(op.issuer()), Some(JWT_POLICY));
            },
        )
        .await;

    steps
        .run(
            "a JWT with the provider's iss and kid but another key's signature: 401",
            async {
                // Another key's signature: test key rsa-a, which the provider never had.
                let forged = forge_rs256(&jwt, "rsa-a", None);
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
                // The issuer is the introspection answer's `iss`. A client_credentials
                // token has no end user: the answer has no `sub`, and the client's spoofed
                // subject is removed, not passed on.
                seen.assert_identity(None, Some(op.issuer()), Some(OPAQUE_POLICY));

                op.revoke(&opaque).await;
                assert_eq!(
                    op.introspect(&opaque).await,
                    json!({"active": false}),
                    "the provider itself no longer vouches for it"
                );
                let revoked_at = Instant::now();
                // Until the cached answer is older than cache_ttl it may still pass; after
                // that never. Poll instead of sleeping a fixed time. The time that counts
                // is when a request was sent, not when its answer came: a request sent
                // after cache_ttl is decided after it too, however slow the machine.
                let mut attempt = 0;
                let (h, opaque) = (&h, &opaque);
                let (path, answer) = support::eventually("the revoked token to be refused", || {
                    attempt += 1;
                    let path = format!("/oidc/opaque-revoked/{attempt}");
                    async move {
                        let sent = revoked_at.elapsed();
                        let answer = h.get(&path, opaque).await;
                        if answer.status != StatusCode::OK {
                            return Some((path, answer));
                        }
                        assert!(
                            sent <= CACHE_TTL + Duration::from_millis(500),
                            "the revoked token still passed when sent {sent:?} after revocation (cache_ttl {CACHE_TTL:?})"
                        );
                        None
                    }
                })
                .await;
                h.assert_invalid_token(&path, opaque, &answer);
                // And it stays refused.
                let again = h.get("/oidc/opaque-revoked/again", opaque).await;
                h.assert_invalid_token("/oidc/opaque-revoked/again", opaque, &again);
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
