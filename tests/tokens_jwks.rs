//! JWKS introspectors against a stub identity provider: rotation, outages, slowness,
//! forged kids, discovery, key types, and the headers that must never choose a key.

mod tokens_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokens_support::*;

use portcullis::token::{TokenError, TokenKind, TokenSettings};

const ISS: &str = "https://idp.example";

fn jwks_spec(uri: &str) -> Value {
    json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": uri})
}

fn keys(names: &[&str]) -> Value {
    json!({"keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>()})
}

#[tokio::test]
async fn token_jwks_verifies_rs256_and_caches_keys() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    for i in 0..5 {
        let token = rs256(ISS, json!({"n": i}));
        let valid = verifier.validate(&trust, &token).await.unwrap();
        assert_eq!(valid.kind, TokenKind::Jwt);
        assert_eq!(valid.subject(), Some("alice"));
        assert_eq!(valid.introspector.name, "idp");
    }
    assert_eq!(idp.jwks_fetches(), 1, "keys are kept for cache_ttl");
}

#[tokio::test]
async fn token_jwks_key_types_rsa_ec_okp() {
    let idp = StubIdp::start(keys(&["rsa-a", "ec-p256", "ec-p384", "ed25519"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let cases = [
        ("rsa-a", Algorithm::RS256),
        ("rsa-a", Algorithm::RS512),
        ("rsa-a", Algorithm::PS256),
        ("ec-p256", Algorithm::ES256),
        ("ec-p384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let token = sign(key, alg, Some(key), &claims(ISS, json!({})));
        let r = verifier.validate(&trust, &token).await;
        assert!(r.is_ok(), "{key} {alg:?}: {r:?}");
    }
    // A curve's key verifies only its own algorithm.
    let token = sign(
        "ec-p256",
        Algorithm::ES256,
        Some("ec-p384"),
        &claims(ISS, json!({})),
    );
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::AlgorithmNotAllowed("ES256".into())
    );
}

#[tokio::test]
async fn token_jwks_jwk_alg_restricts_token_alg() {
    let idp = StubIdp::start(json!({"keys": [jwk_with("rsa-a", json!({"alg": "RS256"}))]})).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let ps = sign(
        "rsa-a",
        Algorithm::PS256,
        Some("rsa-a"),
        &claims(ISS, json!({})),
    );
    assert!(matches!(
        verifier.validate(&trust, &ps).await,
        Err(TokenError::AlgorithmNotAllowed(_))
    ));
    assert!(verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .is_ok());
}

#[tokio::test]
async fn token_jwks_never_hmac_with_a_public_key() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    // The classic confusion: HS256 keyed with the RSA public key's bytes.
    for secret in [
        fixture("rsa-a.pub.pem"),
        jwk("rsa-a")["n"].as_str().unwrap().to_string(),
    ] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-a".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims(ISS, json!({})),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier.validate(&trust, &token).await.unwrap_err(),
            TokenError::AlgorithmNotAllowed("HS256".into())
        );
    }
    assert_eq!(idp.jwks_fetches(), 0, "refused before any fetch");
}

#[tokio::test]
async fn token_static_rsa_key_never_verifies_hmac() {
    let trust = trust(&[(
        "static",
        json!({"type": "jwt", "jwt": {"iss": ISS, "keys": [
            {"kty": "RSA", "alg": "RS256", "format": "PEM", "pub": fixture("rsa-a.pub.pem")}
        ]}}),
    )]);
    let (verifier, _) = verifier(settings());
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(ISS, json!({})),
        &EncodingKey::from_secret(fixture("rsa-a.pub.pem").as_bytes()),
    )
    .unwrap();
    assert!(matches!(
        verifier.validate(&trust, &token).await,
        Err(TokenError::AlgorithmNotAllowed(_))
    ));
    assert!(verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .is_ok());
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn token_alg_none_and_odd_headers_are_refused() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let payload = b64(&claims(ISS, json!({})));
    for header in [
        json!({"alg": "none", "kid": "rsa-a"}),
        json!({"alg": "None"}),
        json!({"alg": "RS256", "kid": 7}),
        json!({"alg": "RS256", "kid": "rsa-a", "crit": ["exp"]}),
    ] {
        let token = format!("{}.{payload}.", b64(&header));
        assert!(
            matches!(
                verifier.validate(&trust, &token).await,
                Err(TokenError::Malformed(_))
            ),
            "{header}"
        );
    }
}

