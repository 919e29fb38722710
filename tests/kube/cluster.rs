//! Kubernetes mode end to end: `portcullis serve --kube` with kube-rs's real client and
//! watchers, against the in-repo fake API server (`tests/support/fake_apiserver/`), which
//! speaks the API server's HTTP: list, watch with bookmarks, `410 Gone`, create with
//! `409`, patches, the status subresource, and an outage switch.

use crate::support;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use support::ext_authz::{check, Checked};
use support::fake_apiserver::{FakeApiServer, RecordedRequest};
use support::portcullis::Portcullis;
use support::stub_idp::StubIdp;
use support::tokens::{now, Jwt};
use support::{eventually, repo_path};

const API: &str = "portcullis.dev/v1alpha1";
const NS: &str = "team-a";
const ISSUER: &str = "https://auth.example.com";
const SECRET: &str = "first-secret-of-32-bytes-or-more!!";

/// The labels of a Secret that portcullis may read.
fn consumer() -> Value {
    json!({"portcullis.dev/secret-consumer": "true"})
}

/// A request for Secrets either selects the labelled ones, or asks for metadata alone (to
/// tell a missing Secret from an unlabelled one in the log): no other Secret's data is
/// ever read.
fn assert_only_labelled_secrets_read(r: &RecordedRequest) {
    let labelled =
        r.query("labelSelector").as_deref() == Some("portcullis.dev/secret-consumer=true");
    let metadata_only = r
        .accept
        .as_deref()
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"))
        && r.query("watch").is_none();
    assert!(labelled || metadata_only, "{r:?}");
}

fn kubeconfig(fake: &FakeApiServer, dir: &Path) -> PathBuf {
    fake.kubeconfig(dir)
}

