//! The fake Kubernetes API server the cluster tests run against, checked with kube-rs's own
//! client and watcher: if kube-rs works against it the way it works against a real API
//! server, tests built on it say something about the cluster.

use crate::support;

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Resource, ResourceExt};
use portcullis::resources::{AccessPolicy, User};
use serde_json::{json, Value};
use support::fake_apiserver::FakeApiServer;
use tokio::sync::mpsc;

const V1ALPHA1: &str = "portcullis.dev/v1alpha1";

fn policies(fake: &FakeApiServer) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "AccessPolicy");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "accesspolicies");
    Api::default_namespaced_with(fake.client(), &resource)
}

fn policy(name: &str, engine: &str) -> Value {
    json!({
        "apiVersion": V1ALPHA1, "kind": "AccessPolicy",
        "metadata": { "name": name, "namespace": "default", "labels": { "team": "a" } },
        "spec": { "engine": engine },
    })
}

fn user(name: &str, email: &str) -> Value {
    json!({
        "apiVersion": V1ALPHA1, "kind": "User",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "email": email },
    })
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a DynamicObject")
}

fn generation<K: Resource>(obj: &K) -> i64 {
    obj.meta().generation.expect("metadata.generation")
}

/// A `kube::runtime::watcher` (with kube's default backoff) running in a task; errors,
/// which it recovers from by itself, are skipped.
struct Watch<K> {
    events: mpsc::UnboundedReceiver<Event<K>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Watch<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                if let Ok(event) = event {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Watch { events, task }
    }

    async fn next(&mut self) -> Event<K> {
        tokio::time::timeout(support::WAIT, self.events.recv())
            .await
            .expect("a watcher event in time")
            .expect("the watcher runs")
    }

    /// The next event, as kube shows it (`Apply(name)`, `Delete(name)`, `Init`, ...).
    async fn next_shown(&mut self) -> String
    where
        K: ResourceExt,
    {
        self.next().await.to_string()
    }

    /// Waits for a complete (re)list: `Init`, `InitApply`..., `InitDone`; returns the names.
    async fn relisted(&mut self) -> Vec<String> {
        loop {
            if let Event::Init = self.next().await {
                break;
            }
        }
        let mut names = Vec::new();
        loop {
            match self.next().await {
                Event::InitApply(obj) => names.push(obj.name_any()),
                Event::InitDone => return names,
                other => panic!("expected InitApply or InitDone, got {other}"),
            }
        }
    }

    /// Nothing arrives for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            panic!("expected no event, got {event}");
        }
    }
}

impl<K> Drop for Watch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn kube_creates_gets_lists_and_is_refused_a_duplicate_over_plain_http() {
    let fake = FakeApiServer::start().await;
    assert!(fake.url().starts_with("http://127.0.0.1:"));
    let api = policies(&fake);