#[tokio::test]
async fn token_jwk_jku_x5u_x5c_headers_never_choose_a_key() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    // The attacker's own key set, at a URL they name in `jku`/`x5u`.
    let attacker = StubIdp::start(keys(&["rsa-b"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-a".into());
    header.jku = Some(attacker.jwks_uri());
    header.x5u = Some(attacker.jwks_uri());
    header.x5c = Some(vec!["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".into()]);
    header.jwk = Some(serde_json::from_value(jwk("rsa-b")).unwrap());
    let token =
        jsonwebtoken::encode(&header, &claims(ISS, json!({})), &encoding_key("rsa-b")).unwrap();
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::BadSignature
    );
    assert_eq!(attacker.jwks_fetches(), 0);
    assert_eq!(
        attacker
            .other_hits
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn token_kid_is_an_opaque_string() {
    let odd = "../../etc/passwd?x=1&y=ü \"quoted\"";
    let idp = StubIdp::start(json!({"keys": [jwk_with("rsa-a", json!({"kid": odd}))]})).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let token = sign(
        "rsa-a",
        Algorithm::RS256,
        Some(odd),
        &claims(ISS, json!({})),
    );
    assert!(verifier.validate(&trust, &token).await.is_ok());
    // Case and whitespace matter: no normalisation.
    let token = sign(
        "rsa-a",
        Algorithm::RS256,
        Some(&odd.to_uppercase()),
        &claims(ISS, json!({})),
    );
    assert_eq!(
        verifier.validate(&trust, &token).await.unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test]
async fn token_jwks_rotation_new_kid_accepted_after_refetch() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, metrics) = verifier(settings());
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();

    idp.set_jwks(keys(&["rsa-b"]));
    let rotated = sign(
        "rsa-b",
        Algorithm::RS256,
        Some("rsa-b"),
        &claims(ISS, json!({})),
    );
    verifier.validate(&trust, &rotated).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(events(&metrics, "jwks_refetch_unknown_kid"), 1);

    // The old key left the set: a new token signed with it is refused, and asking again
    // within the refetch interval costs the identity provider nothing.
    let old = rs256(ISS, json!({"n": 2}));
    assert_eq!(
        verifier.validate(&trust, &old).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_jwks_forged_kid_burst_is_bounded() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = Arc::new(trust(&[("idp", jwks_spec(&idp.jwks_uri()))]));
    let (verifier, metrics) = verifier(settings());
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();

    // Signed beforehand: the burst itself should cost only what portcullis does.
    let forged: Vec<String> = (0..200)
        .map(|i| {
            let claims = claims(ISS, json!({"n": i}));
            sign(
                "ec-p256",
                Algorithm::ES256,
                Some(&format!("forged-{i}")),
                &claims,
            )
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in forged {
        let (verifier, trust) = (verifier.clone(), trust.clone());
        tasks.push(tokio::spawn(async move {
            verifier.validate(&trust, &token).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), TokenError::UnknownKey);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // One initial fetch, one refetch for the whole burst.
    assert_eq!(idp.jwks_fetches(), 2);
    // Later forged kids, within the interval, are refused without a fetch or a wait.
    let before = events(&metrics, "jwks_refetch_rate_limited");
    for i in 0..20 {
        let forged = sign(
            "ec-p256",
            Algorithm::ES256,
            Some(&format!("late-{i}")),
            &claims(ISS, json!({})),
        );
        assert_eq!(
            verifier.validate(&trust, &forged).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(events(&metrics, "jwks_refetch_rate_limited"), before + 20);
    assert_eq!(idp.jwks_fetches(), 2);
    // Real tokens keep working throughout.
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 1})))
        .await
        .unwrap();
}

#[tokio::test]
async fn token_jwks_refetch_allowed_again_after_interval() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(TokenSettings {
        jwks_refetch_interval: Duration::from_millis(300),
        ..settings()
    });
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    let forged = |i: u32| {
        sign(
            "rsa-a",
            Algorithm::RS256,
            Some(&format!("f{i}")),
            &claims(ISS, json!({})),
        )
    };
    for i in 0..10 {
        let _ = verifier.validate(&trust, &forged(i)).await;
    }
    assert_eq!(idp.jwks_fetches(), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = verifier.validate(&trust, &forged(99)).await;
    assert_eq!(idp.jwks_fetches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_jwks_concurrent_misses_share_one_fetch() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    idp.set_delay(Duration::from_millis(200));
    let trust = Arc::new(trust(&[("idp", jwks_spec(&idp.jwks_uri()))]));
    let (verifier, _) = verifier(settings());
    let tokens: Vec<String> = (0..50).map(|i| rs256(ISS, json!({"n": i}))).collect();
    let mut tasks = Vec::new();
    for token in tokens {
        let (verifier, trust) = (verifier.clone(), trust.clone());
        tasks.push(tokio::spawn(async move {
            verifier.validate(&trust, &token).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn token_jwks_outage_cached_keys_keep_working() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    let (verifier, metrics) = verifier(settings());
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();

    idp.set_mode(Mode::Failing);
    // Past cache_ttl: the keys are stale, the refresh fails, the keys still verify.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..3 {
        let token = rs256(ISS, json!({"n": i}));
        let started = Instant::now();
        verifier.validate(&trust, &token).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "never waits on a refresh"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(events(&metrics, "jwks_fetch_error") >= 1);

    // An unknown kid is refused promptly: Unavailable (we could not ask), never allowed.
    let unknown = sign(
        "rsa-b",
        Algorithm::RS256,
        Some("rsa-b"),
        &claims(ISS, json!({})),
    );
    let again = sign(
        "rsa-b",
        Algorithm::RS256,
        Some("rsa-c"),
        &claims(ISS, json!({})),
    );
    let started = Instant::now();
    let e = verifier.validate(&trust, &unknown).await.unwrap_err();
    assert!(
        matches!(e, TokenError::UnknownKey | TokenError::Unavailable(_)),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(700));
    let started = Instant::now();
    assert!(verifier.validate(&trust, &again).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "rate-limited: no wait at all"
    );

    // Endpoint back: the stale keys are refreshed.
    idp.set_mode(Mode::Up);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = idp.jwks_fetches();
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 9})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.jwks_fetches(), before + 1);
}

/// Stale keys keep verifying while the endpoint fails, but only for `jwks_max_stale` past
/// `cache_ttl`: a key the issuer withdrew must not verify for as long as an attacker can
/// keep its endpoint failing. Past the bound the issuer's tokens fail closed (503).
#[tokio::test]
async fn token_jwks_stale_keys_stop_verifying_after_the_bound() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    let (verifier, metrics) = verifier(TokenSettings {
        jwks_max_stale: Duration::from_secs(2),
        ..settings()
    });
    let fetched = Instant::now();
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    idp.set_mode(Mode::Failing);

    // Stale (past cache_ttl), within the bound: still verifies.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 1})))
        .await
        .unwrap();
    assert!(
        fetched.elapsed() < Duration::from_secs(3),
        "the step above ran late"
    );
    assert!(events(&metrics, "jwks_stale_served") >= 1);
    assert_eq!(events(&metrics, "jwks_stale_expired"), 0);

    // Past cache_ttl + jwks_max_stale: refused as unavailable, never allowed.
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(fetched.elapsed()) + Duration::from_millis(100),
    )
    .await;
    let e = verifier
        .validate(&trust, &rs256(ISS, json!({"n": 2})))
        .await
        .unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert!(events(&metrics, "jwks_stale_expired") >= 1);

    // The endpoint back: the next fetch (after the retry back-off) brings the keys back.
    idp.set_mode(Mode::Up);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match verifier
            .validate(&trust, &rs256(ISS, json!({"n": 3})))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                assert!(e.is_internal(), "{e:?}");
                assert!(Instant::now() < deadline, "keys never came back: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn token_jwks_endpoint_down_from_start_fails_closed() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    idp.shut_down();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    let (verifier, _) = verifier(settings());
    let (first, second) = (rs256(ISS, json!({})), rs256(ISS, json!({"n": 1})));
    let started = Instant::now();
    let e = verifier.validate(&trust, &first).await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(700));
    // Within the retry backoff, the next request does not wait at all.
    let started = Instant::now();
    let e = verifier.validate(&trust, &second).await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_jwks_slow_endpoint_fails_within_the_timeout() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    idp.set_delay(Duration::from_secs(10));
    let trust = Arc::new(trust(&[("idp", jwks_spec(&idp.jwks_uri()))]));
    let (verifier, _) = verifier(quick_timeout());
    let tokens: Vec<String> = (0..10).map(|i| rs256(ISS, json!({"n": i}))).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens {
        let (verifier, trust) = (verifier.clone(), trust.clone());
        tasks.push(tokio::spawn(async move {
            verifier.validate(&trust, &token).await
        }));
    }
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(
            matches!(e, TokenError::Unavailable(ref m) if m.contains("timed out")),
            "{e:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn token_jwks_changed_uri_never_uses_old_keys() {
    let old = StubIdp::start(keys(&["rsa-a"])).await;
    let new = StubIdp::start(keys(&["rsa-b"])).await;
    let (verifier, _) = verifier(settings());
    let token_a = rs256(ISS, json!({}));
    let before = trust(&[("idp", jwks_spec(&old.jwks_uri()))]);
    verifier.validate(&before, &token_a).await.unwrap();

    // Same name, new jwks_uri: neither the keys nor the verified token carry over.
    let after = trust(&[("idp", jwks_spec(&new.jwks_uri()))]);
    assert_eq!(
        verifier.validate(&after, &token_a).await.unwrap_err(),
        TokenError::UnknownKey
    );
    let token_b = sign(
        "rsa-b",
        Algorithm::RS256,
        Some("rsa-b"),
        &claims(ISS, json!({})),
    );
    verifier.validate(&after, &token_b).await.unwrap();
    assert_eq!(
        new.jwks_fetches(),
        1,
        "fresh set already fetched for this request"
    );
}

#[tokio::test]
async fn token_openid_discovery_finds_the_jwks() {
    let idp = StubIdp::start(keys(&["ec-p256"])).await;
    let iss = idp.url.clone();
    let trust = trust(&[(
        "discovered",
        json!({"type": "jwt", "jwt": {"iss": iss}, "openidDiscovery": true}),
    )]);
    let (verifier, _) = verifier(settings());
    let token = sign(
        "ec-p256",
        Algorithm::ES256,
        Some("ec-p256"),
        &claims(&iss, json!({})),
    );
    verifier.validate(&trust, &token).await.unwrap();
    assert_eq!(
        idp.discovery_hits.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn token_openid_discovery_refuses_a_different_issuer() {
    let idp = StubIdp::start(keys(&["ec-p256"])).await;
    idp.state.lock().unwrap().discovery_issuer = Some("https://evil.example".into());
    let iss = idp.url.clone();
    let trust = trust(&[(
        "discovered",
        json!({"type": "jwt", "jwt": {"iss": iss}, "openidDiscovery": true}),
    )]);
    let (verifier, _) = verifier(settings());
    let token = sign(
        "ec-p256",
        Algorithm::ES256,
        Some("ec-p256"),
        &claims(&iss, json!({})),
    );
    let e = verifier.validate(&trust, &token).await.unwrap_err();
    assert!(
        matches!(e, TokenError::Unavailable(ref m) if m.contains("different issuer")),
        "{e:?}"
    );
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn token_jwks_without_usable_keys_keeps_the_old_ones() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    let (verifier, _) = verifier(settings());
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    idp.set_jwks(json!({"keys": [{"kty": "oct", "kid": "rsa-a", "k": "c2VjcmV0"}]}));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..3 {
        verifier
            .validate(&trust, &rs256(ISS, json!({"n": i})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn token_audience_and_time_claims() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwks_uri": idp.jwks_uri(),
               "jwt": {"iss": ISS, "allowedAudiences": ["api", "other-api"], "leewaySeconds": 5}}),
    )]);
    let (verifier, _) = verifier(settings());
    let ok = |extra: Value| rs256(ISS, extra);
    assert!(verifier
        .validate(&trust, &ok(json!({"aud": "api"})))
        .await
        .is_ok());
    assert!(verifier
        .validate(&trust, &ok(json!({"aud": ["x", "other-api"]})))
        .await
        .is_ok());
    let cases = [
        (json!({"aud": "x"}), TokenError::BadAudience),
        (json!({}), TokenError::BadAudience),
        (
            json!({"aud": "api", "exp": now() - 10}),
            TokenError::Expired,
        ),
        (
            json!({"aud": "api", "nbf": now() + 60}),
            TokenError::NotYetValid,
        ),
        (
            json!({"aud": "api", "iat": now() + 60}),
            TokenError::NotYetValid,
        ),
    ];
    for (extra, want) in cases {
        let got = verifier.validate(&trust, &ok(extra.clone())).await;
        assert_eq!(got.unwrap_err(), want, "{extra}");
    }
    // Within the leeway.
    assert!(verifier
        .validate(
            &trust,
            &ok(json!({"aud": "api", "exp": now() - 2, "nbf": now() + 2}))
        )
        .await
        .is_ok());
}