/// `serve --kube` against the fake; `name` names the replica in the status Lease.
async fn serve(fake: &FakeApiServer, dir: &Path, name: &str, extra: &[&str]) -> Portcullis {
    // The pod's namespace, as the Deployment's downward API sets it: the root.
    let mut builder = Portcullis::builder()
        .arg("--kube")
        .env("KUBECONFIG", kubeconfig(fake, dir))
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", NS);
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start().await
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn introspector(jwt: Value) -> Value {
    object(
        "TokenIntrospector",
        "auth",
        json!({"type": "jwt", "jwt": jwt}),
    )
}

fn policy(name: &str, method: &str) -> Value {
    object(
        "AccessPolicy",
        name,
        json!({"engine": "matcho", "matcho": {"request-method": method}}),
    )
}

fn token(sub: &str, secret: &str) -> String {
    Jwt::new(ISSUER, sub).exp_in(3600).sign_hs256(secret)
}

async fn decide(p: &Portcullis, method: &str, token: &str) -> Checked {
    let mut client = p.ext_authz_client().await;
    check(&mut client, method, "/fhir/Patient", Some(token)).await
}

/// Waits until `method` with `token` gets `status`.
async fn until_status(
    p: &Portcullis,
    method: &str,
    token: &str,
    status: u16,
    what: &str,
) -> Checked {
    eventually(what, || async {
        let answer = decide(p, method, token).await;
        (answer.status == status).then_some(answer)
    })
    .await
}

/// The `Ready` condition the fake holds for an object, once its generation is observed.
async fn ready_condition(fake: &FakeApiServer, plural: &str, name: &str, status: &str) -> Value {
    eventually(&format!("{plural}/{name} Ready={status}"), || async {
        let o = fake.get(API, plural, NS, name)?;
        let generation = o["metadata"]["generation"].clone();
        let condition = o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (o["status"]["observedGeneration"] == generation && condition["status"] == status)
            .then_some(condition)
    })
    .await
}

/// The IdentityProvider `kc` (Users from the token's claims) and the TokenIntrospector
/// `auth` that names it, both with `labels`.
fn with_provider(fake: &FakeApiServer, jwt: Value, labels: Value) {
    let labelled = |mut o: Value| {
        o["metadata"]["labels"] = labels.clone();
        o
    };
    fake.apply(labelled(object(
        "IdentityProvider",
        "kc",
        json!({"system": "https://kc", "userinfo-source": "id-token"}),
    )));
    fake.apply(labelled(object(
        "TokenIntrospector",
        "auth",
        json!({"type": "jwt", "jwt": jwt,
               "identity_provider": {"reference": "IdentityProvider/kc"}}),
    )));
}

fn base(fake: &FakeApiServer) {
    fake.apply(introspector(json!({"iss": ISSUER, "secret": SECRET})));
    fake.apply(policy("read", "get"));
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_edit_and_delete_change_the_decision_and_status_says_why() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    let alice = token("alice", SECRET);

    let allowed = decide(&p, "GET", &alice).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-portcullis-policy"), Some("team-a/read"));
    assert_eq!(decide(&p, "POST", &alice).await.status, 403);
    let accepted = ready_condition(&fake, "accesspolicies", "read", "True").await;
    assert_eq!(accepted["reason"], "Accepted");
    ready_condition(&fake, "tokenintrospectors", "auth", "True").await;

    // An edit applies.
    fake.apply(policy("read", "post"));
    until_status(&p, "POST", &alice, 200, "the edited policy allows POST").await;
    assert_eq!(decide(&p, "GET", &alice).await.status, 403);

    // A new invalid object is marked, names its field, and stays out.
    fake.apply(object(
        "AccessPolicy",
        "broken",
        json!({"engine": "json-schema", "schema": {"type": 12}}),
    ));
    let invalid = ready_condition(&fake, "accesspolicies", "broken", "False").await;
    assert_eq!(invalid["reason"], "Invalid");
    assert!(
        invalid["message"].as_str().unwrap().contains("schema"),
        "{invalid}"
    );

    // An object this version cannot even read (schema skew) is marked; the watch goes on.
    fake.apply(object(
        "TokenIntrospector",
        "unreadable",
        json!({"type": "saml", "jwt": {"iss": "https://other"}}),
    ));
    let unreadable = ready_condition(&fake, "tokenintrospectors", "unreadable", "False").await;
    assert!(
        unreadable["message"]
            .as_str()
            .unwrap()
            .contains("field `type`"),
        "{unreadable}"
    );

    // An invalid edit of a good object keeps the previous version serving.
    fake.apply(object(
        "AccessPolicy",
        "read",
        json!({"engine": "matcho", "matcho": {"uri": "#(unclosed"}}),
    ));
    let kept = ready_condition(&fake, "accesspolicies", "read", "False").await;
    assert!(
        kept["message"]
            .as_str()
            .unwrap()
            .contains("previous version keeps serving"),
        "{kept}"
    );
    assert_eq!(decide(&p, "POST", &alice).await.status, 200);
    support::eventually("the refusals counted", || async {
        let refused = p.metrics().await.value("portcullis_resources_refused", &[]);
        (refused >= 3.0).then_some(())
    })
    .await;

    // A deletion always applies.
    fake.delete(API, "accesspolicies", NS, "read");
    until_status(
        &p,
        "POST",
        &alice,
        403,
        "the deleted policy no longer allows",
    )
    .await;

    // The introspector: an edit of its secret changes which tokens are valid.
    fake.apply(policy("read", "get"));
    until_status(&p, "GET", &alice, 200, "the policy is back").await;
    let other = "second-secret-of-32-bytes-or-more!";
    fake.apply(introspector(json!({"iss": ISSUER, "secret": other})));
    until_status(
        &p,
        "GET",
        &alice,
        401,
        "the old secret's tokens are refused",
    )
    .await;
    assert_eq!(decide(&p, "GET", &token("alice", other)).await.status, 200);
    let metrics = p.metrics().await;
    assert_eq!(metrics.value("portcullis_resources_refused", &[]), 2.0);
    // The conditions read above were written by this replica, the only Lease holder.
    assert!(metrics.counter("portcullis_status_writes_total", &[("result", "ok")]) >= 4);
    let built_at = metrics.value("portcullis_config_last_load_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - built_at < 60.0,
        "the serving snapshot is {}s old",
        now - built_at
    );

    // Without its introspector, no token of that issuer is valid.
    fake.delete(API, "tokenintrospectors", NS, "auth");
    until_status(
        &p,
        "GET",
        &token("alice", other),
        401,
        "the deleted introspector",
    )
    .await;
}

/// A dry-run policy from the cluster: evaluated, counted under its `namespace/name`, never
/// allowing. Its annotation changes no `generation`, yet flipping it takes effect, and a
/// bad value marks the object Invalid while the version before serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_annotation_takes_effect_though_the_generation_stays() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    let annotated = |value: Option<&str>| {
        let mut o = policy("write", "post");
        if let Some(value) = value {
            o["metadata"]["annotations"] = json!({"portcullis.dev/dry-run": value});
        }
        o
    };
    fake.apply(annotated(Some("true")));
    let p = serve(&fake, dir.path(), "replica-1", &["--policy-metrics"]).await;
    let alice = token("alice", SECRET);
    ready_condition(&fake, "accesspolicies", "write", "True").await;
    assert_eq!(decide(&p, "POST", &alice).await.status, 403);
    let m = p.metrics().await;
    let evaluated = &[
        ("policy", "team-a/write"),
        ("result", "allow"),
        ("dry_run", "true"),
    ];
    assert_eq!(
        m.counter("portcullis_policy_evaluations_total", evaluated),
        1
    );
    let generation =
        fake.get(API, "accesspolicies", NS, "write").unwrap()["metadata"]["generation"].clone();

    // Enforced: the same spec and generation, the annotation gone.
    fake.apply(annotated(None));
    until_status(&p, "POST", &alice, 200, "the policy enforced").await;
    let o = fake.get(API, "accesspolicies", NS, "write").unwrap();
    assert_eq!(o["metadata"]["generation"], generation);

    // Dry-run again, then a value that is neither: Invalid, naming the annotation; the
    // version before (dry-run) keeps serving.
    fake.apply(annotated(Some("true")));
    until_status(&p, "POST", &alice, 403, "the policy dry-run again").await;
    fake.apply(annotated(Some("maybe")));
    let invalid = ready_condition(&fake, "accesspolicies", "write", "False").await;
    assert_eq!(invalid["reason"], "Invalid");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains(r#"field `metadata.annotations["portcullis.dev/dry-run"]`"#),
        "{invalid}"
    );
    assert_eq!(decide(&p, "POST", &alice).await.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_and_identity_providers_from_the_cluster_resolve_the_user() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    with_provider(&fake, json!({"iss": ISSUER, "secret": SECRET}), json!({}));
    fake.apply(object(
        "AccessPolicy",
        "alice-only",
        json!({"engine": "allow", "link": [{"reference": "User/alice"}]}),
    ));
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    let alice = token("sub-1", SECRET);
    assert_eq!(decide(&p, "GET", &alice).await.status, 403, "no User yet");

    fake.apply(object(
        "User",
        "alice",
        json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
    ));
    let allowed = until_status(&p, "GET", &alice, 200, "the User is found").await;
    // Named `namespace/name`: two namespaces may each hold an `alice`.
    assert_eq!(allowed.header("x-portcullis-user"), Some("team-a/alice"));
    ready_condition(&fake, "users", "alice", "True").await;

    // Deleted, the User no longer resolves; applied again, it does.
    fake.delete(API, "users", NS, "alice");
    until_status(&p, "GET", &alice, 403, "the deleted User is gone").await;
    fake.apply(object(
        "User",
        "alice",
        json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
    ));
    until_status(&p, "GET", &alice, 200, "the User is back").await;

    // A second User claiming the same identifier is refused as a conflict.
    fake.apply(object(
        "User",
        "impostor",
        json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
    ));
    let conflict = ready_condition(&fake, "users", "impostor", "False").await;
    assert_eq!(conflict["reason"], "Conflict");
    assert!(
        conflict["message"].as_str().unwrap().contains("alice"),
        "{conflict}"
    );

    // The IdentityProvider goes: the introspector that names it is refused, and its
    // tokens with it (fail closed).
    fake.delete(API, "identityproviders", NS, "kc");
    until_status(
        &p,
        "GET",
        &alice,
        401,
        "the introspector without its provider",
    )
    .await;
    let refused = ready_condition(&fake, "tokenintrospectors", "auth", "False").await;
    assert!(refused["message"]
        .as_str()
        .unwrap()
        .contains("IdentityProvider/team-a/kc"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_rotation_changes_the_accepted_key() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = |value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "hs", "namespace": NS, "labels": consumer()},
               "data": {"key": base64(value)}})
    };
    fake.apply(secret(SECRET));
    fake.apply(introspector(
        json!({"iss": ISSUER, "secretRef": {"name": "hs", "key": "key"}}),
    ));
    fake.apply(policy("read", "get"));
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    assert_eq!(decide(&p, "GET", &token("a", SECRET)).await.status, 200);

    let rotated = "rotated-secret-of-32-bytes-or-more";
    fake.apply(secret(rotated));
    until_status(
        &p,
        "GET",
        &token("a", rotated),
        200,
        "the new key is accepted",
    )
    .await;
    assert_eq!(decide(&p, "GET", &token("a", SECRET)).await.status, 401);

    // Secrets are read by one watch of every namespace, of the labelled ones only.
    let secret_reads: Vec<RecordedRequest> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path().contains("/secrets"))
        .collect();
    assert!(!secret_reads.is_empty());
    for r in &secret_reads {
        assert_eq!(r.path(), "/api/v1/secrets", "{r:?}");
        assert_only_labelled_secrets_read(r);
    }

    // A missing Secret is reported; the version that had one keeps serving.
    fake.delete("v1", "secrets", NS, "hs");
    let missing = ready_condition(&fake, "tokenintrospectors", "auth", "False").await;
    assert_eq!(missing["reason"], "SecretNotFound");
    assert_eq!(decide(&p, "GET", &token("a", rotated)).await.status, 200);
    assert_eq!(decide(&p, "GET", &token("a", SECRET)).await.status, 401);
    assert_eq!(
        p.metrics().await.value("portcullis_resources_refused", &[]),
        1.0
    );

    // Restored, it is read again without a restart.
    let restored = "restored-secret-of-32-bytes-or-more";
    fake.apply(secret(restored));
    ready_condition(&fake, "tokenintrospectors", "auth", "True").await;
    until_status(&p, "GET", &token("a", restored), 200, "the restored key").await;
    assert_eq!(decide(&p, "GET", &token("a", rotated)).await.status, 401);
}

