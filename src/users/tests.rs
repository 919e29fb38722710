//! Resolution order, creation, singleflight and retries, against an in-process userinfo stub.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::decision::{Authorizer, DecisionLog, HttpRequest};
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::token::{TokenKind, TokenVerifier, ValidToken};

const ISS: &str = "https://idp.example/realms/myrealm";
const SUB: &str = "74ae9aaf-5681-4231-96d3-eeec940a20b4";

fn snapshot(extra: &str) -> Snapshot {
    let text = format!(
        "resourceType: TokenIntrospector\nid: kc\ntype: jwt\njwt: {{iss: '{ISS}', secret: s3cret}}\n\
         identity_provider: {{reference: IdentityProvider/keycloak}}\n---\n\
         resourceType: TokenIntrospector\nid: opaque\ntype: opaque\n\
         introspection_endpoint: {{url: 'http://127.0.0.1:1/introspect'}}\n\
         identity_provider: {{reference: IdentityProvider/keycloak}}\n---\n\
         resourceType: TokenIntrospector\nid: no-idp\ntype: jwt\njwt: {{iss: 'https://other', secret: s}}\n---\n\
         resourceType: AccessPolicy\nid: by-issuer\nengine: matcho\nmatcho: {{jwt: {{iss: '{ISS}'}}}}\n---\n\
         {extra}"
    );
    let (resources, errors) = crate::resources::parse_documents(Path::new("t.yaml"), &text);
    assert!(errors.is_empty(), "{errors:?}");
    crate::snapshot::compile(&resources).unwrap()
}

fn idp(url: &str, extra: &str) -> String {
    format!(
        "resourceType: IdentityProvider\nid: keycloak\nsystem: keycloak\nuserinfo_endpoint: '{url}'\n{extra}\n---\n"
    )
}

fn token(snapshot: &Snapshot, claims: Value) -> ValidToken {
    let Value::Object(claims) = claims else {
        panic!("claims are an object")
    };
    let (kind, introspector) = match claims.get("iss").and_then(Value::as_str) {
        Some(iss) => (
            TokenKind::Jwt,
            snapshot.root.trust.for_issuer(iss).unwrap().clone(),
        ),
        None => (TokenKind::Opaque, snapshot.root.trust.opaque()[0].clone()),
    };
    ValidToken {
        kind,
        introspector,
        claims_weight: crate::resources::json_weight(&Value::Object(claims.clone())),
        claims: Arc::new(Value::Object(claims)),
        expires_at: None,
    }
}

/// Steps 1 and 2 for a token, as the decision pipeline asks.
fn find_existing(
    snapshot: &Snapshot,
    overlay: Option<&UserIndex>,
    token: &ValidToken,
    name_claims: NameClaims,
) -> Option<(KnownUser, Found)> {
    let subject = crate::decision::user::subject(snapshot, token);
    find(&snapshot.users, overlay, &subject, name_claims)
}

/// What creation would do for a token.
fn plan(snapshot: &Snapshot, token: &ValidToken) -> Result<Plan, String> {
    super::plan(&crate::decision::user::subject(snapshot, token))
}

/// Resolution as the decision pipeline runs it: find, else create.
trait Resolve {
    async fn resolve(
        &self,
        snapshot: &Snapshot,
        token: &ValidToken,
        raw: &str,
        dry_run: bool,
    ) -> Resolution;
}

impl Resolve for UserResolver {
    async fn resolve(
        &self,
        snapshot: &Snapshot,
        token: &ValidToken,
        raw: &str,
        dry_run: bool,
    ) -> Resolution {
        let until = tokio::time::Instant::now() + crate::decision::DEFAULT_DEADLINE;
        crate::decision::user::resolve(self, snapshot, token, raw, dry_run, until).await
    }
}

fn kc_token(snapshot: &Snapshot, sub: &str) -> ValidToken {
    token(
        snapshot,
        json!({"iss": ISS, "sub": sub, "exp": 4_000_000_000u64, "azp": "my-client"}),
    )
}

// ---- resolution order -------------------------------------------------------------

