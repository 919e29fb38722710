//! Opaque tokens: RFC 7662 introspection against a stub endpoint, and its cache.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::metrics::token_event;
use support::stub_idp::{Mode, StubIdp};
use support::tokens::{now, rs256};
use support::verifier::{quick_timeout, settings, trust, verifier};

use portcullis::token::{TokenError, TokenKind};

const AUTH: &str = "Basic cG9ydGN1bGxpczpzM2NyZXQ=";

fn opaque(url: &str, extra: Value) -> Value {
    let mut s = json!({"type": "opaque",
        "introspection_endpoint": {"url": url, "authorization": AUTH}});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn active(extra: Value) -> Value {
    let mut a = json!({"active": true, "sub": "svc-1", "client_id": "client-1",
                       "scope": "read", "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

#[tokio::test]
async fn token_introspection_active_answer_is_the_token_context() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("opaque-1", active(json!({"custom": [1, 2]})));
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, _) = verifier(settings());
    let valid = verifier.validate(&trust, "opaque-1").await.unwrap();
    assert_eq!(valid.kind, TokenKind::Opaque);
    assert_eq!(valid.subject(), Some("svc-1"));
    assert_eq!(valid.client_id(), Some("client-1"));
    assert_eq!(valid.claims["custom"], json!([1, 2]), "the whole answer");
    let st = idp.state.lock().unwrap();
    assert_eq!(st.authorizations, vec![Some(AUTH.to_string())]);
    assert_eq!(
        st.introspected_forms,
        vec!["token=opaque-1&token_type_hint=access_token".to_string()]
    );
}

#[tokio::test]
async fn token_introspection_answers_are_cached_for_cache_ttl() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("opaque-1", active(json!({})));
    let trust = trust(&[(
        "opaque",
        opaque(&idp.introspection_url(), json!({"cache_ttl": 1})),
    )]);
    let (verifier, metrics) = verifier(settings());
    for _ in 0..5 {
        verifier.validate(&trust, "opaque-1").await.unwrap();
    }
    assert_eq!(idp.introspections(), 1);
    assert_eq!(token_event(&metrics, "verified_cache_hit"), 4);

    // Revoked at the identity provider: refused once cache_ttl allows.
    idp.answer("opaque-1", json!({"active": false}));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        verifier.validate(&trust, "opaque-1").await.unwrap_err(),
        TokenError::Inactive
    );
    assert_eq!(idp.introspections(), 2);
}

#[tokio::test]
async fn token_introspection_never_cached_past_exp() {
    let idp = StubIdp::start(json!({})).await;
    // cache_ttl allows five minutes; the token's own exp allows under two seconds.
    idp.answer("short-lived", active(json!({"exp": now() + 2})));
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, _) = verifier(settings());
    verifier.validate(&trust, "short-lived").await.unwrap();
    verifier.validate(&trust, "short-lived").await.unwrap();
    assert_eq!(idp.introspections(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let e = verifier.validate(&trust, "short-lived").await.unwrap_err();
    assert_eq!(e, TokenError::Expired);
    assert_eq!(
        idp.introspections(),
        2,
        "asked again, not served from the cache"
    );
}

#[tokio::test]
async fn token_introspection_inactive_is_remembered_as_refused_and_failures_not_at_all() {
    let idp = StubIdp::start(json!({})).await;
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, metrics) = verifier(settings());
    // `active: false` is never cached as valid; it is remembered as a refusal for a few
    // seconds, so a flood of one unknown token costs one introspection call.
    for _ in 0..3 {
        assert_eq!(
            verifier.validate(&trust, "unknown").await.unwrap_err(),
            TokenError::Inactive
        );
    }
    assert_eq!(idp.introspections(), 1);
    assert_eq!(token_event(&metrics, "refused_cache_hit"), 2);

    idp.answer("opaque-1", active(json!({})));
    idp.set_mode(Mode::Failing);
    let e = verifier.validate(&trust, "opaque-1").await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    idp.set_mode(Mode::Up);
    verifier.validate(&trust, "opaque-1").await.unwrap();
}

#[tokio::test]
async fn token_introspection_active_must_be_boolean_true() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("stringly", json!({"active": "true", "sub": "x"}));
    idp.answer("one", json!({"active": 1}));
    idp.answer("expired", active(json!({"exp": now() - 5})));
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, _) = verifier(settings());
    for t in ["stringly", "one"] {
        assert_eq!(
            verifier.validate(&trust, t).await.unwrap_err(),
            TokenError::Inactive
        );
    }
    assert_eq!(
        verifier.validate(&trust, "expired").await.unwrap_err(),
        TokenError::Expired
    );
}

#[tokio::test]
async fn token_introspection_audience_when_required() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("for-api", active(json!({"aud": ["api"]})));
    idp.answer("for-other", active(json!({"aud": "other"})));
    idp.answer("no-aud", active(json!({})));
    let trust = trust(&[(
        "opaque",
        opaque(
            &idp.introspection_url(),
            json!({"jwt": {"allowedAudiences": ["api"]}}),
        ),
    )]);
    let (verifier, _) = verifier(settings());
    verifier.validate(&trust, "for-api").await.unwrap();
    for t in ["for-other", "no-aud"] {
        assert_eq!(
            verifier.validate(&trust, t).await.unwrap_err(),
            TokenError::BadAudience
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_introspection_concurrent_first_requests_share_one_call() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("opaque-1", active(json!({})));
    idp.set_delay(Duration::from_millis(200));
    let trust = Arc::new(trust(&[(
        "opaque",
        opaque(&idp.introspection_url(), json!({})),
    )]));
    let (verifier, _) = verifier(settings());
    let run = |token: &'static str| {
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let (verifier, trust) = (verifier.clone(), trust.clone());
            tasks.push(tokio::spawn(async move {
                verifier.validate(&trust, token).await
            }));
        }
        tasks
    };
    for t in run("opaque-1") {
        t.await.unwrap().unwrap();
    }
    assert_eq!(idp.introspections(), 1);
    // An inactive token's concurrent first requests share one call too (then nothing is kept).
    for t in run("inactive") {
        assert_eq!(t.await.unwrap().unwrap_err(), TokenError::Inactive);
    }
    assert_eq!(idp.introspections(), 2);
}