/// A Secret without the consumer label is never read, let alone sent: an introspector
/// that names it reads `SecretNotFound` with the same message as one that names a missing
/// Secret, and only the log tells them apart. Labelled, it serves; unlabelled again, it is
/// `SecretNotFound` while the version read meanwhile serves on.
#[tokio::test(flavor = "multi_thread")]
async fn an_unlabelled_secret_is_unused_and_never_sent() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let idp = StubIdp::start(json!({"keys": []})).await;
    let value = "Basic dW5yZWxhdGVkOm5vdC1mb3ItcG9ydGN1bGxpcw==";
    let secret = |labels: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "unrelated", "namespace": NS, "labels": labels},
               "data": {"authorization": base64(value)}})
    };
    let opaque = |name: &str, secret: &str| {
        object(
            "TokenIntrospector",
            name,
            json!({"type": "opaque", "introspection_endpoint": {
                "url": idp.introspection_url(),
                "authorizationRef": {"name": secret, "key": "authorization"}}}),
        )
    };
    fake.apply(secret(json!({"team": "a"})));
    fake.apply(opaque("aimed", "unrelated"));
    fake.apply(opaque("dangling", "missing"));
    fake.apply(object(
        "AccessPolicy",
        "introspected",
        json!({"engine": "matcho", "matcho": {"token": {"sub": "alice"}}}),
    ));
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;

    let unlabelled = ready_condition(&fake, "tokenintrospectors", "aimed", "False").await;
    let missing = ready_condition(&fake, "tokenintrospectors", "dangling", "False").await;
    assert_eq!(unlabelled["reason"], "SecretNotFound");
    assert_eq!(missing["reason"], "SecretNotFound");
    let message = |c: &Value, name: &str| c["message"].as_str().unwrap().replace(name, "NAME");
    assert_eq!(
        message(&unlabelled, "unrelated"),
        message(&missing, "missing")
    );
    let opaque_token = "an-opaque-token";
    idp.answer(
        opaque_token,
        json!({"active": true, "sub": "alice", "iss": ISSUER, "exp": now() + 600}),
    );
    assert_ne!(decide(&p, "GET", opaque_token).await.status, 200);

    // The log says which it was, once per reference, and never what the Secret holds.
    let told = |p: &Portcullis, what: &str, secret: &str| {
        p.log()
            .lines()
            .filter(|l| l.contains(what) && l.contains(&format!("{NS}/{secret}")))
            .count()
    };
    eventually("the log tells missing from unlabelled", || async {
        (told(&p, "lacks the consumer label", "unrelated") == 1
            && told(&p, "does not exist", "missing") == 1)
            .then_some(())
    })
    .await;
    // Another rebuild logs neither again.
    fake.apply(object(
        "AccessPolicy",
        "nobody",
        json!({"engine": "matcho", "matcho": {"token": {"sub": "nobody"}}}),
    ));
    ready_condition(&fake, "accesspolicies", "nobody", "True").await;
    assert_eq!(told(&p, "lacks the consumer label", "unrelated"), 1, "once");
    assert_eq!(told(&p, "does not exist", "missing"), 1, "once");
    assert_eq!(told(&p, "lacks the consumer label", "missing"), 0);
    assert_eq!(told(&p, "does not exist", "unrelated"), 0);
    for line in p.log().lines() {
        assert!(
            !line.contains(value) && !line.contains(&base64(value)),
            "{line}"
        );
    }
    assert!(
        idp.state.lock().unwrap().authorizations.is_empty(),
        "nothing sent"
    );
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.path().contains("/secrets"))
    {
        assert_only_labelled_secrets_read(r);
    }

    // Labelled, it is read and sent.
    fake.apply(secret(consumer()));
    ready_condition(&fake, "tokenintrospectors", "aimed", "True").await;
    until_status(&p, "GET", opaque_token, 200, "the labelled Secret serves").await;
    assert!(idp
        .state
        .lock()
        .unwrap()
        .authorizations
        .iter()
        .all(|a| a.as_deref() == Some(value)));

    // The label removed: SecretNotFound again, as if missing; what was read serves on.
    fake.apply(secret(json!({"team": "a"})));
    let again = ready_condition(&fake, "tokenintrospectors", "aimed", "False").await;
    assert_eq!(again["reason"], "SecretNotFound");
    assert_eq!(
        again["message"],
        format!(
            "{}; the previous version keeps serving",
            unlabelled["message"].as_str().unwrap()
        )
    );
    let other_token = "another-opaque-token";
    idp.answer(
        other_token,
        json!({"active": true, "sub": "alice", "iss": ISSUER, "exp": now() + 600}),
    );
    assert_eq!(decide(&p, "GET", other_token).await.status, 200);
    eventually("the log tells the label went", || async {
        (told(&p, "lacks the consumer label", "unrelated") == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_creating_one_subject_at_once_end_with_one_user() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    with_provider(&fake, json!({"iss": ISSUER, "secret": SECRET}), json!({}));
    fake.apply(object("AccessPolicy", "all", json!({"engine": "allow"})));
    let a = serve(&fake, dir.path(), "replica-a", &["--create-users"]).await;
    let b = serve(&fake, dir.path(), "replica-b", &["--create-users"]).await;

    let newcomer = token("new-subject", SECRET);
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
    let name = users
        .into_iter()
        .next()
        .unwrap()
        .expect("a User was resolved");

    let objects = fake.list("users");
    assert_eq!(objects.len(), 1, "{objects:#?}");
    let user = &objects[0];
    let object_name = name.strip_prefix("team-a/").expect("named namespace/name");
    assert_eq!(user["metadata"]["name"], object_name);
    assert_eq!(user["metadata"]["namespace"], NS);
    assert_eq!(
        user["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "portcullis"
    );
    assert_eq!(
        user["metadata"]["labels"]["portcullis.dev/identity-provider"],
        "kc"
    );
    assert_eq!(
        user["spec"]["identifier"],
        json!([{"system": "https://kc", "value": "new-subject"}])
    );

    // Once the watch brings it back, each replica finds it in its index.
    ready_condition(&fake, "users", object_name, "True").await;
    for p in [&a, &b] {
        let again = decide(p, "GET", &newcomer).await;
        assert_eq!(again.header("x-portcullis-user"), Some(name.as_str()));
    }

    // One replica writes status: no object's status is written twice for one verdict.
    let writes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path().ends_with("/status"))
        .map(|r| format!("{} {}", r.path(), r.body.clone().unwrap_or_default()))
        .collect();
    let distinct: BTreeSet<&String> = writes.iter().collect();
    assert_eq!(distinct.len(), writes.len(), "{writes:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_going_away_changes_no_decision_and_a_relist_catches_up() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    fake.apply(policy("write", "post"));
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    let alice = token("alice", SECRET);
    assert_eq!(decide(&p, "POST", &alice).await.status, 200);

    fake.set_outage(true);
    // While it is down, and the history a watch would resume from is lost, a policy goes.
    fake.compact();
    fake.delete(API, "accesspolicies", NS, "write");
    for _ in 0..10 {
        assert_eq!(decide(&p, "GET", &alice).await.status, 200);
        assert_eq!(
            decide(&p, "POST", &alice).await.status,
            200,
            "still the last view"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        p.readyz().await,
        200,
        "the last configuration keeps serving"
    );

    fake.set_outage(false);
    until_status(&p, "POST", &alice, 403, "the relist applies the deletion").await;
    assert_eq!(decide(&p, "GET", &alice).await.status, 200);

    // Broken rather than gone: the client hands each failure to the watchers, which count
    // it and retry; the last view serves meanwhile, and they resume when it is fixed.
    fake.set_broken(true);
    fake.apply(policy("write", "post"));
    support::eventually("the failing watches counted", || async {
        let errors = p.metrics().await.find(
            "portcullis_kube_watch_errors_total",
            &[("kind", "AccessPolicy")],
        );
        errors.filter(|&n| n >= 2.0)
    })
    .await;
    assert_eq!(
        decide(&p, "POST", &alice).await.status,
        403,
        "the last view"
    );
    fake.set_broken(false);
    until_status(&p, "POST", &alice, 200, "the watch resumes").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_decides_against_the_live_cluster() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    let config = kubeconfig(&fake, dir.path());
    let out = std::process::Command::new(support::portcullis::portcullis_bin())
        .args([
            "explain",
            "--kube",
            "--root-namespace",
            NS,
            "--method",
            "GET",
            "--path",
            "/fhir/Patient",
        ])
        .arg("--token")
        .arg(token("alice", SECRET))
        .env("KUBECONFIG", config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("decision: ALLOW"), "{stdout}");
    assert!(stdout.contains("team-a/read"), "{stdout}");
}

/// The RBAC rules that ship are exactly what the binary uses, per mode: every request of a
/// run that exercises every path is allowed by them (by name where a rule names its
/// objects), and every rule allows some request. The run takes its Lease name and User
/// creation from the manifest's own arguments.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_rbac_rules_are_exactly_what_the_binary_asks_for() {
    let plain =
        std::fs::read_to_string(repo_path("deploy/kubernetes/portcullis-kube.yaml")).unwrap();
    let namespaces = format!("kube.namespaces={{{NS}}}");
    for (what, manifest) in [
        ("deploy/kubernetes/portcullis-kube.yaml", plain),
        ("the chart's defaults", helm_kube_mode("auth", &[])),
        (
            "the chart with createUsers",
            helm_kube_mode("auth", &["createUsers=true"]),
        ),
        (
            "the chart with kube.namespaces and createUsers",
            helm_kube_mode("auth", &[namespaces.as_str(), "createUsers=true"]),
        ),
        (
            "the chart with Users on demand",
            helm_kube_mode("auth", &["kube.users.mode=on-demand"]),
        ),
        (
            "the chart with Users on demand, kube.namespaces and createUsers",
            helm_kube_mode(
                "auth",
                &[
                    namespaces.as_str(),
                    "createUsers=true",
                    "kube.users.mode=on-demand",
                ],
            ),
        ),
    ] {
        rbac_is_exactly_what_a_run_asks_for(what, &manifest).await;
    }
}

async fn rbac_is_exactly_what_a_run_asks_for(what: &str, manifest: &str) {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let labelled = |mut o: Value| {
        o["metadata"]["labels"] = json!({"tier": "auth"});
        o
    };
    fake.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "hs", "namespace": NS, "labels": consumer()},
        "data": {"key": base64(SECRET)}}));
    with_provider(
        &fake,
        json!({"iss": ISSUER, "secretRef": {"name": "hs", "key": "key"}}),
        json!({"tier": "auth"}),
    );
    fake.apply(labelled(object(
        "AccessPolicy",
        "all",
        json!({"engine": "allow"}),
    )));
    // A User outside the selector holds the name a subject would get: creating it meets
    // `409 AlreadyExists`, and the object is read and adopted.
    let taken = portcullis::users::user_name("https://kc", "sub-taken");
    // A User inside it, whose status is written whether or not Users are created.
    fake.apply(labelled(object(
        "User",
        "known",
        json!({"identifier": [{"system": "https://kc", "value": "sub-known"}]}),
    )));
    fake.apply(object(
        "User",
        &taken,
        json!({"identifier": [{"system": "https://kc", "value": "sub-taken"}]}),
    ));
    let args = deployment_args(manifest);
    let create_users = args.iter().any(|a| a == "--create-users");
    let mut extra: Vec<&str> = args
        .iter()
        .filter(|a| {
            ["--lease-name=", "--namespace=", "--users="]
                .iter()
                .any(|flag| a.starts_with(flag))
        })
        .map(String::as_str)
        .collect();
    assert!(
        extra.iter().any(|a| a.starts_with("--lease-name=")),
        "{what}: {args:?}"
    );
    extra.extend(["--selector", "tier=auth"]);
    if create_users {
        extra.push("--create-users");
    }
    let p = serve(&fake, dir.path(), "replica-1", &extra).await;
    if create_users {
        let adopted = decide(&p, "GET", &token("sub-taken", SECRET)).await;
        let qualified = format!("{NS}/{taken}");
        assert_eq!(
            adopted.header("x-portcullis-user"),
            Some(qualified.as_str())
        );
        // A created User carries the selector's labels, so that the watch brings it back.
        let created = decide(&p, "GET", &token("sub-new", SECRET)).await;
        let user = created.header("x-portcullis-user").unwrap();
        let name = user.strip_prefix("team-a/").unwrap().to_string();
        let object = fake.get(API, "users", NS, &name).unwrap();
        assert_eq!(object["metadata"]["labels"]["tier"], "auth");
        ready_condition(&fake, "users", &name, "True").await;
    }
    ready_condition(&fake, "users", "known", "True").await;
    ready_condition(&fake, "accesspolicies", "all", "True").await;
    // The Lease is renewed.
    eventually("a lease renewal", || async {
        let writes = fake
            .requests()
            .iter()
            .filter(|r| r.path().contains("/leases/") && r.method == "PUT")
            .count();
        (writes >= 1).then_some(())
    })
    .await;

    let used: BTreeSet<Permission> = fake.requests().iter().filter_map(permission).collect();
    let granted = granted(manifest);
    for need in &used {
        assert!(
            granted.iter().any(|g| g.allows(need)),
            "{what}: not granted: {need:?}\n{granted:#?}"
        );
    }
    for g in &granted {
        assert!(
            used.iter().any(|u| g.allows(u)),
            "{what}: never used: {g:?}\n{used:#?}"
        );
    }
}