#[test]
fn name_comes_before_identifier_and_box_user_before_sub() {
    let s = snapshot(&format!(
        "{}resourceType: User\nid: {SUB}\n---\n\
         resourceType: User\nid: by-id\nidentifier: [{{system: keycloak, value: {SUB}}}]\n---\n\
         resourceType: User\nid: boxed\n---\n\
         resourceType: User\nid: other-system\nidentifier: [{{system: github, value: bob}}]\n",
        idp("http://127.0.0.1:1/userinfo", "")
    ));
    let found = |claims: Value| {
        find_existing(&s, None, &token(&s, claims), NameClaims::Allowed)
            .map(|(u, how)| (u.name().to_owned(), how))
    };
    assert_eq!(
        found(json!({"iss": ISS, "sub": SUB})),
        Some((SUB.to_string(), Found::ByName(SUB.into())))
    );
    assert_eq!(
        found(json!({"iss": ISS, "sub": SUB, "box_user": "boxed"})),
        Some(("boxed".to_string(), Found::ByName("boxed".into())))
    );
    // box_user replaces sub as the name; naming nobody, it falls through to step 2.
    let (name, how) = found(json!({"iss": ISS, "sub": SUB, "box_user": "nobody"})).unwrap();
    assert_eq!(name, "by-id");
    assert!(matches!(how, Found::ByIdentifier { .. }), "{how:?}");
}

#[test]
fn a_user_with_identifiers_is_found_by_name_only_by_its_own_subject() {
    let s = snapshot(&format!(
        "{}resourceType: User\nid: keycloak-{SUB}\nidentifier: [{{system: keycloak, value: {SUB}}}]\n---\n\
         resourceType: User\nid: plain\n",
        idp("http://127.0.0.1:1/userinfo", "")
    ));
    let owned = format!("keycloak-{SUB}");
    let find = |claims: Value| {
        find_existing(&s, None, &token(&s, claims), NameClaims::Allowed)
            .map(|(u, how)| (u.name().to_owned(), how))
    };
    // Its own subject, naming it with `box_user`, gets it.
    assert_eq!(
        find(json!({"iss": ISS, "sub": SUB, "box_user": owned})),
        Some((owned.clone(), Found::ByName(owned.clone())))
    );
    // The same provider's token of another person does not, by `box_user` or by `sub`;
    // nor does another trusted issuer.
    for claims in [
        json!({"iss": ISS, "sub": "mallory", "box_user": owned}),
        json!({"iss": ISS, "sub": owned}),
        json!({"iss": "https://other", "sub": owned}),
        json!({"iss": "https://other", "sub": SUB, "box_user": owned}),
    ] {
        assert_eq!(find(claims.clone()), None, "{claims}");
    }
    // A User without identifiers is anyone's by name, as in Aidbox...
    let plain = token(&s, json!({"iss": "https://other", "sub": "plain"}));
    assert_eq!(
        find_existing(&s, None, &plain, NameClaims::Allowed)
            .unwrap()
            .0
            .name(),
        "plain"
    );
    // ...unless that is switched off (`--claim-users-by-name=false`).
    assert!(find_existing(&s, None, &plain, NameClaims::IdentifiedOnly).is_none());
    let own = token(&s, json!({"iss": ISS, "sub": SUB}));
    assert_eq!(
        find_existing(&s, None, &own, NameClaims::IdentifiedOnly)
            .unwrap()
            .0
            .name(),
        owned
    );
}

#[test]
fn identifier_is_looked_up_in_the_introspectors_system_only() {
    let s = snapshot(&format!(
        "{}resourceType: User\nid: by-id\nidentifier: [{{system: keycloak, value: {SUB}}}]\n---\n\
         resourceType: User\nid: gh\nidentifier: [{{system: github, value: bob}}]\n",
        idp("http://127.0.0.1:1/userinfo", "")
    ));
    let (u, how) = find_existing(&s, None, &kc_token(&s, SUB), NameClaims::Allowed).unwrap();
    assert_eq!(u.name(), "by-id");
    assert_eq!(
        how,
        Found::ByIdentifier {
            system: "keycloak".into(),
            value: SUB.into()
        }
    );
    assert!(find_existing(&s, None, &kc_token(&s, "bob"), NameClaims::Allowed).is_none());
    // An introspector without an identity provider finds by name only.
    let other = token(&s, json!({"iss": "https://other", "sub": SUB}));
    assert!(find_existing(&s, None, &other, NameClaims::Allowed).is_none());
}