#[tokio::test]
async fn token_introspection_slow_or_down_fails_closed_in_bounded_time() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("opaque-1", active(json!({})));
    idp.set_delay(Duration::from_secs(30));
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let settings = quick_timeout();
    // Far from the 30 s the endpoint takes, with room for any load.
    let bound = settings.fetch_timeout * 10;
    let (verifier, metrics) = verifier(settings);
    let started = Instant::now();
    let e = verifier.validate(&trust, "opaque-1").await.unwrap_err();
    assert!(
        matches!(e, TokenError::Unavailable(ref m) if m.contains("timed out")),
        "{e:?}"
    );
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());

    idp.shut_down().await;
    let started = Instant::now();
    let e = verifier.validate(&trust, "opaque-1").await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    assert_eq!(token_event(&metrics, "introspection_error"), 2);
}

#[tokio::test]
async fn token_introspectors_are_tried_in_name_order() {
    let first = StubIdp::start(json!({})).await;
    let second = StubIdp::start(json!({})).await;
    second.answer("at-second", active(json!({"sub": "from-second"})));
    first.answer("at-both", active(json!({"sub": "from-first"})));
    second.answer("at-both", active(json!({"sub": "from-second"})));
    // Inserted out of order on purpose.
    let trust = trust(&[
        ("b-second", opaque(&second.introspection_url(), json!({}))),
        ("a-first", opaque(&first.introspection_url(), json!({}))),
    ]);
    let (verifier, _) = verifier(settings());
    let v = verifier.validate(&trust, "at-both").await.unwrap();
    assert_eq!(
        (v.subject(), v.introspector.name.as_str()),
        (Some("from-first"), "a-first")
    );
    assert_eq!(second.introspections(), 0);
    let v = verifier.validate(&trust, "at-second").await.unwrap();
    assert_eq!(v.introspector.name, "b-second");
    assert_eq!(
        verifier.validate(&trust, "nowhere").await.unwrap_err(),
        TokenError::Inactive
    );

    // The first endpoint down: an active answer from the second still wins...
    first.set_mode(Mode::Failing);
    second.answer("later", active(json!({})));
    assert!(verifier.validate(&trust, "later").await.is_ok());
    // ...but with none active, we cannot say the token is inactive.
    let e = verifier.validate(&trust, "nowhere-else").await.unwrap_err();
    assert!(e.is_internal(), "{e:?}");
}

#[tokio::test]
async fn token_jwt_shaped_tokens_never_go_to_introspection() {
    let idp = StubIdp::start(json!({})).await;
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, _) = verifier(settings());
    let jwt = rs256("https://unknown.example", json!({}));
    assert_eq!(
        verifier.validate(&trust, &jwt).await.unwrap_err(),
        TokenError::UntrustedIssuer("https://unknown.example".into())
    );
    assert_eq!(idp.introspections(), 0);
}

#[tokio::test]
async fn token_no_opaque_introspector_refuses_opaque_tokens() {
    let trust = trust(&[(
        "jwt",
        json!({"type": "jwt", "jwt": {"iss": "https://a", "secret": "s3cret-s3cret"}}),
    )]);
    let (verifier, _) = verifier(settings());
    assert_eq!(
        verifier.validate(&trust, "opaque").await.unwrap_err(),
        TokenError::NoOpaqueIntrospector
    );
}

#[tokio::test]
async fn token_changed_introspector_does_not_reuse_cached_answers() {
    let idp = StubIdp::start(json!({})).await;
    idp.answer("opaque-1", active(json!({})));
    let (verifier, _) = verifier(settings());
    let before = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    verifier.validate(&before, "opaque-1").await.unwrap();
    verifier.validate(&before, "opaque-1").await.unwrap();
    assert_eq!(idp.introspections(), 1);

    // New credentials for the endpoint: a new fingerprint, so the endpoint is asked again.
    let mut changed = opaque(&idp.introspection_url(), json!({}));
    changed["introspection_endpoint"]["authorization"] = json!("Bearer rotated");
    let after = trust(&[("opaque", changed)]);
    verifier.validate(&after, "opaque-1").await.unwrap();
    assert_eq!(idp.introspections(), 2);
    assert_eq!(
        idp.state
            .lock()
            .unwrap()
            .authorizations
            .last()
            .unwrap()
            .as_deref(),
        Some("Bearer rotated")
    );
}

#[tokio::test]
async fn token_too_large_is_refused_unread() {
    let idp = StubIdp::start(json!({})).await;
    let trust = trust(&[("opaque", opaque(&idp.introspection_url(), json!({})))]);
    let (verifier, _) = verifier(settings());
    let huge = "x".repeat(portcullis::token::DEFAULT_MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        verifier.validate(&trust, &huge).await,
        Err(TokenError::TooLarge(_))
    ));
    assert_eq!(idp.introspections(), 0);
}