/// One request as RBAC sees it, or one grant of a rule: `(apiGroup,
/// resource[/subresource], verb)`, and the object's name (for a grant, the one name of
/// its `resourceNames`, or none for any).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Permission {
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
}

impl Permission {
    fn allows(&self, request: &Permission) -> bool {
        (&self.group, &self.resource, &self.verb)
            == (&request.group, &request.resource, &request.verb)
            && (self.name.is_none() || self.name == request.name)
    }
}

fn permission(r: &RecordedRequest) -> Option<Permission> {
    let path = r.path();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match *parts.first()? {
        "api" => ("", &parts[2..]),
        "apis" => (parts[1], &parts[3..]),
        _ => return None,
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, name) = match rest {
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(name.to_string())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(name.to_string())),
        _ => return None,
    };
    let watch = matches!(r.query("watch").as_deref(), Some("true" | "1"));
    let verb = match (r.method.as_str(), name.is_some(), watch) {
        ("GET", _, true) => "watch",
        ("GET", true, false) => "get",
        ("GET", false, false) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", _, _) => "delete",
        _ => return None,
    };
    // A list or watch with `metadata.name=` in its field selector is one by name to RBAC.
    let name = name.or_else(|| {
        r.query("fieldSelector")?
            .split(',')
            .find_map(|t| t.strip_prefix("metadata.name=").map(str::to_string))
    });
    Some(Permission {
        group: group.to_string(),
        resource,
        verb: verb.to_string(),
        name,
    })
}

