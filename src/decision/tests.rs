//! The pipeline on plain data: configuration text in, decisions out. No tonic, no kube.

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;
use crate::resources::parse_documents;

const CONFIG: &str = "
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
---
resourceType: TokenIntrospector
id: other
type: jwt
jwt: {iss: https://other.example.com, secret: other-secret}
---
resourceType: AccessPolicy
id: a-public-metadata
engine: matcho
matcho: {request-method: get, uri: '#^/fhir/metadata$'}
---
resourceType: AccessPolicy
id: b-readers
engine: matcho
matcho: {jwt: {scope: '#\\bread\\b'}}
---
resourceType: AccessPolicy
id: c-app-only
engine: allow
link: [{reference: Client/app, issuer: https://auth.example.com}]
---
resourceType: AccessPolicy
id: d-alice-only
engine: matcho
matcho: {uri: '#^/alice/'}
link: [{reference: User/alice}]
---
resourceType: User
id: alice
---
resourceType: User
id: mallory
inactive: true
";

pub(super) fn authorizer(config: &str) -> Authorizer {
    let (resources, errors) = parse_documents(Path::new("test.yaml"), config);
    assert!(errors.is_empty(), "{errors:?}");
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(crate::snapshot::compile(&resources).expect("compiles"));
    Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: Arc::new(Metrics::new()),
        log: DecisionLog::new(1),
        deadline: crate::decision::DEFAULT_DEADLINE,
        shadow: false,
        users: Default::default(),
    }
}

pub(super) fn token(claims: Value) -> String {
    token_of("https://auth.example.com", "very-secret", claims)
}

pub(super) fn token_of(iss: &str, secret: &str, mut claims: Value) -> String {
    claims["iss"] = json!(iss);
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + 600);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub(super) fn request(method: &str, path: &str, token: Option<&str>) -> HttpRequest {
    let mut headers = vec![("host".to_string(), "api.example.com".to_string())];
    if let Some(t) = token {
        headers.push(("authorization".into(), format!("Bearer {t}")));
    }
    HttpRequest {
        method: method.into(),
        scheme: "https".into(),
        host: "api.example.com".into(),
        path: path.into(),
        headers,
        ..Default::default()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(super) async fn check(
    a: &Authorizer,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Decision {
    a.check(&request(method, path, token)).await
}

#[tokio::test]
async fn anonymous_requests_are_evaluated_and_challenged_when_denied() {
    let a = authorizer(CONFIG);
    let d = check(&a, "GET", "/fhir/metadata", None).await;
    assert_eq!(
        (d.outcome, d.policy.as_deref()),
        (Outcome::Allow, Some("a-public-metadata"))
    );
    assert_eq!(
        d.upstream_headers().collect::<Vec<_>>(),
        [(HEADER_POLICY, "a-public-metadata")]
    );
    assert_eq!(
        d.headers_to_remove().collect::<Vec<_>>(),
        [HEADER_USER, HEADER_SUBJECT, HEADER_ISSUER]
    );

    let d = check(&a, "POST", "/fhir/metadata", None).await;
    assert_eq!(d.http_status(), 401);
    assert_eq!(
        d.www_authenticate().as_deref(),
        Some(r#"Bearer realm="portcullis""#)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&d.body()).unwrap()["error"],
        "unauthorized"
    );
}

#[tokio::test]
async fn a_valid_token_that_no_policy_allows_is_forbidden() {
    let a = authorizer(CONFIG);
    let t = token(json!({"sub": "bob", "scope": "write"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&t)).await;
    assert_eq!(d.http_status(), 403);
    assert_eq!(d.reason, "no_policy_allows");
    assert_eq!(d.www_authenticate(), None);
    assert!(!d.body().contains(&t));

    let t = token(json!({"sub": "bob", "scope": "openid read"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&t)).await;
    assert_eq!(d.policy.as_deref(), Some("b-readers"));
    assert_eq!(
        d.upstream_headers().collect::<Vec<_>>(),
        [
            (HEADER_SUBJECT, "bob"),
            (HEADER_ISSUER, "https://auth.example.com"),
            (HEADER_POLICY, "b-readers")
        ]
    );
    assert_eq!(d.headers_to_remove().collect::<Vec<_>>(), [HEADER_USER]);
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_with_invalid_token() {
    let a = authorizer(CONFIG);
    let expired = token(json!({"sub": "bob", "exp": 1_000_000}));
    let wrong_key = encode(
        &Header::default(),
        &json!({"iss": "https://auth.example.com", "sub": "bob", "exp": 9_999_999_999u64}),
        &EncodingKey::from_secret(b"guess").unwrap(),
    )
    .unwrap();
    // The public path allows anonymous callers, yet a bad token is still refused.
    for (t, reason) in [
        (expired.as_str(), "token_expired"),
        (wrong_key.as_str(), "bad_signature"),
        (
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20ifQ.",
            "token_malformed",
        ),
        ("not-a-jwt", "untrusted_issuer"),
    ] {
        let d = check(&a, "GET", "/fhir/metadata", Some(t)).await;
        assert_eq!((d.http_status(), d.reason), (401, reason), "{t}");
        let challenge = d.www_authenticate().unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="portcullis", error="invalid_token""#),
            "{challenge}"
        );
        assert!(!d.body().contains(t) && !challenge.contains(t));
    }
}

#[tokio::test]
async fn linked_policies_apply_only_to_their_user_or_client() {
    let a = authorizer(CONFIG);
    let app = token(json!({"sub": "svc", "azp": "app"}));
    assert_eq!(
        check(&a, "DELETE", "/x", Some(&app))
            .await
            .policy
            .as_deref(),
        Some("c-app-only")
    );
    let other = token(json!({"sub": "svc", "client_id": "other"}));
    assert_eq!(
        check(&a, "DELETE", "/x", Some(&other)).await.http_status(),
        403
    );
    // Another trusted issuer's token naming the same client does not take its policies.
    let impostor = token_of(
        "https://other.example.com",
        "other-secret",
        json!({"sub": "svc", "azp": "app", "client_id": "app"}),
    );
    let d = check(&a, "DELETE", "/x", Some(&impostor)).await;
    assert_eq!((d.http_status(), d.policy), (403, None));

    let alice = token(json!({"sub": "alice"}));
    let d = check(&a, "GET", "/alice/notes", Some(&alice)).await;
    assert_eq!(
        (d.policy.as_deref(), d.user.as_deref()),
        (Some("d-alice-only"), Some("alice"))
    );
    let bob = token(json!({"sub": "bob"}));
    assert_eq!(
        check(&a, "GET", "/alice/notes", Some(&bob))
            .await
            .http_status(),
        403
    );
    // box_user names the User ahead of sub.
    let via_box_user = token(json!({"sub": "x", "box_user": "alice"}));
    let d = check(&a, "GET", "/alice/notes", Some(&via_box_user)).await;
    assert_eq!(d.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn an_inactive_user_is_forbidden_even_where_a_policy_would_allow() {
    let a = authorizer(CONFIG);
    let t = token(json!({"sub": "mallory", "scope": "read"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&t)).await;
    assert_eq!((d.http_status(), d.reason), (403, "user_inactive"));
}

#[tokio::test]
async fn without_configuration_every_request_is_unavailable() {
    let a = Authorizer {
        snapshots: Arc::new(SnapshotStore::default()),
        tokens: TokenVerifier::default(),
        metrics: Arc::new(Metrics::new()),
        log: DecisionLog::new(1),
        deadline: crate::decision::DEFAULT_DEADLINE,
        shadow: false,
        users: Default::default(),
    };
    let d = check(&a, "GET", "/fhir/metadata", None).await;
    assert_eq!((d.http_status(), d.allowed()), (503, false));
}

#[tokio::test]
async fn explain_shows_every_candidate_and_the_failing_path() {
    let a = authorizer(CONFIG);
    let t = token(json!({"sub": "alice", "scope": "write"}));
    let (d, trace) = a.explain(&request("GET", "/fhir/Patient", Some(&t))).await;
    assert_eq!(d.http_status(), 403);
    let trace = serde_json::to_value(&trace).unwrap();
    assert_eq!(trace["token"]["result"], "valid");
    assert_eq!(trace["user"]["result"], "found-by-name");
    let names: Vec<&str> = trace["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a-public-metadata", "b-readers", "d-alice-only"]);
    let readers = &trace["policies"][1]["explanation"]["errors"][0];
    assert_eq!(readers["path"], "jwt.scope");
    assert_eq!(readers["but"], "write");
    assert!(
        !trace.to_string().contains(&t),
        "the token never appears in a trace"
    );
}

#[tokio::test]
async fn claims_that_would_smuggle_headers_are_refused() {
    let a = authorizer(CONFIG);
    let t = token(json!({"sub": "basic\r\nx-portcullis-user: admin", "scope": "read"}));
    let d = check(&a, "GET", "/fhir/Patient", Some(&t)).await;
    assert_eq!((d.http_status(), d.reason), (401, "token_claims_unsafe"));
}

#[tokio::test]
async fn challenges_are_printable_ascii() {
    let a = authorizer(CONFIG);
    let t = encode(
        &Header::default(),
        &json!({"iss": "https://\u{fc}\"\u{7f}", "sub": "x", "exp": 9_999_999_999u64}),
        &EncodingKey::from_secret(b"k").unwrap(),
    )
    .unwrap();
    let d = check(&a, "GET", "/", Some(&t)).await;
    let challenge = d.www_authenticate().unwrap();
    assert!(
        challenge.chars().all(|c| (' '..='~').contains(&c)),
        "{challenge}"
    );
}

#[tokio::test]
async fn a_slow_identity_provider_is_a_503_within_the_deadline_never_an_allow() {
    // An introspection endpoint that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let a = authorizer(&format!(
        "resourceType: TokenIntrospector\nid: slow\ntype: opaque\n\
         introspection_endpoint: {{url: 'http://{addr}/introspect'}}\n---\n\
         resourceType: AccessPolicy\nid: everyone\nengine: allow\n"
    ));
    let started = std::time::Instant::now();
    let d = a
        .check_within(
            &request("GET", "/", Some("opaque-token")),
            Some(std::time::Duration::from_millis(150)),
        )
        .await;
    assert_eq!((d.http_status(), d.reason), (503, "deadline_exceeded"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Two credentials are one too many: which would the application read? Refused as an
/// invalid token (401), never taken as anonymous, even where anonymous access is allowed.
#[tokio::test]
async fn several_authorization_headers_are_refused() {
    let a = authorizer(CONFIG);
    let good = token(json!({"sub": "svc", "scope": "read"}));
    let mut req = request("GET", "/fhir/metadata", Some(&good));
    req.headers
        .push(("authorization".into(), format!("Bearer {good}")));
    let d = a.check(&req).await;
    assert_eq!((d.http_status(), d.reason), (401, "token_malformed"));
    assert!(d.token_given);
    // Envoy's `headers` map joins repeated headers with a comma.
    let mut req = request("GET", "/fhir/metadata", None);
    req.headers.push((
        "authorization".into(),
        format!("Bearer {good},Bearer {good}"),
    ));
    let d = a.check(&req).await;
    assert_eq!((d.http_status(), d.reason), (401, "token_malformed"));
}

/// `claimToHeaders`: on allow, the accepting introspector's claims go to the upstream,
/// and every header any introspector forwards into is removed when not set this time.
#[tokio::test]
async fn claims_are_forwarded_and_client_copies_removed() {
    let config = "
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
claimToHeaders: [{header: x-tenant, claim: tenant}, {header: x-roles, claim: realm.roles}]
---
resourceType: TokenIntrospector
id: other
type: jwt
jwt: {iss: https://other.example.com, secret: other-secret}
claimToHeaders: [{header: x-org, claim: org}]
---
resourceType: AccessPolicy
id: everyone
engine: allow
";
    let a = authorizer(config);
    let t = token(json!({"sub": "ann", "tenant": "acme", "realm": {"roles": ["a", "b"]}}));
    let d = check(&a, "GET", "/x", Some(&t)).await;
    assert!(d.allowed());
    let set: Vec<_> = d.upstream_headers().collect();
    assert!(set.contains(&("x-tenant", "acme")), "{set:?}");
    assert!(set.contains(&("x-roles", "a,b")), "{set:?}");
    assert_eq!(
        d.headers_to_remove().collect::<Vec<_>>(),
        [HEADER_USER, "x-org"]
    );

    // Anonymous, or a token whose claim is absent: every claim header goes.
    let d = check(&a, "GET", "/x", None).await;
    assert_eq!(
        d.headers_to_remove().collect::<Vec<_>>(),
        [
            HEADER_USER,
            HEADER_SUBJECT,
            HEADER_ISSUER,
            "x-tenant",
            "x-roles",
            "x-org"
        ]
    );
    let t = token_of(
        "https://other.example.com",
        "other-secret",
        json!({"sub": "bob"}),
    );
    let d = check(&a, "GET", "/x", Some(&t)).await;
    assert_eq!(
        d.headers_to_remove().collect::<Vec<_>>(),
        [HEADER_USER, "x-tenant", "x-roles", "x-org"]
    );
}

/// The context that policies read key by key is the context that explain and json-schema
/// see whole; it builds only the keys read, and the claims are the cached ones, not a copy.
#[tokio::test]
async fn the_request_context_is_built_as_read_and_the_same_whole() {
    use crate::policy::Context;
    let a = authorizer(CONFIG);
    let snapshot = a.snapshots.load().unwrap();
    let raw = token(json!({"sub": "alice", "azp": "app", "scope": "read"}));
    let mut req = request("GET", "/fhir/Patient?_count=1&tag=a&tag=b", Some(&raw));
    req.headers.push(("x-tenant".into(), "acme".into()));
    req.remote_addr = Some("10.0.0.6".into());
    req.namespace = Some("team-a".into());
    let valid = a.tokens.validate(&snapshot.root.trust, &raw).await.unwrap();
    let user = snapshot.users.by_name("alice").cloned().unwrap();

    let lazy = context::RequestContext::new(&req, Some(&valid), Some(&user));
    assert_eq!(lazy.get("uri"), Some(&json!("/fhir/Patient")));
    assert!(
        std::ptr::eq(lazy.get("jwt").unwrap(), &*valid.claims),
        "jwt is the validated claims themselves"
    );
    assert_eq!(lazy.get("token"), None, "a JWT is not an opaque token");
    assert_eq!(lazy.get("nonsense"), None);

    let whole = context::build(&req, Some(&valid), Some(&user));
    let keys: Vec<&str> = whole
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    // Every key, in the documented order; a JWT is not an opaque `token`.
    let expected: Vec<&str> = context::KEYS
        .into_iter()
        .filter(|k| *k != "token")
        .collect();
    assert_eq!(keys, expected);
    for (key, value) in whole.as_object().unwrap() {
        assert_eq!(lazy.get(key), Some(value), "{key}");
    }
    assert_eq!(lazy.whole(), &whole);
    assert_eq!(whole["user"]["id"], "alice");
    assert_eq!(whole["client"], json!({"id": "app"}));
    assert_eq!(whole["headers"]["x-tenant"], "acme");
    assert_eq!(whole["headers"]["authorization"], "Bearer [redacted]");
}

/// An introspection endpoint that accepts connections and never answers.
async fn silent_endpoint() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test]
async fn an_explain_is_bounded_by_the_decision_deadline() {
    let addr = silent_endpoint().await;
    let mut a = authorizer(&format!(
        "resourceType: TokenIntrospector\nid: slow\ntype: opaque\n\
         introspection_endpoint: {{url: 'http://{addr}/introspect'}}\n---\n\
         resourceType: AccessPolicy\nid: everyone\nengine: allow\n"
    ));
    a.deadline = std::time::Duration::from_millis(150);
    let started = std::time::Instant::now();
    let (d, _) = a.explain(&request("GET", "/", Some("opaque-token"))).await;
    assert_eq!((d.http_status(), d.reason), (503, "deadline_exceeded"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn introspection_calls_past_the_limit_are_shed_not_queued() {
    let addr = silent_endpoint().await;
    let mut a = authorizer(&format!(
        "resourceType: TokenIntrospector\nid: slow\ntype: opaque\n\
         introspection_endpoint: {{url: 'http://{addr}/introspect'}}\n---\n\
         resourceType: AccessPolicy\nid: everyone\nengine: allow\n"
    ));
    let metrics = Arc::new(Metrics::new());
    a.tokens = TokenVerifier::with_settings(
        crate::token::TokenSettings {
            max_concurrent_introspections: 2,
            ..Default::default()
        },
        metrics.clone(),
    );
    a.deadline = std::time::Duration::from_millis(500);
    let a = Arc::new(a);
    // Two distinct garbage tokens hold the two permits (their calls never answer) ...
    let held: Vec<_> = (0..2)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                a.check(&request("GET", "/", Some(&format!("garbage-{i}"))))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // ... and a third is answered at once, 503, without a call.
    let started = std::time::Instant::now();
    let d = a.check(&request("GET", "/", Some("garbage-2"))).await;
    assert_eq!(
        (d.http_status(), d.reason),
        (503, "introspection_unavailable")
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(400));
    assert!(
        metrics.encode().contains(r#"event="introspection_shed""#),
        "{}",
        metrics.encode()
    );
    for h in held {
        assert_eq!(h.await.unwrap().reason, "deadline_exceeded");
    }
}

/// An explanation is not traffic: `portcullis_explains_total` counts it, and neither the
/// decisions nor the token cache's request events move (docs/observability.md,
/// "Explanations"). The cache itself is shared: a token an explanation verified is a
/// cache hit for the request that follows, and that hit is the request's to count.
#[tokio::test]
async fn an_explain_is_counted_as_an_explanation_never_as_traffic() {
    let metrics = Arc::new(Metrics::new());
    let a = Authorizer {
        tokens: TokenVerifier::with_settings(Default::default(), metrics.clone()),
        metrics: metrics.clone(),
        ..authorizer(CONFIG)
    };
    let sample = |series: &str| -> Option<u64> {
        let text = metrics.encode();
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))?;
        Some(value.trim().parse::<f64>().unwrap() as u64)
    };
    let reader = token(json!({"sub": "bob", "scope": "read"}));
    let expired = token(json!({"sub": "bob", "exp": now() - 600}));
    for t in [
        Some(&reader),
        Some(&reader),
        Some(&expired),
        Some(&expired),
        None,
    ] {
        let (_, trace) = a
            .explain(&request("GET", "/fhir/Patient", t.map(String::as_str)))
            .await;
        assert!(trace.decision.is_some());
    }
    assert_eq!(sample("portcullis_explains_total"), Some(5));
    let allowed = r#"portcullis_decisions_total{outcome="allow",reason="allowed"}"#;
    assert_eq!(sample(allowed), Some(0), "{}", metrics.encode());
    assert!(
        !metrics.encode().contains(r#"outcome="deny""#),
        "{}",
        metrics.encode()
    );
    let hits = r#"portcullis_token_events_total{event="verified_cache_hit"}"#;
    assert_eq!(sample(hits), Some(0));
    for event in ["verified_cache_miss", "refused_cache_hit"] {
        let series = format!(r#"portcullis_token_events_total{{event="{event}"}}"#);
        assert_eq!(sample(&series), None, "{}", metrics.encode());
    }
    assert_eq!(sample("portcullis_check_duration_seconds_count"), Some(0));

    // The same requests, checked: each counts, once.
    assert!(check(&a, "GET", "/fhir/Patient", Some(&reader))
        .await
        .allowed());
    assert!(!check(&a, "GET", "/fhir/Patient", Some(&expired))
        .await
        .allowed());
    assert_eq!(sample(allowed), Some(1));
    assert_eq!(
        sample(r#"portcullis_decisions_total{outcome="deny",reason="token_expired"}"#),
        Some(1)
    );
    assert_eq!(
        sample(hits),
        Some(1),
        "verified by the explanation, a hit now"
    );
    assert_eq!(
        sample(r#"portcullis_token_events_total{event="refused_cache_hit"}"#),
        Some(1)
    );
    assert_eq!(sample("portcullis_check_duration_seconds_count"), Some(2));
    assert_eq!(sample("portcullis_explains_total"), Some(5));
}