#[test]
fn the_snapshot_is_consulted_before_the_overlay() {
    let s = snapshot(&format!(
        "{}resourceType: User\nid: by-id\nidentifier: [{{system: keycloak, value: {SUB}}}]\n",
        idp("http://127.0.0.1:1/userinfo", "")
    ));
    let mut overlay = UserIndex::default();
    overlay.insert(KnownUser::new(
        "created",
        &crate::resources::UserSpec {
            identifier: vec![crate::resources::Identifier {
                system: "keycloak".into(),
                value: SUB.into(),
            }],
            ..Default::default()
        },
    ));
    overlay.insert(KnownUser::new("only-in-overlay", &Default::default()));
    let t = kc_token(&s, SUB);
    assert_eq!(
        find_existing(&s, Some(&overlay), &t, NameClaims::Allowed)
            .unwrap()
            .0
            .name(),
        "by-id"
    );
    let t = kc_token(&s, "only-in-overlay");
    assert_eq!(
        find_existing(&s, Some(&overlay), &t, NameClaims::Allowed)
            .unwrap()
            .0
            .name(),
        "only-in-overlay"
    );
}

// ---- what creation would do -------------------------------------------------------

#[test]
fn plans_creation_only_with_an_active_provider_that_has_a_system() {
    let with = |idp_text: &str| {
        let s = snapshot(idp_text);
        plan(&s, &kc_token(&s, SUB))
    };
    let p = with(&idp("http://idp/userinfo", "")).unwrap();
    assert_eq!(p.name, format!("keycloak-{SUB}"));
    assert_eq!(p.identifier.system, "keycloak");
    assert_eq!(p.identifier.value, SUB);
    assert_eq!(
        p.source,
        DataSource::Userinfo {
            url: "http://idp/userinfo".into(),
            scheme: "Bearer".into()
        }
    );
    let p = with(&idp("http://idp/userinfo", "userinfo_header: DPoP")).unwrap();
    assert!(matches!(p.source, DataSource::Userinfo { scheme, .. } if scheme == "DPoP"));

    let err = with(&idp("http://idp/userinfo", "active: false")).unwrap_err();
    assert!(err.contains("inactive"), "{err}");
    let err =
        with("resourceType: IdentityProvider\nid: keycloak\nuserinfo_endpoint: http://x\n---\n")
            .unwrap_err();
    assert!(err.contains("no `system`"), "{err}");
    let err =
        with("resourceType: IdentityProvider\nid: keycloak\nsystem: keycloak\n---\n").unwrap_err();
    assert!(err.contains("userinfo_endpoint"), "{err}");

    let s = snapshot(&idp("http://idp/userinfo", ""));
    let err = plan(&s, &token(&s, json!({"iss": ISS}))).unwrap_err();
    assert!(err.contains("no `sub`"), "{err}");
    let err = plan(&s, &token(&s, json!({"iss": "https://other", "sub": SUB}))).unwrap_err();
    assert!(err.contains("no identity_provider"), "{err}");
}

#[test]
fn id_token_source_keeps_the_claims_about_the_person() {
    let s = snapshot(
        "resourceType: IdentityProvider\nid: keycloak\nsystem: keycloak\nuserinfo-source: id-token\n---\n",
    );
    let t = token(
        &s,
        json!({"iss": ISS, "sub": SUB, "exp": 1, "iat": 1, "jti": "j", "preferred_username": "tu"}),
    );
    let p = plan(&s, &t).unwrap();
    let DataSource::Claims(data) = p.source else {
        panic!("{:?}", p.source)
    };
    assert_eq!(
        Value::Object(data),
        json!({"iss": ISS, "sub": SUB, "preferred_username": "tu"})
    );
}

// ---- creation against a userinfo stub ---------------------------------------------

/// A userinfo endpoint: answers with `respond(call number, headers)`, counting calls.
struct Stub {
    url: String,
    calls: Arc<AtomicUsize>,
}

async fn stub<F, R>(respond: F) -> Stub
where
    F: Fn(usize, &HeaderMap) -> R + Clone + Send + Sync + 'static,
    R: IntoResponse,
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let app = Router::new().route(
        "/userinfo",
        axum::routing::get(move |headers: HeaderMap| {
            let respond = respond.clone();
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                // Long enough for concurrent first requests to pile up on one flight.
                tokio::time::sleep(Duration::from_millis(150)).await;
                respond(n, &headers).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Stub {
        url: format!("http://{addr}/userinfo"),
        calls,
    }
}

fn keycloak_answer(sub: &str) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": sub, "email_verified": false, "preferred_username": "service-account-my-client"
    }))
}