/// Every grant of the Roles and ClusterRoles of a manifest.
fn granted(manifest: &str) -> Vec<Permission> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let Ok(doc) = serde_yaml::Value::deserialize(doc) else {
            continue;
        };
        let doc: Value = serde_json::to_value(doc).unwrap();
        if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        for rule in doc["rules"].as_array().unwrap() {
            let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
                names if names.is_empty() => vec![None],
                names => names.into_iter().map(Some).collect(),
            };
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        for name in &names {
                            let p = Permission {
                                group: group.clone(),
                                resource: resource.clone(),
                                verb: verb.clone(),
                                name: name.clone(),
                            };
                            if !out.contains(&p) {
                                out.push(p);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `helm template RELEASE charts/portcullis --namespace portcullis --set ...`.
fn helm_kube_mode(release: &str, set: &[&str]) -> String {
    let mut cmd = std::process::Command::new(support::tool_bin("HELM_BIN", "helm"));
    cmd.args(["template", release])
        .arg(repo_path("charts/portcullis"))
        .args(["--namespace", "portcullis"]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The `serve` command line of the Deployment in a manifest.
fn deployment_args(manifest: &str) -> Vec<String> {
    let deployment: Value = serde_yaml::Deserializer::from_str(manifest)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .map(|d| serde_json::to_value(d).unwrap())
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// What ships for Kubernetes mode (the plain manifest, the chart with `mode=kube`) starts,
/// lists the cluster and becomes ready, as written.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_kube_mode_command_lines_become_ready() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    for manifest in [
        std::fs::read_to_string(repo_path("deploy/kubernetes/portcullis-kube.yaml")).unwrap(),
        helm_kube_mode("portcullis", &[]),
    ] {
        let args = deployment_args(&manifest);
        assert!(args.contains(&"--kube".to_string()), "{args:?}");
        let mut builder = Portcullis::builder()
            .command_line(&args)
            .env("KUBECONFIG", kubeconfig(&fake, dir.path()))
            .env("POD_NAMESPACE", NS);
        // The webhook's certificate is the test's own, on a free port.
        let webhook = args
            .iter()
            .any(|a| a == "--webhook-addr" || a.starts_with("--webhook-addr="));
        assert!(webhook, "both ship the admission webhook: {args:?}");
        let ca = support::tls::TestCa::new("test CA");
        if webhook {
            let (cert, key) = ca.serving("portcullis").write(dir.path());
            builder = builder.webhook(cert, key);
        }
        let p = builder.start().await;
        assert_eq!(decide(&p, "GET", &token("alice", SECRET)).await.status, 200);
        if webhook {
            let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE", "namespace": NS, "name": "p",
                    "kind": {"group": "portcullis.dev", "version": "v1alpha1", "kind": "AccessPolicy"},
                    "object": policy("p", "get")}});
            let answer: Value = support::tls::https_client(&ca.pem())
                .post(p.webhook_url("/validate"))
                .json(&review)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["response"]["allowed"], true, "{answer}");
        }
    }
}

