//! `serve --kube --users on-demand` against the fake API server: Users read when a request
//! needs them (by name, or by the label `portcullis.dev/identifier`), never watched; the
//! same decisions as `--users watch` on the same cluster; created Users labelled and found
//! by another replica; an API server that does not answer costs a request its User, never
//! its decision.

use crate::support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use portcullis::users::identifier_label;
use support::eventually;
use support::ext_authz::{check, Checked};
use support::fake_apiserver::FakeApiServer;
use support::portcullis::Portcullis;
use support::tokens::Jwt;

const API: &str = "portcullis.dev/v1alpha1";
const NS: &str = "team-a";
const ISSUER: &str = "https://auth.example.com";
const SECRET: &str = "on-demand-secret-of-32-bytes-or-more";
const SYSTEM: &str = "https://kc";
const LABEL: &str = "portcullis.dev/identifier";

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// A User holding `{SYSTEM, sub}` for each of `subs`, labelled with the hash of the first
/// when `labelled`.
fn user(name: &str, subs: &[&str], labelled: bool, data: Value) -> Value {
    let identifiers: Vec<Value> = subs
        .iter()
        .map(|s| json!({"system": SYSTEM, "value": s}))
        .collect();
    let mut u = object(
        "User",
        name,
        json!({"identifier": identifiers, "data": data}),
    );
    if labelled {
        u["metadata"]["labels"] = json!({ LABEL: identifier_label(SYSTEM, subs[0]) });
    }
    u
}

/// The provider `kc` (Users from the token's claims), the introspector `auth` naming it,
/// and policies whose answers depend on the User: GET for anyone with a token, POST for a
/// User whose data says `writer`, DELETE for the User `alice` alone (a link).
fn cluster(fake: &FakeApiServer) {
    fake.apply(object(
        "IdentityProvider",
        "kc",
        json!({"system": SYSTEM, "userinfo-source": "id-token"}),
    ));
    fake.apply(object(
        "TokenIntrospector",
        "auth",
        json!({"type": "jwt", "jwt": {"iss": ISSUER, "secret": SECRET},
               "identity_provider": {"reference": "IdentityProvider/kc"}}),
    ));
    fake.apply(object(
        "AccessPolicy",
        "read",
        json!({"engine": "matcho", "matcho": {"request-method": "get"}}),
    ));
    fake.apply(object(
        "AccessPolicy",
        "write",
        json!({"engine": "matcho", "matcho": {"request-method": "post", "user": {"data": {"role": "writer"}}}}),
    ));
    fake.apply(object(
        "AccessPolicy",
        "delete",
        json!({"engine": "matcho", "matcho": {"request-method": "delete"},
               "link": [{"reference": "User/alice"}]}),
    ));
}

/// `serve --kube` against the fake, `--users on-demand` unless `extra` says otherwise.
async fn serve(fake: &FakeApiServer, dir: &Path, name: &str, extra: &[&str]) -> Portcullis {
    let mut builder = Portcullis::builder()
        .arg("--kube")
        .env("KUBECONFIG", fake.kubeconfig(dir))
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", NS);
    if !extra.contains(&"--users") {
        builder = builder.arg("--users").arg("on-demand");
    }
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start().await
}

fn token(sub: &str) -> String {
    Jwt::new(ISSUER, sub).exp_in(3600).sign_hs256(SECRET)
}

fn token_naming(sub: &str, box_user: &str) -> String {
    Jwt::new(ISSUER, sub)
        .claim("box_user", box_user)
        .exp_in(3600)
        .sign_hs256(SECRET)
}

async fn decide(p: &Portcullis, method: &str, token: &str) -> Checked {
    let mut client = p.ext_authz_client().await;
    check(&mut client, method, "/fhir/Patient", Some(token)).await
}

async fn user_of(p: &Portcullis, token: &str) -> Option<String> {
    decide(p, "GET", token)
        .await
        .header("x-portcullis-user")
        .map(str::to_string)
}

/// One read of a User: `(labelSelector, fieldSelector)`.
type Read = (Option<String>, Option<String>);

/// The reads of Users the fake has seen, and whether any request watched them.
fn user_reads(fake: &FakeApiServer) -> (Vec<Read>, bool) {
    let users: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path().ends_with("/users"))
        .collect();
    let watched = users.iter().any(|r| r.query("watch").is_some());
    let reads = users
        .iter()
        .filter(|r| {
            r.query("fieldSelector").is_some()
                || r.query("labelSelector")
                    .is_some_and(|l| l.starts_with(&format!("{LABEL}=")))
        })
        .map(|r| (r.query("labelSelector"), r.query("fieldSelector")))
        .collect();
    (reads, watched)
}

