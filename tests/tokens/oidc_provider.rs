//! Against a real, certified OpenID provider (npm `oidc-provider`, see tests/oidc):
//! client_credentials JWT access tokens verified through its JWKS (given and discovered),
//! and its opaque tokens introspected, then refused after revocation once the cache allows.
//!
//! Needs node and `scripts/install-oidc-provider.sh`; never skipped silently.

use crate::support;

use std::time::Duration;

use serde_json::json;
use support::metrics::token_event;
use support::oidc_provider::{OidcProvider, INTROSPECTION_CLIENT, JWT_API, OPAQUE_API};
use support::tokens::basic;
use support::verifier::{settings, trust, verifier};

use portcullis::token::{TokenError, TokenKind};

#[tokio::test]
async fn token_oidc_provider_jwt_access_tokens_verify_through_its_jwks() {
    let op = OidcProvider::start().await;
    let token = op.client_credentials(JWT_API).await;
    assert_eq!(token.split('.').count(), 3, "a JWT access token");

    for spec in [
        json!({"type": "jwt", "jwt": {"iss": op.issuer(), "allowedAudiences": [JWT_API]},
               "jwks_uri": op.jwks_uri()}),
        json!({"type": "jwt", "jwt": {"iss": op.issuer(), "allowedAudiences": [JWT_API]},
               "openidDiscovery": true}),
    ] {
        let trust = trust(&[("oidc-provider", spec)]);
        let (verifier, _) = verifier(settings());
        let valid = verifier.validate(&trust, &token).await.unwrap();
        assert_eq!(valid.kind, TokenKind::Jwt);
        assert_eq!(valid.issuer(), Some(op.issuer()));
        assert_eq!(valid.client_id(), Some("test-client"));
        assert_eq!(valid.claims["scope"], "read");
    }

    // Another audience is refused; so is a token for it under the wrong introspector.
    let trust = trust(&[(
        "oidc-provider",
        json!({"type": "jwt", "jwt": {"iss": op.issuer(), "allowedAudiences": ["urn:other"]},
               "jwks_uri": op.jwks_uri()}),
    )]);
    let (verifier, _) = verifier(settings());
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::BadAudience
    );
}

#[tokio::test]
async fn token_oidc_provider_opaque_tokens_introspected_then_revoked() {
    let op = OidcProvider::start().await;
    let token = op.client_credentials(OPAQUE_API).await;
    assert!(!token.contains('.'), "an opaque access token");

    let trust = trust(&[
        (
            "oidc-provider-opaque",
            json!({"type": "opaque", "cache_ttl": 1,
                   "jwt": {"allowedAudiences": [OPAQUE_API]},
                   "introspection_endpoint": {
                       "url": op.introspection_url(),
                       "authorization": op.introspection_authorization()}}),
        ),
        (
            "oidc-provider-jwt",
            json!({"type": "jwt", "jwt": {"iss": op.issuer()},
                   "jwks_uri": op.jwks_uri()}),
        ),
    ]);
    let (verifier, metrics) = verifier(settings());
    let valid = verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(valid.kind, TokenKind::Opaque);
    assert_eq!(valid.claims["active"], true);
    assert_eq!(valid.claims["client_id"], "test-client");
    assert_eq!(valid.claims["aud"], OPAQUE_API);
    assert_eq!(valid.issuer(), Some(op.issuer()));
    verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(
        token_event(&metrics, "introspection_call"),
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
    let wrong = trust_with_credential(&op, &basic(INTROSPECTION_CLIENT.0, "wrong"));
    let (refused, _) = support::verifier::verifier(settings());
    let fresh = op.client_credentials(OPAQUE_API).await;
    let e = refused.validate(&wrong, &fresh).await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
}

fn trust_with_credential(op: &OidcProvider, authorization: &str) -> portcullis::token::TrustStore {
    trust(&[(
        "oidc-provider-opaque",
        json!({"type": "opaque",
               "introspection_endpoint": {
                   "url": op.introspection_url(),
                   "authorization": authorization}}),
    )])
}

#[test]
fn token_oidc_provider_install_script_is_there() {
    let script = support::repo_path("scripts/install-oidc-provider.sh");
    assert!(script.is_file(), "{}", script.display());
}