/// One replica holds the status Lease; when it stops renewing, another takes it over.
#[tokio::test(flavor = "multi_thread")]
async fn the_status_lease_passes_to_another_replica_when_its_holder_stops() {
    use portcullis::source::cluster::lease::{self, LeaseSettings};
    let fake = FakeApiServer::start().await;
    let settings = |identity: &str| LeaseSettings {
        duration: Duration::from_secs(1),
        renew_every: Duration::from_millis(100),
        ..LeaseSettings::new("portcullis".into(), identity.into())
    };
    let (a_tx, a) = tokio::sync::watch::channel(false);
    let holder_a = tokio::spawn(lease::run(fake.client(), settings("a"), a_tx));
    eventually("a holds the lease", || async {
        (*a.borrow()).then_some(())
    })
    .await;

    let (b_tx, b) = tokio::sync::watch::channel(false);
    let _holder_b = tokio::spawn(lease::run(fake.client(), settings("b"), b_tx));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!*b.borrow(), "b must wait while a renews");
    assert!(*a.borrow());

    holder_a.abort();
    eventually("b takes the lapsed lease over", || async {
        (*b.borrow()).then_some(())
    })
    .await;
    let lease = fake
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "portcullis",
            "portcullis-status-writer",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
}

/// Every custom resource that `deploy/examples/aidbox/` ships (the Aidbox tutorials) is
/// accepted as written; the shared-secret and static-key variants allow their tokens.
/// Each file is applied, checked and deleted in turn: the variants trust one issuer.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_aidbox_tutorial_resources_are_ready_as_written() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = serve(&fake, dir.path(), "examples", &[]).await;
    let examples = repo_path("deploy/examples/aidbox");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    let allowed_by = |file: &str| -> Option<String> {
        let tutorial = Jwt::new("https://auth.example.com", "alice").exp_in(600);
        match file {
            "external-auth-server-secret.yaml" => {
                Some(tutorial.sign_hs256("change-me-to-a-long-random-secret"))
            }
            "external-auth-server-keys.yaml" => {
                Some(tutorial.sign_with("rsa-a", jsonwebtoken::Algorithm::RS256))
            }
            _ => None,
        }
    };
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut object: Value = Value::deserialize(doc).unwrap();
            object["metadata"]["namespace"] = json!(NS);
            fake.apply(object.clone());
            applied.push(object);
        }
        for object in &applied {
            let kind = object["kind"].as_str().unwrap();
            if kind == "Secret" {
                continue;
            }
            let plural = match kind {
                "AccessPolicy" => "accesspolicies".to_string(),
                other => format!("{}s", other.to_lowercase()),
            };
            let object_name = object["metadata"]["name"].as_str().unwrap();
            let ready = ready_condition(&fake, &plural, object_name, "True").await;
            assert_eq!(ready["reason"], "Accepted", "{name}: {kind}/{object_name}");
        }
        if let Some(token) = allowed_by(&name) {
            until_status(&p, "GET", &token, 200, &name).await;
            let forged = Jwt::new("https://auth.example.com", "alice")
                .exp_in(600)
                .sign_hs256("not-the-secret-of-the-example!!!");
            assert_eq!(decide(&p, "GET", &forged).await.status, 401, "{name}");
        }
        for object in applied.iter().rev() {
            let (api, kind) = (
                object["apiVersion"].as_str().unwrap(),
                object["kind"].as_str().unwrap(),
            );
            let plural = match kind {
                "AccessPolicy" => "accesspolicies".to_string(),
                other => format!("{}s", other.to_lowercase()),
            };
            let object_name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                fake.delete(api, &plural, NS, object_name).is_some(),
                "{name}: delete {kind}"
            );
        }
    }
}