struct Setup {
    dir: tempfile::TempDir,
    store: Arc<FileUserStore>,
    metrics: Arc<Metrics>,
    resolver: UserResolver,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileUserStore::new(dir.path()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let resolver = UserResolver::creating_with_retry(
        store.clone(),
        UserinfoClient::new(crate::outbound::IdpClient::new(Duration::from_secs(2))),
        metrics.clone(),
        Duration::from_millis(20),
    );
    Setup {
        dir,
        store,
        metrics,
        resolver,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn counter(metrics: &Metrics, event: &str) -> u64 {
    let needle = format!("portcullis_user_events_total{{event=\"{event}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn creates_the_user_of_the_tutorial_once() {
    let idp_stub = stub(|_, h: &HeaderMap| {
        assert_eq!(h["authorization"], "Bearer raw-token");
        keycloak_answer(SUB)
    })
    .await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let t = kc_token(&s, SUB);
    let setup = setup();

    let r = setup.resolver.resolve(&s, &t, "raw-token", false).await;
    let Resolution::Created(user) = &r else {
        panic!("{r:?}")
    };
    let name = format!("keycloak-{SUB}");
    assert_eq!(user.name(), name);
    assert_eq!(
        user.to_context(),
        json!({"id": name, "data": {"sub": SUB, "email_verified": false,
               "preferred_username": "service-account-my-client"},
               "identifier": [{"system": "keycloak", "value": SUB}]})
    );
    assert_eq!(files_in(setup.dir.path()), [format!("{name}.yaml")]);
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 1);
    assert_eq!(counter(&setup.metrics, "created"), 1);

    // Later requests find it in the overlay: no call, no second file.
    let r = setup.resolver.resolve(&s, &t, "raw-token", false).await;
    assert!(
        matches!(&r, Resolution::Found(u, Found::ByIdentifier { .. }) if u.name() == name),
        "{r:?}"
    );
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 1);

    // Once a snapshot holds it, it leaves the overlay.
    assert_eq!(setup.resolver.overlay_len(), 1);
    let mut compiler = crate::snapshot::Compiler::default();
    crate::source::files::load_each(&[setup.dir.path().to_path_buf()], |r| compiler.push(r));
    let provider = idp(&idp_stub.url, "");
    crate::resources::for_each_document(Path::new("c.yaml"), &provider, |r| compiler.push(r));
    let reloaded = compiler.finish().unwrap();
    setup.resolver.index_changed(&reloaded.users);
    assert_eq!(setup.resolver.overlay_len(), 0);
    assert!(reloaded.users.by_name(&name).is_some());
}

#[tokio::test]
async fn concurrent_first_requests_make_one_call_and_one_user() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer(SUB)).await;
    let s = Arc::new(snapshot(&idp(&idp_stub.url, "")));
    let setup = Arc::new(setup());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (s, setup) = (s.clone(), setup.clone());
            tokio::spawn(async move {
                let t = kc_token(&s, SUB);
                setup.resolver.resolve(&s, &t, "raw-token", false).await
            })
        })
        .collect();
    for r in futures::future::join_all(tasks).await {
        let r = r.unwrap();
        assert_eq!(
            r.user().map(|u| u.name().to_owned()),
            Some(format!("keycloak-{SUB}")),
            "{r:?}"
        );
    }
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 1);
    assert_eq!(files_in(setup.dir.path()).len(), 1);
    assert_eq!(counter(&setup.metrics, "created"), 1);
}

#[tokio::test]
async fn a_transient_userinfo_failure_is_retried_once() {
    let idp_stub = stub(|n, _: &HeaderMap| {
        if n == 1 {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            keycloak_answer(SUB).into_response()
        }
    })
    .await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let setup = setup();
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::Created(_)), "{r:?}");
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 2);
    assert_eq!(counter(&setup.metrics, "userinfo_call"), 2);
    assert_eq!(counter(&setup.metrics, "userinfo_error"), 0);
}