    let created = api
        .create(&PostParams::default(), &dynamic(policy("a", "allow")))
        .await
        .unwrap();
    let meta = created.meta();
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.generation, Some(1));
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.resource_version, Some(fake.resource_version()));

    let got = api.get("a").await.unwrap();
    assert_eq!(got.data["spec"], json!({ "engine": "allow" }));
    assert_eq!(
        fake.get(V1ALPHA1, "accesspolicies", "default", "a")
            .unwrap()["spec"]["engine"],
        "allow"
    );

    let duplicate = api
        .create(&PostParams::default(), &dynamic(policy("a", "matcho")))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = duplicate else {
        panic!("expected an API error, got {duplicate:?}");
    };
    assert_eq!(status.code, 409);
    assert!(status.is_already_exists(), "{status:?}");

    let missing = api.get("nope").await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.is_not_found()),
        "{missing:?}"
    );
    assert_eq!(api.get_opt("nope").await.unwrap(), None);

    let mut other = policy("", "allow");
    other["metadata"] = json!({ "generateName": "gen-", "labels": { "team": "b" } });
    let generated = api
        .create(&PostParams::default(), &dynamic(other))
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.metadata.resource_version, Some(fake.resource_version()));
    assert_eq!(all.items.len(), 2);
    let team_a = api
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(
        team_a
            .items
            .iter()
            .map(|o| o.name_any())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let not_a = api
        .list(&ListParams::default().labels("team!=a,team"))
        .await
        .unwrap();
    assert_eq!(not_a.items.len(), 1);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    // Paginated: one per page, with a continue token.
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let rest = api
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].name_any(), page.items[0].name_any());
    assert_eq!(rest.metadata.continue_, None);

    // Stale replace: 409 Conflict.
    let mut stale = got.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "engine": "matcho" } })),
    )
    .await
    .unwrap();
    stale.data["spec"]["engine"] = json!("complex");
    let conflict = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.is_conflict()),
        "{conflict:?}"
    );

    // Core v1 Secrets at /api/v1: stringData is folded into data.
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "s", "labels": { "portcullis.dev/secret-consumer": "true" } },
        "stringData": { "password": "hunter2" },
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let stored = secrets.get("s").await.unwrap();
    assert_eq!(stored.data.unwrap()["password"].0, b"hunter2");
    assert_eq!(stored.string_data, None);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path() == "/api/v1/namespaces/default/secrets"));

    // Delete, with preconditions as DeleteOptions carries them.
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("someone-else".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let refused = api.delete("a", &wrong).await.unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409),
        "{refused:?}"
    );
    let deleted = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    assert_eq!(fake.get(V1ALPHA1, "accesspolicies", "default", "a"), None);

    // A dropped server is gone.
    drop(fake);
    assert!(api.get("gen").await.is_err());
}

#[tokio::test]
async fn generation_moves_only_when_the_spec_does() {
    let fake = FakeApiServer::start().await;
    let api: Api<AccessPolicy> = Api::default_namespaced(fake.client());
    let mut typed: AccessPolicy = serde_json::from_value(policy("p", "allow")).unwrap();
    // A status sent to the main resource is ignored, as with a status subresource.
    typed.status = Some(Default::default());
    typed.status.as_mut().unwrap().observed_generation = Some(7);
    let created = api.create(&PostParams::default(), &typed).await.unwrap();
    assert_eq!(generation(&created), 1);
    assert_eq!(created.status, None);

    let labelled = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
        )
        .await
        .unwrap();
    assert_eq!(generation(&labelled), 1);
    assert_eq!(labelled.labels()["x"], "y");

    let edited = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "engine": "matcho", "matcho": { "a": 1 } } })),
        )
        .await
        .unwrap();
    assert_eq!(generation(&edited), 2);

    // Server-side apply: the same intent twice is a no-op (no new resourceVersion).
    let ssa = PatchParams::apply("portcullis-test");
    let intent = json!({
        "apiVersion": V1ALPHA1, "kind": "AccessPolicy", "metadata": { "name": "p" },
        "spec": { "engine": "matcho", "matcho": { "a": 1 }, "description": "d" },
    });
    let applied = api.patch("p", &ssa, &Patch::Apply(&intent)).await.unwrap();
    assert_eq!(generation(&applied), 3);
    assert_eq!(applied.spec.description.as_deref(), Some("d"));
    let again = api.patch("p", &ssa, &Patch::Apply(&intent)).await.unwrap();
    assert_eq!(again.resource_version(), applied.resource_version());
    assert_eq!(generation(&again), 3);
    // A field the manager stops applying is removed.
    let mut smaller = intent.clone();
    smaller["spec"]
        .as_object_mut()
        .unwrap()
        .remove("description");
    let dropped = api
        .patch("p", &ssa.clone().force(), &Patch::Apply(&smaller))
        .await
        .unwrap();
    assert_eq!(dropped.spec.description, None);
    assert_eq!(generation(&dropped), 4);
    assert!(fake.requests().iter().any(|r| r.method == "PATCH"
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        && r.query("fieldManager").as_deref() == Some("portcullis-test")
        && r.query("force").as_deref() == Some("true")));

    // Apply creates a missing object.
    let mut fresh = intent.clone();
    fresh["metadata"]["name"] = json!("q");
    let created = api.patch("q", &ssa, &Patch::Apply(&fresh)).await.unwrap();
    assert_eq!(generation(&created), 1);

    // The admin's apply: the same content keeps the generation, a new one bumps it.
    let admin = fake.apply(policy("q", "matcho"));
    assert_eq!(admin["metadata"]["generation"], 2);
    let same = fake.apply(policy("q", "matcho"));
    assert_eq!(
        same["metadata"]["resourceVersion"],
        admin["metadata"]["resourceVersion"]
    );
    assert_eq!(fake.list("accesspolicies").len(), 2);
}