/// The `Ready` condition of a User once it says `status` with a message holding `saying`.
async fn user_condition(fake: &FakeApiServer, name: &str, status: &str, saying: &str) -> Value {
    eventually(
        &format!("User/{name} Ready={status} saying {saying:?}"),
        || async {
            let o = fake.get(API, "users", NS, name)?;
            let condition = o["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            let said = condition["status"] == status
                && condition["message"].as_str()?.contains(saying)
                && o["status"]["observedGeneration"] == o["metadata"]["generation"];
            said.then_some(condition)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_read_by_identifier_label_and_by_name_then_served_from_the_cache() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&fake);
    fake.apply(user("kc-ann", &["ann"], true, json!({"role": "writer"})));
    fake.apply(user("bob", &[], false, json!({})));
    let p = serve(
        &fake,
        dir.path(),
        "replica-1",
        &["--users-count-interval-secs", "1"],
    )
    .await;

    // The first count lists the Users' names (metadata only): what is read on a miss
    // follows from them.
    eventually("the first count of the Users", || async {
        (p.metrics().await.value("portcullis_users_counted", &[]) == 2.0).then_some(())
    })
    .await;
    // By the label of {system, sub} alone: `ann` names no User, so nothing is read by name.
    let ann = token("ann");
    assert_eq!(user_of(&p, &ann).await.as_deref(), Some("team-a/kc-ann"));
    assert_eq!(
        decide(&p, "POST", &ann).await.status,
        200,
        "her data says writer"
    );
    let (reads, watched) = user_reads(&fake);
    assert!(!watched, "no User is watched: {reads:?}");
    let label = format!("{LABEL}={}", identifier_label(SYSTEM, "ann"));
    assert_eq!(reads, [(Some(label), None)]);
    // By name alone: a User without identifiers, named by `sub`.
    fake.clear_requests();
    let bob = token("bob");
    assert_eq!(user_of(&p, &bob).await.as_deref(), Some("team-a/bob"));
    assert_eq!(decide(&p, "POST", &bob).await.status, 403);
    assert_eq!(
        user_reads(&fake).0,
        [(None, Some("metadata.name=bob".to_string()))]
    );

    // Cached: no more reads, however many decisions.
    fake.clear_requests();
    for _ in 0..20 {
        assert_eq!(user_of(&p, &ann).await.as_deref(), Some("team-a/kc-ann"));
        assert_eq!(user_of(&p, &bob).await.as_deref(), Some("team-a/bob"));
    }
    assert!(user_reads(&fake).0.is_empty());

    // A subject with no User: one read, by label, and "none" is cached too.
    let nobody = token("nobody");
    assert_eq!(user_of(&p, &nobody).await, None);
    assert_eq!(user_of(&p, &nobody).await, None);
    assert_eq!(user_reads(&fake).0.len(), 1);

    // The Users read say they serve; the counts come from metadata-only lists.
    user_condition(&fake, "kc-ann", "True", "serving").await;
    eventually("a metadata-only list of the Users", || async {
        let counted = fake.requests().into_iter().any(|r| {
            r.path().ends_with("/users")
                && r.query("watch").is_none()
                && r.accept
                    .as_deref()
                    .is_some_and(|a| a.contains("as=PartialObjectMetadataList"))
        });
        counted.then_some(())
    })
    .await;
    let metrics = p.metrics().await;
    assert_eq!(metrics.user_event("lookup_call"), 3);
    metrics.assert_no_user_event("lookup_error");
    metrics.assert_no_user_event("lookup_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unlabelled_user_is_found_by_name_only_and_its_status_says_so() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&fake);
    // Hand-written: an identifier, no label; and one whose label names someone else.
    fake.apply(user(
        "carol",
        &["carol-sub"],
        false,
        json!({"role": "writer"}),
    ));
    let mut wrong = user("dave", &["dave-sub"], false, json!({}));
    wrong["metadata"]["labels"] = json!({ LABEL: identifier_label(SYSTEM, "someone-else") });
    fake.apply(wrong);
    let p = serve(
        &fake,
        dir.path(),
        "replica-1",
        &["--users-count-interval-secs", "1"],
    )
    .await;

    // Not by identifier: the label is what finds a User by identifier on demand.
    assert_eq!(user_of(&p, &token("carol-sub")).await, None);
    assert_eq!(user_of(&p, &token("dave-sub")).await, None);
    // By name, from a token that carries her identifier.
    let named = token_naming("carol-sub", "carol");
    assert_eq!(user_of(&p, &named).await.as_deref(), Some("team-a/carol"));

    // Status says why, for each: the one without the label from the periodic list of
    // unlabelled Users, the mislabelled one once a read by name meets it.
    let missing = user_condition(&fake, "carol", "True", "found by name only").await;
    let message = missing["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "no label `{LABEL}: {}`",
            identifier_label(SYSTEM, "carol-sub")
        )),
        "{message}"
    );
    assert_eq!(missing["reason"], "Accepted");
    assert_eq!(
        user_of(&p, &token_naming("dave-sub", "dave"))
            .await
            .as_deref(),
        Some("team-a/dave")
    );
    user_condition(&fake, "dave", "True", "names none of its identifiers").await;

    // Labelled, it is found by identifier once "none" has expired (10 s by default: here
    // a replica started afterwards, with nothing cached).
    fake.apply(user(
        "carol",
        &["carol-sub"],
        true,
        json!({"role": "writer"}),
    ));
    let q = serve(&fake, dir.path(), "replica-2", &[]).await;
    assert_eq!(
        user_of(&q, &token("carol-sub")).await.as_deref(),
        Some("team-a/carol")
    );
    // And its status stops saying it is found by name only: the periodic list of
    // unlabelled Users no longer holds it, so it is read again.
    eventually("User/carol's status no longer warns", || async {
        let o = fake.get(API, "users", NS, "carol")?;
        (o["status"]["conditions"][0]["message"] == "serving").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_user_is_labelled_and_found_by_another_replica_one_user_per_subject() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&fake);
    let a = serve(&fake, dir.path(), "replica-a", &["--create-users"]).await;
    let b = serve(&fake, dir.path(), "replica-b", &["--create-users"]).await;

    // Creation waits for the first count of the Users (the caps): it comes at start-up.
    for p in [&a, &b] {
        eventually("the Users counted", || async {
            let at = p
                .metrics()
                .await
                .value("portcullis_users_counted_timestamp_seconds", &[]);
            (at > 0.0).then_some(())
        })
        .await;
    }
    let newcomer = token("new-subject");
    let mut calls = Vec::new();
    for p in [&a, &b] {
        for _ in 0..10 {
            let t = newcomer.clone();
            let mut client = p.ext_authz_client().await;
            calls.push(tokio::spawn(async move {
                check(&mut client, "GET", "/fhir/Patient", Some(&t)).await
            }));
        }
    }
    let mut users = HashSet::new();
    for call in calls {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        users.insert(answer.header("x-portcullis-user").map(str::to_string));
    }
    assert_eq!(users.len(), 1, "one User for everyone: {users:?}");
    let name = users.into_iter().next().unwrap().expect("a User");
    let object_name = name.strip_prefix("team-a/").unwrap();
    let objects = fake.list("users");
    assert_eq!(objects.len(), 1, "{objects:#?}");
    assert_eq!(objects[0]["metadata"]["name"], object_name);
    assert_eq!(
        objects[0]["metadata"]["labels"][LABEL],
        identifier_label(SYSTEM, "new-subject")
    );
    assert_eq!(
        objects[0]["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "portcullis"
    );

    // A third replica, which never saw it, finds it by its label.
    let c = serve(&fake, dir.path(), "replica-c", &[]).await;
    assert_eq!(user_of(&c, &newcomer).await.as_deref(), Some(name.as_str()));
    let created: u64 = [&a, &b]
        .iter()
        .map(|p| async {
            let metrics = p.metrics().await;
            metrics
                .find("portcullis_user_events_total", &[("event", "created")])
                .unwrap_or(0.0) as u64
        })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert!(
        (1..=2).contains(&created),
        "each replica at most once: {created}"
    );
}

/// The same cluster, two replicas, `--users watch` and `--users on-demand`: for a corpus of
/// tokens and methods, the same status, User and policy.
#[tokio::test(flavor = "multi_thread")]
async fn on_demand_decides_exactly_as_watch_on_the_same_cluster() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&fake);
    // Labelled Users (as created ones are), and hand-written ones without identifiers.
    fake.apply(user(
        "alice",
        &["alice-sub"],
        true,
        json!({"role": "writer"}),
    ));
    fake.apply(user("kc-ann", &["ann"], true, json!({"role": "reader"})));
    fake.apply(user("kc-zed", &["zed"], true, json!({"role": "writer"})));
    fake.apply(user("bob", &[], false, json!({"role": "writer"})));
    fake.apply(user("shared", &[], false, json!({})));
    // Inactive: 403 whatever the policies.
    let mut gone = user("kc-gone", &["gone"], true, json!({}));
    gone["spec"]["inactive"] = json!(true);
    fake.apply(gone);
    // Two Users holding one identifier: the older serves in both modes.
    fake.apply(user(
        "kc-twin-1",
        &["twin"],
        true,
        json!({"role": "writer"}),
    ));
    // creationTimestamp has whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.apply(user(
        "kc-twin-2",
        &["twin"],
        true,
        json!({"role": "reader"}),
    ));
    let watch = serve(&fake, dir.path(), "watch", &["--users", "watch"]).await;
    let on_demand = serve(&fake, dir.path(), "on-demand", &[]).await;

    let mut tokens = Vec::new();
    for sub in [
        "alice-sub",
        "ann",
        "zed",
        "bob",
        "shared",
        "gone",
        "twin",
        "nobody",
        "alice",
    ] {
        tokens.push((format!("sub {sub}"), token(sub)));
        for box_user in ["alice", "bob", "shared", "kc-ann", "nobody"] {
            tokens.push((
                format!("sub {sub}, box_user {box_user}"),
                token_naming(sub, box_user),
            ));
        }
    }
    let mut compared = 0;
    for (what, t) in &tokens {
        for method in ["GET", "POST", "DELETE"] {
            let a = decide(&watch, method, t).await;
            let b = decide(&on_demand, method, t).await;
            let seen = |c: &Checked| {
                (
                    c.status,
                    c.header("x-portcullis-user").map(str::to_string),
                    c.header("x-portcullis-policy").map(str::to_string),
                )
            };
            assert_eq!(seen(&a), seen(&b), "{method} with {what}");
            compared += 1;
        }
    }
    assert_eq!(compared, tokens.len() * 3);
    let metrics = on_demand.metrics().await;
    assert!(metrics.user_event("lookup_call") > 0);
    metrics.assert_no_user_event("lookup_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_server_that_does_not_answer_costs_a_request_its_user_not_its_decision() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    cluster(&fake);
    fake.apply(user("kc-ann", &["ann"], true, json!({"role": "writer"})));
    fake.apply(user("kc-eve", &["eve"], true, json!({"role": "writer"})));
    let p = serve(
        &fake,
        dir.path(),
        "replica-1",
        &["--decision-timeout-ms", "600"],
    )
    .await;
    let ann = token("ann");
    assert_eq!(user_of(&p, &ann).await.as_deref(), Some("team-a/kc-ann"));

    // Hung: the request waits at most its deadline, less a tenth, then goes on without a
    // User; GET is allowed to anyone with a token.
    fake.set_stalled(true);
    let eve = token("eve");
    let started = Instant::now();
    let answer = decide(&p, "GET", &eve).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-user"), None);
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // POST needs the User's data: without it, 403, never a 503.
    assert_eq!(decide(&p, "POST", &eve).await.status, 403);
    // A User read before is served from the cache meanwhile.
    assert_eq!(user_of(&p, &ann).await.as_deref(), Some("team-a/kc-ann"));

    // Down (503): the read fails at once, without waiting.
    fake.set_stalled(false);
    fake.set_outage(true);
    let mallory = token("mallory");
    let started = Instant::now();
    let answer = decide(&p, "GET", &mallory).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-portcullis-user"), None);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    fake.set_outage(false);

    // Back: the read that was held answered, and was cached; or it is read now.
    eventually("eve's User once the API server answers", || async {
        (user_of(&p, &eve).await.as_deref() == Some("team-a/kc-eve")).then_some(())
    })
    .await;
    let metrics = p.metrics().await;
    assert!(
        metrics.user_event("lookup_timeout") >= 2,
        "{}",
        metrics.text()
    );
    assert!(
        metrics.user_event("lookup_error") >= 1,
        "{}",
        metrics.text()
    );
}
