//! Against a real, certified OpenID provider (npm `oidc-provider`, see tests/oidc):
//! client_credentials JWT access tokens verified through its JWKS (given and discovered),
//! and its opaque tokens introspected, then refused after revocation once the cache allows.
//!
//! Needs node and `scripts/install-oidc-provider.sh`; never skipped silently.

mod tokens_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokens_support::*;

use portcullis::token::{TokenError, TokenKind};

const JWT_API: &str = "urn:portcullis:jwt-api";
const OPAQUE_API: &str = "urn:portcullis:opaque-api";

struct Provider {
    issuer: String,
    child: Child,
    http: reqwest::Client,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    fn start() -> Provider {
        let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "oidc"]
            .iter()
            .collect();
        if !dir.join("node_modules").join("oidc-provider").is_dir() {
            panic!(
                "tests/oidc/node_modules is missing: run scripts/install-oidc-provider.sh \
                 (needs node and npm) before cargo test"
            );
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg("0")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting node (run scripts/install-oidc-provider.sh): {e}")
            });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("READY ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(issuer) => issuer,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "oidc-provider did not start: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
        };
        Provider {
            issuer,
            child,
            http: reqwest::Client::new(),
        }
    }

    async fn token(&self, resource: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth("test-client", Some("test-client-secret"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", resource),
                ("scope", "read"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token: {answer}"))
            .to_string()
    }

    async fn revoke(&self, token: &str) {
        let status = self
            .http
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth("test-client", Some("test-client-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "revocation: {status}");
    }
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[tokio::test]
async fn token_oidc_provider_jwt_access_tokens_verify_through_its_jwks() {
    let op = Provider::start();
    let token = op.token(JWT_API).await;
    assert_eq!(token.split('.').count(), 3, "a JWT access token");

    for spec in [
        json!({"type": "jwt", "jwt": {"iss": op.issuer, "allowedAudiences": [JWT_API]},
               "jwks_uri": format!("{}/jwks", op.issuer)}),
        json!({"type": "jwt", "jwt": {"iss": op.issuer, "allowedAudiences": [JWT_API]},
               "openidDiscovery": true}),
    ] {
        let trust = trust(&[("oidc-provider", spec)]);
        let (verifier, _) = verifier(settings());
        let valid = verifier.validate(&trust, &token).await.unwrap();
        assert_eq!(valid.kind, TokenKind::Jwt);
        assert_eq!(valid.issuer(), Some(op.issuer.as_str()));
        assert_eq!(valid.client_id(), Some("test-client"));
        assert_eq!(valid.claims["scope"], "read");
    }

    // Another audience is refused; so is a token for it under the wrong introspector.
    let trust = trust(&[(
        "oidc-provider",
        json!({"type": "jwt", "jwt": {"iss": op.issuer, "allowedAudiences": ["urn:other"]},
               "jwks_uri": format!("{}/jwks", op.issuer)}),
    )]);
    let (verifier, _) = verifier(settings());
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::BadAudience
    );
}

#[tokio::test]
async fn token_oidc_provider_opaque_tokens_introspected_then_revoked() {
    let op = Provider::start();
    let token = op.token(OPAQUE_API).await;
    assert!(!token.contains('.'), "an opaque access token");

    let trust = trust(&[
        (
            "oidc-provider-opaque",
            json!({"type": "opaque", "cache_ttl": 1,
                   "jwt": {"allowedAudiences": [OPAQUE_API]},
                   "introspection_endpoint": {
                       "url": format!("{}/token/introspection", op.issuer),
                       "authorization": basic("portcullis", "portcullis-secret")}}),
        ),
        (
            "oidc-provider-jwt",
            json!({"type": "jwt", "jwt": {"iss": op.issuer},
                   "jwks_uri": format!("{}/jwks", op.issuer)}),
        ),
    ]);
    let (verifier, metrics) = verifier(settings());
    let valid = verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(valid.kind, TokenKind::Opaque);
    assert_eq!(valid.claims["active"], true);
    assert_eq!(valid.claims["client_id"], "test-client");
    assert_eq!(valid.claims["aud"], OPAQUE_API);
    assert_eq!(valid.issuer(), Some(op.issuer.as_str()));
    verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(
        events(&metrics, "introspection_call"),
        1,
        "second answer from the cache"
    );

    op.revoke(&token).await;
    // Within cache_ttl the cached answer may still be used; after it, never.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::Inactive
    );

    // A wrong introspection credential is the endpoint refusing us: unavailable, not allowed.
    let wrong = trust_with_credential(&op, &basic("portcullis", "wrong"));
    let (refused, _) = tokens_support::verifier(settings());
    let fresh = op.token(OPAQUE_API).await;
    let e = refused.validate(&wrong, &fresh).await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
}

fn trust_with_credential(op: &Provider, authorization: &str) -> portcullis::token::TrustStore {
    trust(&[(
        "oidc-provider-opaque",
        json!({"type": "opaque",
               "introspection_endpoint": {
                   "url": format!("{}/token/introspection", op.issuer),
                   "authorization": authorization}}),
    )])
}

#[test]
fn token_oidc_provider_install_script_is_there() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-oidc-provider.sh");
    assert!(script.is_file(), "{}", script.display());
}