#[tokio::test]
async fn a_failing_userinfo_leaves_no_user_and_is_counted() {
    let idp_stub = stub(|_, _: &HeaderMap| StatusCode::BAD_GATEWAY).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let setup = setup();
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    let Resolution::UserinfoFailed { name, error } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(name, &format!("keycloak-{SUB}"));
    assert!(error.contains("502"), "{error}");
    assert!(!error.contains("raw-token"), "{error}");
    assert!(r.user().is_none());
    assert_eq!(
        idp_stub.calls.load(Ordering::SeqCst),
        2,
        "one retry, no more"
    );
    assert_eq!(counter(&setup.metrics, "userinfo_error"), 1);
    assert!(files_in(setup.dir.path()).is_empty());

    // During the back-off, the same subject does not call the failing provider again.
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::UserinfoFailed { .. }), "{r:?}");
    assert_eq!(
        idp_stub.calls.load(Ordering::SeqCst),
        2,
        "no call in the back-off"
    );
    assert_eq!(counter(&setup.metrics, "creation_backoff"), 1);

    // A refusal is not retried at all (another subject, so no back-off applies yet).
    let refusing = stub(|_, _: &HeaderMap| StatusCode::UNAUTHORIZED).await;
    let s = snapshot(&idp(&refusing.url, ""));
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, "another-subject"), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::UserinfoFailed { .. }), "{r:?}");
    assert_eq!(refusing.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_about_someone_else_is_not_used() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer("somebody-else")).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let setup = setup();
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(
        matches!(&r, Resolution::UserinfoFailed { error, .. } if error.contains("`sub`")),
        "{r:?}"
    );
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 1);
    assert!(files_in(setup.dir.path()).is_empty());
}

#[tokio::test]
async fn userinfo_header_replaces_the_bearer_scheme() {
    let idp_stub = stub(|_, h: &HeaderMap| {
        if h["authorization"] == "DPoP raw-token" {
            keycloak_answer(SUB).into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    })
    .await;
    let s = snapshot(&idp(&idp_stub.url, "userinfo_header: DPoP"));
    let setup = setup();
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::Created(_)), "{r:?}");
}

#[tokio::test]
async fn a_stored_user_of_someone_else_is_refused() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer(SUB)).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let setup = setup();
    let name = format!("keycloak-{SUB}");
    std::fs::write(
        setup.store.path_of(&name),
        format!("resourceType: User\nid: {name}\nidentifier: [{{system: github, value: {SUB}}}]\n"),
    )
    .unwrap();
    let r = setup
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(
        matches!(&r, Resolution::CreateFailed { error, .. } if error.contains("refusing")),
        "{r:?}"
    );
    assert!(r.user().is_none());
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 0);
    assert_eq!(counter(&setup.metrics, "create_error"), 1);
}

#[tokio::test]
async fn a_stored_user_is_found_after_a_restart_without_userinfo() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer(SUB)).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let first = setup();
    let r = first
        .resolver
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::Created(_)), "{r:?}");

    // A new process on the same directory whose snapshot does not hold the User yet.
    let metrics = Arc::new(Metrics::new());
    let again = UserResolver::creating(first.store.clone(), UserinfoClient::default(), metrics);
    let r = again
        .resolve(&s, &kc_token(&s, SUB), "raw-token", false)
        .await;
    assert!(matches!(r, Resolution::Created(_)), "{r:?}");
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 1);
    assert_eq!(files_in(first.dir.path()).len(), 1);
}

#[tokio::test]
async fn opaque_tokens_create_users_from_the_introspection_sub() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer("opaque-sub")).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let setup = setup();
    let t = token(
        &s,
        json!({"active": true, "sub": "opaque-sub", "scope": "openid"}),
    );
    assert_eq!(t.kind, TokenKind::Opaque);
    let r = setup.resolver.resolve(&s, &t, "opaque-raw", false).await;
    let Resolution::Created(u) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(u.name(), "keycloak-opaque-sub");
    assert!(u.has_identifier("keycloak", "opaque-sub"));
}

#[tokio::test]
async fn id_token_source_creates_without_a_call() {
    let s = snapshot(
        "resourceType: IdentityProvider\nid: keycloak\nsystem: keycloak\nuserinfo-source: id-token\n---\n",
    );
    let setup = setup();
    let t = token(
        &s,
        json!({"iss": ISS, "sub": SUB, "exp": 4_000_000_000u64, "email": "a@b"}),
    );
    let r = setup.resolver.resolve(&s, &t, "raw-token", false).await;
    let Resolution::Created(u) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(
        u.spec().data,
        Some(json!({"iss": ISS, "sub": SUB, "email": "a@b"}))
    );
    assert_eq!(counter(&setup.metrics, "userinfo_call"), 0);
}