#[tokio::test]
async fn a_status_patch_changes_the_status_only() {
    let fake = FakeApiServer::start().await;
    fake.apply(user("alice", "alice@example.com"));
    let api: Api<User> = Api::default_namespaced(fake.client());
    fake.clear_requests();

    let status = json!({ "status": {
        "observedGeneration": 1,
        "conditions": [{ "type": "Accepted", "status": "True", "reason": "Compiled" }],
    }, "spec": { "email": "mallory@example.com" } });
    let patched = api
        .patch_status("alice", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.spec.email.as_deref(), Some("alice@example.com"));
    assert_eq!(generation(&patched), 1);
    let got = patched.status.unwrap();
    assert_eq!(got.observed_generation, Some(1));
    assert_eq!(got.conditions[0].reason.as_deref(), Some("Compiled"));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "PATCH");
    assert_eq!(
        requests[0].path(),
        "/apis/portcullis.dev/v1alpha1/namespaces/default/users/alice/status"
    );
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(requests[0].body, Some(status));

    // Server-side apply of the status, by a controller.
    let intent = json!({
        "apiVersion": V1ALPHA1, "kind": "User", "metadata": { "name": "alice" },
        "status": { "observedGeneration": 1, "conditions": [] },
    });
    let applied = api
        .patch_status(
            "alice",
            &PatchParams::apply("controller"),
            &Patch::Apply(&intent),
        )
        .await
        .unwrap();
    assert_eq!(applied.status.unwrap().conditions, []);
    // The admin's apply keeps the status.
    let admin = fake.apply(user("alice", "alice@new.example.com"));
    assert_eq!(admin["status"]["observedGeneration"], 1);
    assert_eq!(admin["metadata"]["generation"], 2);
    // Secrets have no status subresource.
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());
    let e = secrets.get_status("s").await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 404), "{e:?}");
}

#[tokio::test]
async fn a_watcher_sees_applies_edits_and_deletes() {
    let fake = FakeApiServer::start().await;
    fake.apply(policy("before", "allow"));
    let api: Api<AccessPolicy> = Api::default_namespaced(fake.client());
    let mut watch = Watch::start(api, watcher::Config::default());
    assert_eq!(watch.relisted().await, ["before"]);

    fake.apply(policy("p", "allow"));
    assert_eq!(watch.next_shown().await, "Apply(p)");
    fake.apply(policy("p", "matcho"));
    match watch.next().await {
        Event::Apply(p) => assert_eq!(generation(&p), 2),
        other => panic!("expected Apply, got {other}"),
    }
    fake.delete(V1ALPHA1, "accesspolicies", "default", "p")
        .unwrap();
    assert_eq!(watch.next_shown().await, "Delete(p)");
    // Other kinds and namespaces are not this watch's business.
    fake.apply(user("u", "u@example.com"));
    let mut elsewhere = policy("x", "allow");
    elsewhere["metadata"]["namespace"] = json!("other");
    fake.apply(elsewhere);
    watch.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_watcher_with_a_label_selector_sees_only_its_objects() {
    let fake = FakeApiServer::start().await;
    let config = watcher::Config::default().labels("team=a");
    let mut watch = Watch::start(policies(&fake), config);
    assert_eq!(watch.relisted().await, Vec::<String>::new());
    let mut b = policy("b", "allow");
    b["metadata"]["labels"]["team"] = json!("b");
    fake.apply(b);
    fake.apply(policy("a", "allow"));
    assert_eq!(watch.next_shown().await, "Apply(a)");
}

#[tokio::test]
async fn leases_take_turns_by_resource_version() {
    let fake = FakeApiServer::start().await;
    let leases: Api<Lease> = Api::default_namespaced(fake.client());
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "portcullis-leader" },
        "spec": { "holderIdentity": "pod-a", "leaseDurationSeconds": 15 },
    }))
    .unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut a = held.clone();
    a.spec.as_mut().unwrap().lease_transitions = Some(1);
    leases
        .replace("portcullis-leader", &PostParams::default(), &a)
        .await
        .unwrap();
    // Pod b read the lease before a renewed it: its takeover is refused.
    let mut b = held;
    b.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let refused = leases
        .replace("portcullis-leader", &PostParams::default(), &b)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409),
        "{refused:?}"
    );
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/portcullis-leader";
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path() == path)
            .count(),
        2
    );
}

