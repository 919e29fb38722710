//! Tenancy end to end: `serve --kube` against the fake API server with a root namespace and
//! two teams. A team's resources reach its own namespace's requests and no one else's;
//! the root's reach everyone's.

use crate::support;

use std::path::Path;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
use serde_json::{json, Value};

use support::eventually;
use support::ext_authz::{check_request, send, Checked};
use support::fake_apiserver::FakeApiServer;
use support::portcullis::Portcullis;
use support::stub_idp::StubIdp;
use support::tokens::{now, Jwt};

const API: &str = "portcullis.dev/v1alpha1";
const ROOT: &str = "platform";
const CORP: &str = "https://corp.example.com";
const CORP_SECRET: &str = "corp-secret-of-32-bytes-or-more!!!";
const SHARED: &str = "https://shared.example.com";
const A_SECRET: &str = "team-a-secret-of-32-bytes-or-more!!";
const B_SECRET: &str = "team-b-secret-of-32-bytes-or-more!!";

fn object(kind: &str, namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind,
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn jwt(namespace: &str, name: &str, iss: &str, secret: &str) -> Value {
    object(
        "TokenIntrospector",
        namespace,
        name,
        json!({"type": "jwt", "jwt": {"iss": iss, "secret": secret}}),
    )
}

fn matcho(namespace: &str, name: &str, matcho: Value) -> Value {
    object(
        "AccessPolicy",
        namespace,
        name,
        json!({"engine": "matcho", "matcho": matcho}),
    )
}

/// Started as the chart starts it: in the root namespace, which is the default root.
async fn serve(fake: &FakeApiServer, dir: &Path) -> Portcullis {
    Portcullis::builder()
        .arg("--kube")
        .env("KUBECONFIG", fake.kubeconfig(dir))
        .env("POD_NAMESPACE", ROOT)
        .start()
        .await
}

/// A `Check` of `GET path` with a token, for a route of `namespace` (its
/// `context_extensions`), or, with `spiffe`, for a destination of that identity.
async fn decide(
    p: &Portcullis,
    route: Option<&str>,
    spiffe: Option<&str>,
    path: &str,
    token: &str,
) -> Checked {
    let authorization = format!("Bearer {token}");
    let mut request = check_request("GET", path, &[("authorization", &authorization)], false);
    let attributes = request.attributes.as_mut().unwrap();
    if let Some(ns) = route {
        attributes
            .context_extensions
            .insert("portcullis.dev/namespace".into(), ns.into());
    }
    if let Some(principal) = spiffe {
        attributes.destination = Some(Peer {
            principal: principal.into(),
            ..Default::default()
        });
    }
    let mut client = p.ext_authz_client().await;
    send(&mut client, request).await
}

fn token(iss: &str, sub: &str, secret: &str) -> String {
    Jwt::new(iss, sub).exp_in(3600).sign_hs256(secret)
}

fn compiled(scrape: &support::metrics::Scrape) -> u64 {
    scrape.counter("portcullis_config_resources_compiled_total", &[])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teams_resources_reach_its_own_requests_only() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rogue = StubIdp::start(json!({"keys": []})).await;
    let honest = StubIdp::start(json!({"keys": []})).await;

    // The platform: one issuer for everyone, and a health check open to all.
    fake.apply(jwt(ROOT, "corp", CORP, CORP_SECRET));
    fake.apply(matcho(ROOT, "health", json!({"uri": "/healthz"})));
    // Team A opens everything of its own, and tries to squat the platform's issuer.
    fake.apply(object(
        "AccessPolicy",
        "team-a",
        "open",
        json!({"engine": "allow"}),
    ));
    fake.apply(jwt(
        "team-a",
        "squat",
        CORP,
        "guessed-secret-of-32-bytes-or-more",
    ));
    // Both teams trust one issuer, each with its own secret.
    fake.apply(jwt("team-a", "shared", SHARED, A_SECRET));
    fake.apply(jwt("team-b", "shared", SHARED, B_SECRET));
    fake.apply(matcho("team-b", "read", json!({"jwt": {"sub": "bob"}})));
    // Team A's opaque introspector points at its own endpoint; team B's at another.
    let opaque = |ns: &str, url: String| {
        object(
            "TokenIntrospector",
            ns,
            "opaque",
            json!({"type": "opaque", "introspection_endpoint": {"url": url}}),
        )
    };
    fake.apply(opaque("team-a", rogue.introspection_url()));
    fake.apply(opaque("team-b", honest.introspection_url()));
    fake.apply(matcho(
        "team-b",
        "introspected",
        json!({"token": {"sub": "carol"}}),
    ));

    let p = serve(&fake, dir.path()).await;
    let corp = token(CORP, "anyone", CORP_SECRET);

    // Team A's allow-all opens team A's routes, not team B's, nor a request of no
    // namespace; the platform's health check is open on every route.
    assert_eq!(
        decide(&p, Some("team-a"), None, "/x", &corp).await.status,
        200
    );
    assert_eq!(
        decide(&p, Some("team-b"), None, "/x", &corp).await.status,
        403
    );
    assert_eq!(decide(&p, None, None, "/x", &corp).await.status, 403);
    let health = decide(&p, Some("team-b"), None, "/healthz", &corp).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.header("x-portcullis-policy"),
        Some("platform/health")
    );
    // Without a route namespace, the destination's SPIFFE identity names it.
    let spiffe = "spiffe://cluster.local/ns/team-a/sa/web";
    let by_identity = decide(&p, None, Some(spiffe), "/x", &corp).await;
    assert_eq!(by_identity.status, 200);
    assert_eq!(
        by_identity.header("x-portcullis-policy"),
        Some("team-a/open")
    );
    // The route's namespace comes first.
    assert_eq!(
        decide(&p, Some("team-b"), Some(spiffe), "/x", &corp)
            .await
            .status,
        403
    );

    // The platform's issuer is the platform's: team A's copy is refused, naming the winner.
    let squat = eventually("the squatter is refused", || async {
        let o = fake.get(API, "tokenintrospectors", "team-a", "squat")?;
        let c = o["status"]["conditions"].as_array()?.first()?.clone();
        (c["status"] == "False").then_some(c)
    })
    .await;
    assert_eq!(squat["reason"], "Conflict");
    assert!(
        squat["message"].as_str().unwrap().contains("platform/corp"),
        "{squat}"
    );
    let guessed = token(CORP, "mallory", "guessed-secret-of-32-bytes-or-more");
    assert_eq!(
        decide(&p, Some("team-a"), None, "/x", &guessed)
            .await
            .status,
        401
    );

    // One issuer, two teams, two secrets: each team's token is good in its own namespace.
    let bob_a = token(SHARED, "bob", A_SECRET);
    let bob_b = token(SHARED, "bob", B_SECRET);
    assert_eq!(
        decide(&p, Some("team-b"), None, "/x", &bob_b).await.status,
        200
    );
    assert_eq!(
        decide(&p, Some("team-b"), None, "/x", &bob_a).await.status,
        401
    );
    assert_eq!(
        decide(&p, Some("team-a"), None, "/x", &bob_a).await.status,
        200
    );
    assert_eq!(decide(&p, None, None, "/x", &bob_b).await.status, 401);

    // Team B's opaque tokens never reach team A's introspector.
    let carol = "carol-opaque-token";
    honest.answer(
        carol,
        json!({"active": true, "sub": "carol", "exp": now() + 600}),
    );
    rogue.answer(
        carol,
        json!({"active": true, "sub": "carol", "exp": now() + 600}),
    );
    let answer = decide(&p, Some("team-b"), None, "/x", carol).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("x-portcullis-policy"),
        Some("team-b/introspected")
    );
    assert_eq!(decide(&p, None, None, "/x", carol).await.status, 401);
    assert_eq!(honest.introspections(), 1);
    assert_eq!(
        rogue.introspections(),
        0,
        "team A's endpoint saw team B's token"
    );

    // A team's edit compiles that team's objects alone; the root's, every scope.
    let before = compiled(&p.metrics().await);
    fake.apply(matcho("team-b", "read", json!({"jwt": {"sub": "bobby"}})));
    let bobby = token(SHARED, "bobby", B_SECRET);
    eventually("team B's edit applies", || async {
        (decide(&p, Some("team-b"), None, "/x", &bobby).await.status == 200).then_some(())
    })
    .await;
    let team_b_objects = 4; // shared, read, opaque, introspected
    assert_eq!(compiled(&p.metrics().await) - before, team_b_objects);
    let before = compiled(&p.metrics().await);
    fake.apply(matcho(ROOT, "health", json!({"uri": "/livez"})));
    eventually("the root's edit applies", || async {
        let live = decide(&p, Some("team-b"), None, "/livez", &corp).await;
        (live.status == 200).then_some(())
    })
    .await;
    // corp, health; team A's open, squat, shared, opaque; team B's four.
    assert_eq!(
        compiled(&p.metrics().await) - before,
        10,
        "every object of every scope"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_teams_user_is_never_resolved_for_another_team() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for team in ["team-a", "team-b"] {
        fake.apply(object(
            "IdentityProvider",
            team,
            "kc",
            json!({"system": "https://kc"}),
        ));
        fake.apply(object(
            "TokenIntrospector",
            team,
            "auth",
            json!({"type": "jwt", "jwt": {"iss": SHARED, "secret": if team == "team-a" { A_SECRET } else { B_SECRET }},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        ));
        fake.apply(matcho(team, "users", json!({"user": {"id": "alice"}})));
    }
    // Only team A has a User for subject sub-1; team B's token with the same subject (and
    // the same IdentityProvider system) must not find it.
    fake.apply(object(
        "User",
        "team-a",
        "alice",
        json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
    ));
    let p = serve(&fake, dir.path()).await;
    let a = token(SHARED, "sub-1", A_SECRET);
    let b = token(SHARED, "sub-1", B_SECRET);
    let found = eventually("team A's User is found", || async {
        let answer = decide(&p, Some("team-a"), None, "/x", &a).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert_eq!(found.header("x-portcullis-user"), Some("team-a/alice"));
    let other = decide(&p, Some("team-b"), None, "/x", &b).await;
    assert_eq!(other.status, 403, "{other:?}");
    assert_eq!(other.header("x-portcullis-user"), None);
    // By name too: `sub` naming team A's User from team B's issuer finds nothing.
    let by_name = token(SHARED, "alice", B_SECRET);
    assert_eq!(
        decide(&p, Some("team-b"), None, "/x", &by_name)
            .await
            .status,
        403
    );
}

/// `deploy/examples/istio/team-namespace.yaml` as written (its portcullis objects and its
/// Secret), decided as Istio's sidecars ask: the namespace from the destination's SPIFFE
/// identity. Its partner's opaque tokens are introspected with the labelled Secret, for
/// team-a's workloads only; the root's corporate issuer works under team-a's policies.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_istio_team_namespace_decides_as_it_says() {
    use serde::Deserialize;
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let partner = StubIdp::start(json!({"keys": []})).await;
    let text = std::fs::read_to_string(support::repo_path(
        "deploy/examples/istio/team-namespace.yaml",
    ))
    .unwrap();
    let mut applied = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut object = Value::deserialize(doc).unwrap();
        let ours = object["apiVersion"] == API || object["kind"] == "Secret";
        if !ours {
            continue; // the Namespace and Istio's own kinds
        }
        if let Some(url) = object.pointer_mut("/spec/introspection_endpoint/url") {
            *url = json!(partner.introspection_url());
        }
        fake.apply(object);
        applied += 1;
    }
    assert_eq!(applied, 4, "the Secret, the introspector and two policies");
    const CORP_ISSUER: &str = "https://keycloak.example.com/realms/corp";
    fake.apply(jwt(ROOT, "corp", CORP_ISSUER, CORP_SECRET));
    let p = serve(&fake, dir.path()).await;

    let orders = Some("spiffe://cluster.local/ns/team-a/sa/orders");
    let elsewhere = Some("spiffe://cluster.local/ns/team-b/sa/billing");
    let partner_token = "partner-opaque-token";
    partner.answer(
        partner_token,
        json!({"active": true, "sub": "partner", "scope": "orders:read", "exp": now() + 600}),
    );
    let answer = eventually("the partner's token reads orders", || async {
        let answer = decide(&p, None, orders, "/orders/42", partner_token).await;
        (answer.status == 200).then_some(answer)
    })
    .await;
    assert_eq!(
        answer.header("x-portcullis-policy"),
        Some("team-a/partner-reads-orders")
    );
    let sent = partner.state.lock().unwrap().authorizations.clone();
    assert_eq!(
        sent.last().cloned().flatten().as_deref(),
        Some("Basic b3JkZXJzOmNoYW5nZS1tZQ=="),
        "the labelled Secret's credential"
    );
    let introspections = partner.introspections();
    assert_eq!(
        decide(&p, None, elsewhere, "/orders/42", partner_token)
            .await
            .status,
        401
    );
    assert_eq!(
        partner.introspections(),
        introspections,
        "team-b's request stays home"
    );

    let staff = Jwt::new(CORP_ISSUER, "sam")
        .claim("realm_access", json!({"roles": ["orders-admin"]}))
        .exp_in(600)
        .sign_hs256(CORP_SECRET);
    let answer = decide(&p, None, orders, "/orders/42", &staff).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("x-portcullis-policy"),
        Some("team-a/staff-manage-orders")
    );
    assert_eq!(
        decide(&p, None, elsewhere, "/orders/42", &staff)
            .await
            .status,
        403
    );
}