/// One object whose status write always fails (`500`) is retried with backoff, and
/// every other object's status is written, a later edit's too.
#[tokio::test(flavor = "multi_thread")]
async fn one_object_whose_status_write_always_fails_delays_no_other() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    fake.fail_status_writes("accesspolicies", NS, "stuck");
    let others = ["a-first", "m-middle", "z-last"];
    for name in others.iter().chain(&["stuck"]) {
        fake.apply(policy(name, "get"));
    }
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    for name in others.iter().chain(&["read"]) {
        ready_condition(&fake, "accesspolicies", name, "True").await;
    }
    ready_condition(&fake, "tokenintrospectors", "auth", "True").await;
    support::eventually("the failing object tried again", || async {
        let errors = p
            .metrics()
            .await
            .find("portcullis_status_writes_total", &[("result", "error")]);
        errors.filter(|&n| n >= 2.0)
    })
    .await;
    // An edit of another object is written while the failing one keeps failing.
    fake.apply(policy("z-last", "post"));
    ready_condition(&fake, "accesspolicies", "z-last", "True").await;
    assert!(
        fake.get(API, "accesspolicies", NS, "stuck").unwrap()["status"]
            .get("conditions")
            .is_none()
    );
    assert_eq!(decide(&p, "GET", &token("alice", SECRET)).await.status, 200);
}