#[tokio::test]
async fn a_watcher_resumes_after_an_outage() {
    let fake = FakeApiServer::start().await;
    let mut watch = Watch::start(policies(&fake), watcher::Config::default());
    assert_eq!(watch.relisted().await, Vec::<String>::new());
    fake.apply(policy("a", "allow"));
    assert_eq!(watch.next_shown().await, "Apply(a)");

    fake.set_outage(true);
    let outage_rv = fake.resource_version();
    fake.apply(policy("during", "allow"));
    // kube's client retries a 503 (for minutes, if need be) ...
    let api = policies(&fake);
    let retried = tokio::spawn(async move { api.list(&ListParams::default()).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ... and without its retry layer, a call sees the 503 at once.
    let mut config = fake.config();
    config.default_retry = false;
    let once: Api<AccessPolicy> = Api::default_namespaced(kube::Client::try_from(config).unwrap());
    let e = once.list(&ListParams::default()).await.unwrap_err();
    assert!(matches!(&e, kube::Error::Api(s) if s.code == 503), "{e:?}");
    fake.set_outage(false);
    assert_eq!(retried.await.unwrap().unwrap().items.len(), 2);

    // Resumed from where it was (no relist): the change made during the outage, then later ones.
    assert_eq!(watch.next_shown().await, "Apply(during)");
    fake.apply(policy("after", "allow"));
    assert_eq!(watch.next_shown().await, "Apply(after)");
    // Reopened from the resourceVersion it had seen.
    assert!(fake.requests().iter().any(
        |r| r.query("watch").is_some() && r.query("resourceVersion") == Some(outage_rv.clone())
    ));
}

#[tokio::test]
async fn a_watcher_relists_when_its_history_was_compacted() {
    let fake = FakeApiServer::start().await;
    fake.apply(policy("kept", "allow"));
    fake.apply(policy("gone", "allow"));
    let mut watch = Watch::start(policies(&fake), watcher::Config::default());
    assert_eq!(watch.relisted().await, ["gone", "kept"]);

    fake.set_outage(true);
    fake.delete(V1ALPHA1, "accesspolicies", "default", "gone")
        .unwrap();
    fake.compact();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.set_outage(false);

    // 410 Expired: the watcher starts over, and the deleted object is not in the relist.
    assert_eq!(watch.relisted().await, ["kept"]);
    let requests = fake.requests();
    let lists: Vec<_> = requests
        .iter()
        .filter(|r| r.query("watch").is_none())
        .collect();
    assert_eq!(
        lists.len(),
        2,
        "the initial list and the relist: {requests:?}"
    );
    fake.apply(policy("new", "allow"));
    assert_eq!(watch.next_shown().await, "Apply(new)");
}

#[tokio::test]
async fn a_paginated_relist_and_a_streaming_list_see_everything() {
    let fake = FakeApiServer::start().await;
    for name in ["a", "b", "c"] {
        fake.apply(policy(name, "allow"));
    }
    let mut paged = Watch::start(policies(&fake), watcher::Config::default().page_size(2));
    assert_eq!(paged.relisted().await, ["a", "b", "c"]);
    let continued: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.query("continue").is_some())
        .collect();
    assert_eq!(continued.len(), 1, "{continued:?}");

    let mut streaming = Watch::start(
        policies(&fake),
        watcher::Config::default().streaming_lists(),
    );
    assert_eq!(streaming.relisted().await, ["a", "b", "c"]);
    fake.apply(policy("d", "allow"));
    assert_eq!(paged.next_shown().await, "Apply(d)");
    assert_eq!(streaming.next_shown().await, "Apply(d)");
}

#[tokio::test]
async fn bookmarks_arrive_when_asked_and_watches_end_at_their_timeout() {
    let fake = FakeApiServer::start().await;
    fake.apply(policy("a", "allow"));
    let api = policies(&fake);
    let rv = fake.resource_version();

    let started = std::time::Instant::now();
    let mut events = api
        .watch(&WatchParams::default().timeout(3), &rv)
        .await
        .unwrap()
        .boxed();
    let mut bookmarks = 0;
    // The server ends the stream at `timeoutSeconds`; a bound far above it, should it not.
    let all = tokio::time::timeout(support::WAIT, async {
        while let Some(event) = events.next().await {
            match event.unwrap() {
                WatchEvent::Bookmark(b) => {
                    assert_eq!(b.metadata.resource_version, rv);
                    bookmarks += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    all.await.expect("the watch ends at its timeout");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(bookmarks >= 2, "one a second: {bookmarks} bookmarks");

    // Without bookmarks: nothing but the changes.
    let quiet = WatchParams::default().disable_bookmarks().timeout(1);
    let mut events = api.watch(&quiet, &rv).await.unwrap().boxed();
    fake.apply(policy("b", "allow"));
    assert!(matches!(events.next().await, Some(Ok(WatchEvent::Added(o))) if o.name_any() == "b"));
    assert!(events.next().await.is_none());

    // From a compacted resourceVersion: one ERROR event, 410 Expired.
    fake.compact();
    let mut events = api.watch(&quiet, &rv).await.unwrap().boxed();
    match events.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Expired, got {other:?}"),
    }
}

/// As on a real server, a watch with a label selector sees an object that gains the label
/// as `ADDED` and one that loses it as `DELETED`; a list asked for as
/// `PartialObjectMetadataList` (kube's `list_metadata`) holds metadata alone.
#[tokio::test(flavor = "multi_thread")]
async fn selectors_follow_label_changes_and_metadata_lists_hold_no_data() {
    let fake = FakeApiServer::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());
    let secret = |labels: Value| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "s", "namespace": "default", "labels": labels},
               "stringData": {"password": "hunter2"}})
    };
    fake.apply(secret(json!({})));
    let rv = fake.resource_version();
    let params = WatchParams::default().labels("portcullis.dev/secret-consumer=true");
    let mut events = secrets.watch(&params, &rv).await.unwrap().boxed();
    fake.apply(secret(json!({"portcullis.dev/secret-consumer": "true"})));
    fake.apply(secret(json!({"other": "x"})));
    let added = next_event(&mut events).await;
    assert!(
        matches!(&added, WatchEvent::Added(s) if s.metadata.name.as_deref() == Some("s")),
        "{added:?}"
    );
    let deleted = next_event(&mut events).await;
    let WatchEvent::Deleted(gone) = &deleted else {
        panic!("{deleted:?}")
    };
    assert_eq!(
        gone.metadata.resource_version,
        Some(fake.resource_version()),
        "at the change's resourceVersion"
    );

    let by_name = ListParams::default().fields("metadata.name=s");
    let list = secrets.list_metadata(&by_name).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let none = ListParams::default().fields("metadata.name=other");
    assert!(secrets.list_metadata(&none).await.unwrap().items.is_empty());
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/secrets?fieldSelector=metadata.name%3Ds",
            fake.url()
        ))
        .header(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains("PartialObjectMetadataList") && !raw.contains("\"data\""),
        "{raw}"
    );
}

