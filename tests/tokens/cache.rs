//! The verified-token cache: a repeated JWT is not verified again, but never outlives its
//! `exp`, its introspector's configuration, or (for JWKS keys) `cache_ttl`.

use crate::support;

use std::time::Duration;

use serde_json::{json, Value};
use support::metrics::token_event;
use support::stub_idp::StubIdp;
use support::tokens::{jwks, now, rs256, Jwt};
use support::verifier::{settings, trust, verifier};

use portcullis::token::TokenError;

const ISS: &str = "https://hs.example";

fn hs256(secret: &str, extra: Value) -> String {
    Jwt::new(ISS, "alice").claims_from(extra).sign_hs256(secret)
}

fn secret_spec(secret: &str) -> Value {
    json!({"type": "jwt", "jwt": {"iss": ISS, "secret": secret, "leewaySeconds": 0}})
}

#[tokio::test]
async fn token_repeated_jwt_is_a_cache_hit() {
    let trust = trust(&[("hs", secret_spec("first-secret"))]);
    let (verifier, metrics) = verifier(settings());
    let token = hs256("first-secret", json!({}));
    for _ in 0..10 {
        verifier.validate(&trust, &token).await.unwrap();
    }
    assert_eq!(token_event(&metrics, "verified_cache_miss"), 1);
    assert_eq!(token_event(&metrics, "verified_cache_hit"), 9);
    // A refusal is never cached as valid; it is remembered as a refusal for a few
    // seconds, so that a flood of one forged token costs one signature check.
    let forged = hs256("wrong-secret", json!({}));
    for _ in 0..3 {
        assert_eq!(
            verifier.validate(&trust, &forged).await.unwrap_err(),
            TokenError::BadSignature
        );
    }
    assert_eq!(token_event(&metrics, "verified_cache_miss"), 2);
    assert_eq!(token_event(&metrics, "refused_cache_hit"), 2);
    // Under a changed configuration the refusal is not reused: the new secret accepts it.
    let rotated = support::verifier::trust(&[("hs", secret_spec("wrong-secret"))]);
    verifier.validate(&rotated, &forged).await.unwrap();
}

#[tokio::test]
async fn token_cache_never_serves_past_exp() {
    let trust = trust(&[("hs", secret_spec("first-secret"))]);
    let (verifier, _) = verifier(settings());
    let token = hs256("first-secret", json!({"exp": now() + 1}));
    verifier.validate(&trust, &token).await.unwrap();
    verifier.validate(&trust, &token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::Expired
    );
}

#[tokio::test]
async fn token_cache_is_tied_to_the_introspector_configuration() {
    let (verifier, _) = verifier(settings());
    let token = hs256("first-secret", json!({}));
    let before = trust(&[("hs", secret_spec("first-secret"))]);
    verifier.validate(&before, &token).await.unwrap();

    // The secret was rotated: the cached verification must not vouch for the token.
    let after = trust(&[("hs", secret_spec("second-secret"))]);
    assert_eq!(
        verifier.validate(&after, &token).await.unwrap_err(),
        TokenError::BadSignature
    );
    // Audiences now required: the same token is checked against them.
    let mut with_aud = secret_spec("first-secret");
    with_aud["jwt"]["allowedAudiences"] = json!(["api"]);
    let stricter = trust(&[("hs", with_aud)]);
    assert_eq!(
        verifier.validate(&stricter, &token).await.unwrap_err(),
        TokenError::BadAudience
    );
    // The introspector removed altogether.
    let gone = trust(&[]);
    assert!(matches!(
        verifier.validate(&gone, &token).await,
        Err(TokenError::UntrustedIssuer(_))
    ));
    // And the original configuration back: valid again.
    verifier.validate(&before, &token).await.unwrap();
}

#[tokio::test]
async fn token_cached_jwks_verification_lasts_at_most_cache_ttl() {
    let idp = StubIdp::start(jwks(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": "https://idp.example"},
               "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    let (verifier, metrics) = verifier(settings());
    let token = rs256("https://idp.example", json!({}));
    verifier.validate(&trust, &token).await.unwrap();
    verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(token_event(&metrics, "verified_cache_hit"), 1);

    // The issuer withdraws the key: once cache_ttl has passed, tokens it signed stop
    // verifying, cached or not.
    idp.set_jwks(jwks(&["rsa-b"]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first request after cache_ttl is verified again, with the stale set (served
    // while a refresh runs in the background), not served from the token cache.
    verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(token_event(&metrics, "verified_cache_miss"), 2);
    assert_eq!(token_event(&metrics, "jwks_stale_served"), 1);
    // Once the refresh has landed, the withdrawn key verifies nothing; until then only
    // the stale set may answer, and it still knows the key.
    let e = support::eventually("the refreshed key set to refuse the token", || async {
        verifier.validate(&trust, &token).await.err()
    })
    .await;
    assert_eq!(e, TokenError::UnknownKey);
}