#[tokio::test]
async fn nothing_is_created_when_off_dry_run_or_inactive() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer(SUB)).await;
    let s = snapshot(&idp(&idp_stub.url, ""));
    let t = kc_token(&s, SUB);

    let r = UserResolver::off().resolve(&s, &t, "raw", false).await;
    assert!(
        matches!(&r, Resolution::None(why) if why.contains("creation is off")),
        "{r:?}"
    );
    let r = UserResolver::dry_run().resolve(&s, &t, "raw", false).await;
    assert!(matches!(&r, Resolution::WouldCreate(p) if p.name == format!("keycloak-{SUB}")));

    let setup = setup();
    let r = setup.resolver.resolve(&s, &t, "raw", true).await;
    assert!(matches!(r, Resolution::WouldCreate(_)), "{r:?}");

    let inactive = snapshot(&idp(&idp_stub.url, "active: false"));
    let r = setup
        .resolver
        .resolve(&inactive, &kc_token(&inactive, SUB), "raw", false)
        .await;
    assert!(
        matches!(&r, Resolution::None(why) if why.contains("inactive")),
        "{r:?}"
    );
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 0);
    assert!(files_in(setup.dir.path()).is_empty());
}

// ---- through the decision pipeline ------------------------------------------------

fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret").unwrap(),
    )
    .unwrap()
}

fn request(token: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/fhir/Patient".into(),
        headers: vec![("authorization".into(), format!("Bearer {token}"))],
        ..Default::default()
    }
}

#[tokio::test]
async fn decisions_carry_the_created_user_and_explain_creates_nothing() {
    let idp_stub = stub(|_, _: &HeaderMap| keycloak_answer(SUB)).await;
    let name = format!("keycloak-{SUB}");
    let s = snapshot(&format!(
        "{}resourceType: AccessPolicy\nid: a-linked\nengine: matcho\nmatcho: {{uri: /admin}}\nlink: [{{reference: User/{name}}}]\n",
        idp(&idp_stub.url, "")
    ));
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(s);
    let setup = setup();
    let authorizer = Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: setup.metrics.clone(),
        log: DecisionLog::new(0),
        deadline: crate::decision::DEFAULT_DEADLINE,
        shadow: false,
        users: setup.resolver,
    };
    let jwt = hs256(json!({"iss": ISS, "sub": SUB, "exp": 4_000_000_000u64}));

    let (decision, trace) = authorizer.explain(&request(&jwt)).await;
    let step = trace.user.unwrap();
    assert_eq!(step.result, "would-create");
    assert_eq!(step.user.as_deref(), Some(name.as_str()));
    assert!(decision.user.is_none());
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), 0);
    assert!(files_in(setup.dir.path()).is_empty());

    let mut admin = request(&jwt);
    admin.path = "/admin".into();
    let decision = authorizer.check(&admin).await;
    assert!(decision.allowed(), "{decision:?}");
    assert_eq!(decision.user.as_deref(), Some(name.as_str()));
    assert_eq!(decision.policy.as_deref(), Some("a-linked"));
    assert!(decision
        .upstream_headers()
        .any(|h| h == ("x-portcullis-user", name.as_str())));
    assert_eq!(files_in(setup.dir.path()).len(), 1);

    let (_, trace) = authorizer.explain(&request(&jwt)).await;
    assert_eq!(trace.user.unwrap().result, "found-by-identifier");

    // Another subject is not that User: the linked policy does not apply.
    let other = hs256(json!({"iss": ISS, "sub": "someone", "exp": 4_000_000_000u64}));
    let mut admin = request(&other);
    admin.path = "/admin".into();
    let idp_calls = idp_stub.calls.load(Ordering::SeqCst);
    let decision = authorizer.check(&admin).await;
    assert_eq!(
        decision.policy.as_deref(),
        Some("by-issuer"),
        "{decision:?}"
    );
    // Its userinfo answer names another sub: no user, and never an allow by itself.
    assert!(decision.user.is_none());
    assert_eq!(idp_stub.calls.load(Ordering::SeqCst), idp_calls + 1);
}

