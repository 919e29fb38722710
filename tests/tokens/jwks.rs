//! JWKS introspectors against a stub identity provider: rotation, outages, slowness,
//! forged kids, discovery, key types, and the headers that must never choose a key.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};
use support::metrics::{token_event, Scrape};
use support::stub_idp::{Mode, StubIdp};
use support::tokens::{
    b64_json, claims, encoding_key, fixture, jwk, jwk_with, jwks, now, rs256, sign, Jwt,
};
use support::verifier::{quick_timeout, settings, trust, verifier};

use portcullis::token::{TokenError, TokenKind, TokenSettings};

const ISS: &str = "https://idp.example";

fn jwks_spec(uri: &str) -> Value {
    json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": uri})
}

fn keys(names: &[&str]) -> Value {
    jwks(names)
}

/// A stub identity provider publishing these test keys, and a trust store with one
/// introspector (`idp`) on its JWKS.
async fn jwks_idp(names: &[&str]) -> (StubIdp, portcullis::token::TrustStore) {
    let idp = StubIdp::start(keys(names)).await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    (idp, trust)
}

#[tokio::test]
async fn token_jwks_verifies_rs256_and_caches_keys() {
    let (idp, trust) = jwks_idp(&["rsa-a"]).await;
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
    let (_idp, trust) = jwks_idp(&["rsa-a", "ec-p256", "ec-p384", "ed25519"]).await;
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
    let (idp, trust) = jwks_idp(&["rsa-a"]).await;
    let (verifier, _) = verifier(settings());
    // The classic confusion: HS256 keyed with the RSA public key's bytes.
    for secret in [
        fixture("rsa-a.pub.pem"),
        jwk("rsa-a")["n"].as_str().unwrap().to_string(),
    ] {
        let token = Jwt::new(ISS, "alice").kid("rsa-a").sign_hs256(&secret);
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
    let token = Jwt::new(ISS, "alice").sign_hs256(&fixture("rsa-a.pub.pem"));
    assert!(matches!(
        verifier.validate(&trust, &token).await,
        Err(TokenError::AlgorithmNotAllowed(_))
    ));
    assert!(verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .is_ok());
}

#[tokio::test]
async fn token_alg_none_and_odd_headers_are_refused() {
    let (_idp, trust) = jwks_idp(&["rsa-a"]).await;
    let (verifier, _) = verifier(settings());
    let payload = b64_json(&claims(ISS, json!({})));
    for header in [
        json!({"alg": "none", "kid": "rsa-a"}),
        json!({"alg": "None"}),
        json!({"alg": "RS256", "kid": 7}),
        json!({"alg": "RS256", "kid": "rsa-a", "crit": ["exp"]}),
    ] {
        let token = format!("{}.{payload}.", b64_json(&header));
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
    assert_eq!(attacker.other_hits(), 0);
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
    let (idp, trust) = jwks_idp(&["rsa-a"]).await;
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
    assert_eq!(token_event(&metrics, "jwks_refetch_unknown_kid"), 1);

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
    // One initial fetch, one refetch for the whole burst.
    assert_eq!(idp.jwks_fetches(), 2);
    assert_eq!(token_event(&metrics, "jwks_refetch_unknown_kid"), 1);
    // Later forged kids, within the interval, are refused without a fetch. (Forged kids
    // of the burst that came after its refetch may have been counted already.)
    let before = Scrape::of(&metrics)
        .find(
            "portcullis_token_events_total",
            &[("event", "jwks_refetch_rate_limited")],
        )
        .map_or(0, |n| n as u64);
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
    assert_eq!(
        token_event(&metrics, "jwks_refetch_rate_limited"),
        before + 20
    );
    assert_eq!(idp.jwks_fetches(), 2);
    // Real tokens keep working throughout.
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 1})))
        .await
        .unwrap();
}