async fn next_event<T>(
    events: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<T>>> + Unpin),
) -> WatchEvent<T> {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a watch event")
        .expect("an open watch")
        .expect("an event")
}

/// Lists by one name in a namespace and by the label `portcullis.dev/identifier` read an
/// index; they answer as a scan does: after a relabel, a delete, a preload, with another
/// requirement beside, and across pages.
#[tokio::test(flavor = "multi_thread")]
async fn lists_by_name_and_by_the_identifier_label_follow_every_change() {
    const LABEL: &str = "portcullis.dev/identifier";
    let fake = FakeApiServer::start().await;
    let gvk = GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "User");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "users");
    let users: Api<DynamicObject> = Api::default_namespaced_with(fake.client(), &resource);
    let labelled = |name: &str, ns: &str, labels: Value| {
        json!({"apiVersion": V1ALPHA1, "kind": "User",
               "metadata": {"name": name, "namespace": ns, "labels": labels},
               "spec": {"email": format!("{name}@example.com")}})
    };
    let names = |list: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items.iter().map(|o| o.name_any()).collect()
    };
    let by = |labels: &str| ListParams::default().labels(labels);
    fake.apply(labelled("a", "default", json!({LABEL: "h1", "team": "x"})));
    fake.apply(labelled("b", "default", json!({LABEL: "h1"})));
    fake.apply(labelled("c", "other", json!({LABEL: "h1"})));
    fake.preload([
        labelled("d", "default", json!({LABEL: "h2"})),
        labelled("e", "default", json!({LABEL: "h1"})),
    ]);
    let h1 = format!("{LABEL}=h1");
    assert_eq!(names(users.list(&by(&h1)).await.unwrap()), ["a", "b", "e"]);
    let both = format!("{LABEL}==h1,team=x");
    assert_eq!(names(users.list(&by(&both)).await.unwrap()), ["a"]);
    let paged = by(&h1).limit(2);
    let first = users.list(&paged).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a second page");
    assert_eq!(names(first), ["a", "b"]);
    let second = users.list(&paged.continue_token(&token)).await.unwrap();
    assert_eq!(names(second), ["e"]);
    let all: Api<DynamicObject> = Api::all_with(fake.client(), &resource);
    assert_eq!(
        names(all.list(&by(&h1)).await.unwrap()),
        ["a", "b", "e", "c"]
    );

    fake.apply(labelled("b", "default", json!({LABEL: "h2"})));
    fake.delete(V1ALPHA1, "users", "default", "e");
    assert_eq!(names(users.list(&by(&h1)).await.unwrap()), ["a"]);
    let h2 = format!("{LABEL}=h2");
    assert_eq!(names(users.list(&by(&h2)).await.unwrap()), ["b", "d"]);
    let preloaded = users.get("d").await.unwrap();
    assert_eq!(preloaded.metadata.generation, Some(1));
    assert!(preloaded.metadata.uid.is_some() && preloaded.metadata.resource_version.is_some());

    let one = |name: &str| ListParams::default().fields(&format!("metadata.name={name}"));
    assert_eq!(names(users.list(&one("d")).await.unwrap()), ["d"]);
    assert!(users.list(&one("e")).await.unwrap().items.is_empty());
    let d_h1 = one("d").labels(&h1);
    assert!(users.list(&d_h1).await.unwrap().items.is_empty());

    // Without the label: from their own index, as a scan finds them.
    let without = format!("!{LABEL}");
    assert!(users.list(&by(&without)).await.unwrap().items.is_empty());
    fake.apply(labelled("f", "default", json!({"team": "x"})));
    fake.apply(labelled("g", "default", json!({})));
    fake.apply(labelled("h", "other", json!({})));
    assert_eq!(names(users.list(&by(&without)).await.unwrap()), ["f", "g"]);
    let without_x = format!("!{LABEL},team=x");
    assert_eq!(names(users.list(&by(&without_x)).await.unwrap()), ["f"]);
    assert_eq!(
        names(all.list(&by(&without)).await.unwrap()),
        ["f", "g", "h"]
    );
    fake.apply(labelled("g", "default", json!({LABEL: "h3"})));
    fake.delete(V1ALPHA1, "users", "default", "f");
    assert!(users.list(&by(&without)).await.unwrap().items.is_empty());
    assert_eq!(names(all.list(&by(&without)).await.unwrap()), ["h"]);
}