/// A hung API server (it takes requests and answers none) stops no decision; the replica
/// gives the status Lease up, and takes it back and writes status once it answers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_api_server_stops_no_decision_and_the_lease_comes_back() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    base(&fake);
    let p = serve(&fake, dir.path(), "replica-1", &[]).await;
    let alice = token("alice", SECRET);
    ready_condition(&fake, "accesspolicies", "read", "True").await;
    let lease_says = |p: &Portcullis| {
        p.log()
            .lines()
            .filter(|l| l.contains("status writer lease"))
            .map(|l| l.contains("true"))
            .collect::<Vec<bool>>()
    };
    assert_eq!(lease_says(&p), [true]);

    fake.set_stalled(true);
    fake.apply(policy("write", "post"));
    // The Lease lasts 15 s and is renewed every 5 s: given up within 10 s.
    support::eventually_within(Duration::from_secs(40), "the lease given up", || async {
        assert_eq!(
            decide(&p, "GET", &alice).await.status,
            200,
            "decisions go on"
        );
        assert_eq!(p.readyz().await, 200);
        (lease_says(&p) == [true, false]).then_some(())
    })
    .await;

    fake.set_stalled(false);
    support::eventually_within(Duration::from_secs(40), "the lease taken back", || async {
        (lease_says(&p) == [true, false, true]).then_some(())
    })
    .await;
    ready_condition(&fake, "accesspolicies", "write", "True").await;
    until_status(&p, "POST", &alice, 200, "the watch resumes").await;
}