#[tokio::test]
async fn token_jwks_refetch_allowed_again_after_interval() {
    let (idp, trust) = jwks_idp(&["rsa-a"]).await;
    // Long enough that the ten refusals below all fall within it on any machine.
    let interval = Duration::from_secs(3);
    let (verifier, _) = verifier(TokenSettings {
        jwks_refetch_interval: interval,
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
    let burst: Vec<String> = (0..10).map(forged).collect();
    let refetched = Instant::now();
    for token in &burst {
        assert_eq!(
            verifier.validate(&trust, token).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "one refetch for the ten unknown kids"
    );
    // Once the interval has passed, an unknown kid may refetch again; never before.
    let mut i = 100;
    support::eventually("a refetch after the interval", || {
        i += 1;
        let token = forged(i);
        let (verifier, trust, idp) = (&verifier, &trust, &idp);
        async move {
            assert_eq!(
                verifier.validate(trust, &token).await.unwrap_err(),
                TokenError::UnknownKey
            );
            (idp.jwks_fetches() > 2).then_some(())
        }
    })
    .await;
    assert!(
        refetched.elapsed() >= interval,
        "refetched again after {:?}, within the interval",
        refetched.elapsed()
    );
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

/// Stale keys answer at once: a refresh that hangs costs requests nothing.
#[tokio::test]
async fn token_jwks_stale_keys_verify_without_waiting_for_the_refresh() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    // The refresh below hangs for a minute: a request that waited for it would hang too.
    let (verifier, metrics) = verifier(TokenSettings {
        fetch_timeout: Duration::from_secs(120),
        ..settings()
    });
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    idp.set_delay(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..3 {
        let token = rs256(ISS, json!({"n": i}));
        tokio::time::timeout(Duration::from_secs(10), verifier.validate(&trust, &token))
            .await
            .expect("a request waited for the background refresh")
            .unwrap();
    }
    assert_eq!(token_event(&metrics, "jwks_stale_served"), 3);
    // One refresh, still under way at the endpoint, which the later requests joined.
    support::eventually("the refresh to reach the endpoint", || async {
        (idp.jwks_fetches() == 2).then_some(())
    })
    .await;
    assert_eq!(token_event(&metrics, "jwks_fetch"), 2);
    Scrape::of(&metrics).assert_no_token_event("jwks_fetch_error");
}

/// A stale-keys test: `cache_ttl` 1 s, keys fetched, then `spoil` done to the endpoint,
/// `cache_ttl` over, and the background refresh that the first stale answer starts
/// failed.
async fn stale_after_a_failed_refresh(
    idp: &StubIdp,
    settings: TokenSettings,
    spoil: impl FnOnce(&StubIdp),
) -> (
    portcullis::token::TrustStore,
    Arc<portcullis::token::TokenVerifier>,
    Arc<portcullis::metrics::Metrics>,
) {
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(), "cache_ttl": 1}),
    )]);
    let (verifier, metrics) = verifier(settings);
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    spoil(idp);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 0})))
        .await
        .unwrap();
    support::eventually("the background refresh to fail", || async {
        Scrape::of(&metrics)
            .find(
                "portcullis_token_events_total",
                &[("event", "jwks_fetch_error")],
            )
            .map(|_| ())
    })
    .await;
    assert_eq!(idp.jwks_fetches(), 2);
    (trust, verifier, metrics)
}

#[tokio::test]
async fn token_jwks_outage_cached_keys_keep_working() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    // A retry back-off longer than the test: after the failed refresh nothing fetches,
    // however fast or slow the machine.
    let (trust, verifier, metrics) = stale_after_a_failed_refresh(
        &idp,
        TokenSettings {
            fetch_retry_backoff: Duration::from_secs(600),
            ..settings()
        },
        |idp| idp.set_mode(Mode::Failing),
    )
    .await;
    // Past cache_ttl, the refresh failed: the keys still verify.
    for i in 1..3 {
        verifier
            .validate(&trust, &rs256(ISS, json!({"n": i})))
            .await
            .unwrap();
    }
    assert_eq!(token_event(&metrics, "jwks_stale_served"), 3);
    assert_eq!(token_event(&metrics, "jwks_fetch_error"), 1);

    // An unknown kid is refused: Unavailable (we could not ask), never allowed; and,
    // rate-limited, it costs no fetch and no wait.
    for kid in ["rsa-b", "rsa-c"] {
        let unknown = sign(
            "rsa-b",
            Algorithm::RS256,
            Some(kid),
            &claims(ISS, json!({})),
        );
        let e = verifier.validate(&trust, &unknown).await.unwrap_err();
        assert!(
            matches!(e, TokenError::UnknownKey | TokenError::Unavailable(_)),
            "{kid}: {e:?}"
        );
    }
    assert_eq!(token_event(&metrics, "jwks_refetch_rate_limited"), 2);
    assert_eq!(idp.jwks_fetches(), 2, "rate-limited: no fetch");
}