#[test]
fn trace_steps_name_every_result() {
    let user = KnownUser::new("u", &Default::default());
    let step = |r: Resolution| crate::decision::UserStep::from_resolution(&r).result;
    assert_eq!(step(Resolution::Created(user.clone())), "created");
    assert_eq!(
        step(Resolution::Found(user, Found::ByName("u".into()))),
        "found-by-name"
    );
    assert_eq!(
        step(Resolution::UserinfoFailed {
            name: "u".into(),
            error: "x".into()
        }),
        "userinfo-failed"
    );
    assert_eq!(
        step(Resolution::CreateFailed {
            name: "u".into(),
            error: "x".into()
        }),
        "create-failed"
    );
    assert_eq!(step(Resolution::None("x".into())), "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_users_dir_never_overwrite_each_other() {
    let dir = tempfile::tempdir().unwrap();
    // Two stores: two processes, no lock in common.
    let a = FileUserStore::new(dir.path()).unwrap();
    let b = FileUserStore::new(dir.path()).unwrap();
    let user = |i: usize, from: &str| {
        KnownUser::new(
            &format!("keycloak-{i}"),
            &crate::resources::UserSpec {
                data: Some(json!({ "from": from })),
                identifier: vec![crate::resources::Identifier {
                    system: "keycloak".into(),
                    value: i.to_string(),
                }],
                ..Default::default()
            },
        )
    };
    for i in 0..20 {
        let (ra, rb) = tokio::join!(a.create(user(i, "a"), "kc"), b.create(user(i, "b"), "kc"));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            ra, rb,
            "both replicas must converge on the first User written"
        );
        let on_disk = a.get(ra.name()).await.unwrap().unwrap();
        assert_eq!(on_disk, ra);
    }
}

// ---- limits on creation -------------------------------------------------------------

/// A store that keeps nothing: every User it is handed is created.
struct MemoryStore(AtomicUsize);