#[tokio::test]
async fn token_jwks_outage_over_stale_keys_are_refreshed() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    // No retry back-off: the first stale answer after the outage refreshes.
    let (trust, verifier, metrics) = stale_after_a_failed_refresh(
        &idp,
        TokenSettings {
            fetch_retry_backoff: Duration::ZERO,
            ..settings()
        },
        |idp| idp.set_mode(Mode::Failing),
    )
    .await;
    idp.set_mode(Mode::Up);
    let mut n = 0;
    support::eventually("fresh keys", || {
        n += 1;
        let token = rs256(ISS, json!({"n": n}));
        let (verifier, trust, metrics) = (&verifier, &trust, &metrics);
        async move {
            let stale = token_event(metrics, "jwks_stale_served");
            verifier.validate(trust, &token).await.unwrap();
            // Fresh keys: this answer was not a stale one.
            (token_event(metrics, "jwks_stale_served") == stale).then_some(())
        }
    })
    .await;
    assert_eq!(idp.jwks_fetches(), 3, "one fetch brought the keys back");
    assert_eq!(token_event(&metrics, "jwks_fetch_error"), 1);
}

/// Stale keys keep verifying while the endpoint fails, but only for `jwks_max_stale` past
/// `cache_ttl`: a key the issuer withdrew must not verify for as long as an attacker can
/// keep its endpoint failing. Past the bound the issuer's tokens fail closed (503).
#[tokio::test]
async fn token_jwks_stale_keys_stop_verifying_after_the_bound() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let cache_ttl = Duration::from_secs(1);
    // Long enough that the stale check below runs within it on any machine.
    let max_stale = Duration::from_secs(5);
    let trust = trust(&[(
        "idp",
        json!({"type": "jwt", "jwt": {"iss": ISS}, "jwks_uri": idp.jwks_uri(),
               "cache_ttl": cache_ttl.as_secs()}),
    )]);
    let (verifier, metrics) = verifier(TokenSettings {
        jwks_max_stale: max_stale,
        ..settings()
    });
    // Before the fetch: the keys' own fetch time is later still.
    let fetched = Instant::now();
    verifier
        .validate(&trust, &rs256(ISS, json!({})))
        .await
        .unwrap();
    idp.set_mode(Mode::Failing);

    // Stale (past cache_ttl), within the bound: still verifies.
    tokio::time::sleep(cache_ttl + Duration::from_millis(200)).await;
    verifier
        .validate(&trust, &rs256(ISS, json!({"n": 1})))
        .await
        .unwrap();
    assert!(token_event(&metrics, "jwks_stale_served") >= 1);
    Scrape::of(&metrics).assert_no_token_event("jwks_stale_expired");

    // Past cache_ttl + jwks_max_stale: refused as unavailable, never allowed; and not
    // before that.
    let mut n = 1;
    let e = support::eventually("stale keys to stop verifying", || {
        n += 1;
        let token = rs256(ISS, json!({"n": n}));
        let (verifier, trust) = (&verifier, &trust);
        async move { verifier.validate(trust, &token).await.err() }
    })
    .await;
    assert!(e.is_internal(), "{e:?}");
    assert!(
        fetched.elapsed() >= cache_ttl + max_stale,
        "stale keys refused after {:?}, within the bound",
        fetched.elapsed()
    );
    assert!(token_event(&metrics, "jwks_stale_expired") >= 1);

    // The endpoint back: the next fetch (after the retry back-off) brings the keys back.
    idp.set_mode(Mode::Up);
    support::eventually("the keys to come back", || {
        n += 1;
        let token = rs256(ISS, json!({"n": n}));
        let (verifier, trust) = (&verifier, &trust);
        async move {
            match verifier.validate(trust, &token).await {
                Ok(_) => Some(()),
                Err(e) => {
                    assert!(e.is_internal(), "{e:?}");
                    None
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn token_jwks_endpoint_down_from_start_fails_closed() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    idp.shut_down().await;
    let trust = trust(&[("idp", jwks_spec(&idp.jwks_uri()))]);
    // A refused connection fails at once, not at the (long) fetch timeout; and the retry
    // back-off outlasts the test, so the second request cannot fetch.
    let (verifier, metrics) = verifier(TokenSettings {
        fetch_timeout: Duration::from_secs(60),
        fetch_retry_backoff: Duration::from_secs(600),
        ..settings()
    });
    let (first, second) = (rs256(ISS, json!({})), rs256(ISS, json!({"n": 1})));
    let e = tokio::time::timeout(Duration::from_secs(10), verifier.validate(&trust, &first))
        .await
        .expect("a refused connection waited for the fetch timeout")
        .unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert_eq!(token_event(&metrics, "jwks_fetch"), 1);
    assert_eq!(token_event(&metrics, "jwks_fetch_error"), 1);
    // Within the retry back-off, the next request does not fetch (nor wait) at all.
    let e = verifier.validate(&trust, &second).await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert_eq!(token_event(&metrics, "jwks_fetch"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_jwks_slow_endpoint_fails_within_the_timeout() {
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    idp.set_delay(Duration::from_secs(30));
    let trust = Arc::new(trust(&[("idp", jwks_spec(&idp.jwks_uri()))]));
    let settings = quick_timeout();
    let timeout = settings.fetch_timeout;
    let (verifier, _) = verifier(settings);
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
    // Not before the timeout; and far from the 30 s the endpoint takes, with room for
    // any load.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(50) && elapsed < timeout * 10,
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
    assert_eq!(idp.discovery_hits(), 1);
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
    // The refresh finds no usable key.
    let (trust, verifier, _) = stale_after_a_failed_refresh(&idp, settings(), |idp| {
        idp.set_jwks(json!({"keys": [{"kty": "oct", "kid": "rsa-a", "k": "c2VjcmV0"}]}))
    })
    .await;
    // The old keys were kept, not swapped for none.
    for i in 1..3 {
        verifier
            .validate(&trust, &rs256(ISS, json!({"n": i})))
            .await
            .unwrap();
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

/// `serve --outbound-allow-host`: a JWKS on a host not listed is never fetched, its tokens
/// are refused as for an unreachable provider and the log says why; listed, it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_calls_identity_providers_only_on_the_allowed_hosts() {
    use support::ext_authz::check;
    use support::portcullis::Portcullis;
    let idp = StubIdp::start(keys(&["rsa-a"])).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "resourceType: TokenIntrospector\nid: idp\ntype: jwt\njwt: {{iss: {ISS}}}\n\
             jwks_uri: {}\n---\nresourceType: AccessPolicy\nid: idp-users\nengine: matcho\n\
             matcho: {{jwt: {{iss: {ISS}}}}}\n",
            idp.jwks_uri()
        ),
    )
    .unwrap();
    let token = rs256(ISS, json!({}));
    let elsewhere = Portcullis::builder()
        .config(dir.path())
        .arg("--outbound-allow-host=idp.example.com,*.example.org")
        .start()
        .await;
    let mut client = elsewhere.ext_authz_client().await;
    let grpc = check(&mut client, "GET", "/", Some(&token)).await;
    assert_eq!(grpc.status, 503);
    // The client learns the reason code, never the configuration behind it (both flavours);
    // the detail is the operator's, in the log.
    let http = support::ext_authz::http_check(
        &elsewhere,
        "/",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    for (flavour, body) in [("gRPC", &grpc.body), ("HTTP", &http.body)] {
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body["error"], "temporarily_unavailable",
            "{flavour}: {body}"
        );
        assert_eq!(
            body["reason"], "introspection_unavailable",
            "{flavour}: {body}"
        );
        for internal in ["127.0.0.1", "outbound-allow-host", "host"] {
            assert!(
                !body["message"].as_str().unwrap().contains(internal),
                "{flavour}: the body tells the client {internal:?}: {body}"
            );
        }
    }
    assert_eq!(idp.jwks_fetches(), 0, "no request left portcullis");
    support::eventually("the refusal in the log", || async {
        elsewhere
            .log()
            .contains("host 127.0.0.1 is not one that --outbound-allow-host allows")
            .then_some(())
    })
    .await;

    let listed = Portcullis::builder()
        .config(dir.path())
        .arg("--outbound-allow-host")
        .arg("127.0.0.1")
        .start()
        .await;
    let mut client = listed.ext_authz_client().await;
    assert_eq!(
        check(&mut client, "GET", "/", Some(&token)).await.status,
        200
    );
    assert_eq!(idp.jwks_fetches(), 1);
}