impl UserStore for MemoryStore {
    fn create(
        &self,
        user: KnownUser,
        _provider: &str,
    ) -> futures::future::BoxFuture<'_, Result<KnownUser, StoreError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(user) })
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

const ID_TOKEN_IDP: &str =
    "resourceType: IdentityProvider\nid: keycloak\nsystem: keycloak\nuserinfo-source: id-token\n---\n";

fn limited(limits: CreationLimits) -> (UserResolver, Arc<MemoryStore>, Arc<Metrics>) {
    let store = Arc::new(MemoryStore(AtomicUsize::new(0)));
    let metrics = Arc::new(Metrics::new());
    let resolver = UserResolver::creating_with_limits(
        store.clone(),
        UserinfoClient::new(crate::outbound::IdpClient::new(Duration::from_secs(2))),
        metrics.clone(),
        limits,
    );
    (resolver, store, metrics)
}

/// Resolves `count` new subjects (`{prefix}-{i}`) through the pipeline's user step, and
/// says how many got a User; each of the others must have been refused by a limit.
async fn new_subjects(resolver: &UserResolver, s: &Snapshot, prefix: &str, count: usize) -> usize {
    let mut created = 0;
    for i in 0..count {
        let t = kc_token(s, &format!("{prefix}-{i}"));
        match resolver.resolve(s, &t, "raw", false).await {
            Resolution::Created(_) => created += 1,
            Resolution::Limited { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    created
}

/// 10,000 new subjects in a burst from one issuer: Users are created at the configured rate
/// (on tokio's paused clock, not wall time), the caps hold, and decisions keep flowing,
/// without a User, never waiting for one.
#[tokio::test(start_paused = true)]
async fn a_burst_of_new_subjects_creates_users_at_the_configured_rate() {
    let s = snapshot(ID_TOKEN_IDP);
    let (resolver, store, metrics) = limited(CreationLimits {
        rate: 10.0,
        burst: 100,
        max_per_namespace: 250,
        max_total: 100_000,
    });
    let start = tokio::time::Instant::now();

    // The burst: 100 Users, and 9,900 requests that go on without one.
    assert_eq!(new_subjects(&resolver, &s, "burst", 10_000).await, 100);
    assert_eq!(counter(&metrics, "create_rate_limited"), 9_900);
    // No request waited: the clock, paused, never had to move.
    assert_eq!(tokio::time::Instant::now(), start);

    // Then 10 a second.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(new_subjects(&resolver, &s, "one-second", 1_000).await, 10);
    tokio::time::advance(Duration::from_millis(2_500)).await;
    assert_eq!(new_subjects(&resolver, &s, "later", 1_000).await, 25);
    assert_eq!(resolver.overlay_len(), 135);

    // A quiet spell refills the burst, but the namespace cap (here 250) holds.
    tokio::time::advance(Duration::from_secs(3_600)).await;
    assert_eq!(new_subjects(&resolver, &s, "capped", 1_000).await, 100);
    tokio::time::advance(Duration::from_secs(3_600)).await;
    assert_eq!(new_subjects(&resolver, &s, "capped-more", 1_000).await, 15);
    assert_eq!(resolver.overlay_len(), 250);
    assert_eq!(store.0.load(Ordering::SeqCst), 250);
    assert_eq!(counter(&metrics, "created"), 250);
    assert_eq!(counter(&metrics, "create_capped_namespace"), 985);

    // Decisions keep flowing: allowed by the issuer's policy, without a User.
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(s);
    let authorizer = Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: metrics.clone(),
        log: DecisionLog::new(0),
        deadline: crate::decision::DEFAULT_DEADLINE,
        shadow: false,
        users: resolver,
    };
    for i in 0..20 {
        let jwt =
            hs256(json!({"iss": ISS, "sub": format!("flowing-{i}"), "exp": 4_000_000_000u64}));
        let decision = authorizer.check(&request(&jwt)).await;
        assert!(decision.allowed(), "{decision:?}");
        assert_eq!(decision.policy.as_deref(), Some("by-issuer"));
        assert!(decision.user.is_none());
    }
    assert_eq!(counter(&metrics, "create_capped_namespace"), 1_005);
}

/// Users the snapshot holds count towards `--max-users` with those created since; past
/// it, no User, and the trace says why.
#[tokio::test]
async fn the_total_cap_counts_the_snapshot_and_the_created_users() {
    let s = snapshot(&format!(
        "{ID_TOKEN_IDP}resourceType: User\nid: one\n---\nresourceType: User\nid: two\n---\n\
         resourceType: User\nid: three\n"
    ));
    assert_eq!(s.users.len(), 3);
    let (resolver, store, metrics) = limited(CreationLimits {
        max_total: 5,
        ..Default::default()
    });
    assert_eq!(new_subjects(&resolver, &s, "total", 10).await, 2);
    assert_eq!(store.0.load(Ordering::SeqCst), 2);
    assert_eq!(counter(&metrics, "create_capped_total"), 8);
    assert_eq!(counter(&metrics, "create_rate_limited"), 0);

    let r = resolver
        .resolve(&s, &kc_token(&s, "one-more"), "raw", false)
        .await;
    assert!(
        matches!(
            r,
            Resolution::Limited {
                limit: Limit::Total,
                ..
            }
        ),
        "{r:?}"
    );
    assert!(r.user().is_none());
    let step = crate::decision::UserStep::from_resolution(&r);
    assert_eq!(step.result, "create-limited");
    assert_eq!(step.user.as_deref(), Some("keycloak-one-more"));
    assert!(step.detail.unwrap().contains("--max-users"));

    // A User already created is still found: the caps only stop new ones.
    let r = resolver
        .resolve(&s, &kc_token(&s, "total-0"), "raw", false)
        .await;
    assert!(matches!(r, Resolution::Found(..)), "{r:?}");
}

/// In kube mode each namespace has its own cap: one at its cap does not stop another.
#[tokio::test]
async fn the_namespace_cap_counts_each_namespace_apart() {
    let s = snapshot(ID_TOKEN_IDP);
    let (resolver, _, metrics) = limited(CreationLimits {
        max_per_namespace: 2,
        ..Default::default()
    });
    let mut serving = UserIndex::default();
    serving.insert(KnownUser::new("a/existing", &Default::default()));
    let mut created = Vec::new();
    for namespace in ["a", "b"] {
        for i in 0..5 {
            let t = kc_token(&s, &format!("{namespace}-{i}"));
            let mut subject = crate::decision::user::subject(&s, &t);
            subject.namespace = Some(namespace);
            match resolver.create(&serving, &subject, "raw", false).await {
                Resolution::Created(user) => created.push(user.name().to_owned()),
                Resolution::Limited {
                    limit: Limit::Namespace,
                    why,
                    ..
                } => assert!(why.contains(&format!("namespace {namespace}")), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        created,
        ["a/keycloak-a-0", "b/keycloak-b-0", "b/keycloak-b-1"]
    );
    assert_eq!(counter(&metrics, "create_capped_namespace"), 7);
}
