//! The exact requests the writer sends, against a `tower-test` mock of the API server.

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tower_test::mock;

use super::*;
use crate::resources::Condition;
use crate::resources::Kind;

type Handle = mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, Handle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

async fn body_of(request: Request<Body>) -> (String, String, String, Value) {
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, content_type, body)
}

fn respond(send: mock::SendResponse<Response<Body>>, code: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn verdict(ready: bool, observed: Option<ResourceStatus>) -> Verdict {
    Verdict {
        key: ObjectKey {
            kind: Kind::AccessPolicy,
            namespace: "team-a".into(),
            name: "read".into(),
        },
        uid: 7,
        generation: 3,
        ready: Ready {
            status: ready,
            reason: if ready { "Accepted" } else { "Invalid" },
            message: if ready {
                "serving".into()
            } else {
                "field `matcho`: bad".into()
            },
        },
        previous_serves: !ready,
        observed,
    }
}

fn policy_object(status: Value) -> Value {
    json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy",
           "metadata": {"name": "read", "namespace": "team-a"}, "spec": {}, "status": status})
}

#[tokio::test]
async fn a_verdict_is_one_merge_patch_of_the_status_subresource() {
    let (client, mut api) = mock_client();
    let mut queue = StatusQueue::default();
    queue.offer(vec![verdict(false, None)]);
    let server = tokio::spawn(async move {
        let (request, send) = api.next_request().await.expect("one request");
        let seen = body_of(request).await;
        respond(send, 200, policy_object(seen.3["status"].clone()));
        seen
    });
    assert_eq!(queue.write_next(&client).await, Some("ok"));
    let (method, uri, content_type, body) = server.await.unwrap();
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/apis/portcullis.dev/v1alpha1/namespaces/team-a/accesspolicies/read/status?"
    );
    assert_eq!(content_type, "application/merge-patch+json");
    let condition = &body["status"]["conditions"][0];
    assert_eq!(body["status"]["observedGeneration"], 3);
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Invalid");
    assert_eq!(
        condition["message"],
        "field `matcho`: bad; the previous version keeps serving"
    );
    assert!(condition["lastTransitionTime"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(queue.pending.is_empty());

    // Offered again before the watch echoes the write: nothing more is sent.
    queue.offer(vec![verdict(false, None)]);
    assert!(queue.pending.is_empty());

    // The object deleted and created again under its name, same generation and verdict:
    // the new one has no status yet, so it is written.
    let recreated = Verdict {
        uid: 8,
        ..verdict(false, None)
    };
    queue.offer(vec![recreated]);
    assert_eq!(queue.pending.len(), 1, "a new object of the same name");
}

#[test]
fn a_status_that_already_says_the_verdict_is_not_written() {
    let observed = |status: &str, reason: &str, message: &str, generation| ResourceStatus {
        observed_generation: Some(generation),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
            observed_generation: Some(generation),
        }],
    };
    let mut queue = StatusQueue::default();
    queue.offer(vec![verdict(
        true,
        Some(observed("True", "Accepted", "serving", 3)),
    )]);
    assert!(queue.pending.is_empty(), "another replica already wrote it");
    queue.offer(vec![verdict(
        true,
        Some(observed("True", "Accepted", "serving", 2)),
    )]);
    assert_eq!(queue.pending.len(), 1, "a new generation is written");
    queue.offer(vec![verdict(
        true,
        Some(observed("False", "Invalid", "x", 4)),
    )]);
    assert!(
        queue.pending.is_empty(),
        "a newer generation's status stands"
    );

    // The transition time moves only with the condition's status.
    let v = verdict(true, Some(observed("True", "Accepted", "old", 2)));
    let patch = status_patch(&v, "2026-12-02T00:00:00Z");
    assert_eq!(
        patch["status"]["conditions"][0]["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    let v = verdict(false, Some(observed("True", "Accepted", "serving", 2)));
    let patch = status_patch(&v, "2026-12-02T00:00:00Z");
    assert_eq!(
        patch["status"]["conditions"][0]["lastTransitionTime"],
        "2026-12-02T00:00:00Z"
    );
}

#[tokio::test]
async fn a_user_that_exists_is_adopted_after_409() {
    let (client, mut api) = mock_client();
    let mut user = resources::User::new("keycloak-abc", Default::default());
    user.metadata.namespace = Some("team-a".into());
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        let (request, send) = api.next_request().await.unwrap();
        seen.push(body_of(request).await);
        respond(
            send,
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "AlreadyExists", "code": 409, "message": "exists"}),
        );
        let (request, send) = api.next_request().await.unwrap();
        seen.push(body_of(request).await);
        respond(
            send,
            200,
            json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "User",
                   "metadata": {"name": "keycloak-abc", "namespace": "team-a"},
                   "spec": {"identifier": [{"system": "kc", "value": "abc"}]}}),
        );
        seen
    });
    let adopted = create_user(&client, &user).await.unwrap();
    assert_eq!(adopted.spec.identifier[0].value, "abc");
    let seen = server.await.unwrap();
    assert_eq!(seen[0].0, "POST");
    assert_eq!(
        seen[0].1,
        "/apis/portcullis.dev/v1alpha1/namespaces/team-a/users?&fieldManager=portcullis"
    );
    assert_eq!(seen[0].3["metadata"]["name"], "keycloak-abc");
    assert_eq!(seen[1].0, "GET");
    assert_eq!(
        seen[1].1,
        "/apis/portcullis.dev/v1alpha1/namespaces/team-a/users/keycloak-abc"
    );
}

fn policy_verdict(name: &str, generation: i64) -> Verdict {
    let mut v = verdict(true, None);
    v.key.name = name.into();
    v.generation = generation;
    v
}

fn key(name: &str) -> ObjectKey {
    policy_verdict(name, 1).key
}

/// Answers every request: `500` to the status writes of `failing`, else the patched object.
/// Returns the paths asked for.
fn api_failing(mut api: Handle, failing: &'static str) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut paths = Vec::new();
        while let Some((request, send)) = api.next_request().await {
            let (_, uri, _, body) = body_of(request).await;
            if uri.contains(&format!("/{failing}/status")) {
                respond(
                    send,
                    500,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "InternalError", "code": 500, "message": "broken"}),
                );
            } else {
                respond(send, 200, policy_object(body["status"].clone()));
            }
            paths.push(uri);
        }
        paths
    })
}

#[tokio::test(start_paused = true)]
async fn an_object_whose_write_fails_backs_off_alone_and_is_forgotten_when_it_goes() {
    let (client, api) = mock_client();
    let server = api_failing(api, "bad");
    let mut queue = StatusQueue::default();
    queue.offer(vec![
        policy_verdict("a", 1),
        policy_verdict("bad", 1),
        policy_verdict("c", 1),
    ]);
    let mut results = Vec::new();
    while queue.next_due() == Some(Instant::now()) {
        results.push(queue.write_next(&client).await.unwrap());
    }
    assert_eq!(
        results,
        ["ok", "error", "ok"],
        "the others after the failure"
    );
    assert_eq!(queue.pending.keys().collect::<Vec<_>>(), [&key("bad")]);
    let first = queue.next_due().unwrap() - Instant::now();
    assert!(
        (FIRST_RETRY / 2..=FIRST_RETRY).contains(&first),
        "{first:?}"
    );

    // A new verdict for another object is written at once; the failing one still waits.
    queue.offer(vec![policy_verdict("a", 2), policy_verdict("bad", 2)]);
    assert_eq!(queue.write_next(&client).await, Some("ok"));
    assert_eq!(queue.write_next(&client).await, None, "bad waits its turn");

    // Its turn comes: it fails again and waits twice as long.
    tokio::time::advance(first).await;
    assert_eq!(queue.write_next(&client).await, Some("error"));
    let second = queue.next_due().unwrap() - Instant::now();
    assert!(
        (FIRST_RETRY..=FIRST_RETRY * 2).contains(&second),
        "{second:?}"
    );
    assert_eq!(queue.failing[&key("bad")].failures, 2);
    // Still the latest verdict that waits.
    assert_eq!(queue.pending[&key("bad")].generation, 2);

    // Deleted: nothing of it is kept, nor of `a` once it goes too.
    queue.forget(&[key("bad")]);
    assert!(queue.pending.is_empty() && queue.due.is_empty());
    assert!(queue.failing.is_empty() && queue.retries.is_empty());
    assert_eq!(queue.next_due(), None);
    assert_eq!(queue.written.len(), 2, "a and c");
    queue.forget(&[key("a"), key("c")]);
    assert!(queue.written.is_empty());

    drop(client);
    let paths = server.await.unwrap();
    assert_eq!(paths.iter().filter(|p| p.contains("/bad/")).count(), 2);
}

#[test]
fn the_backoff_doubles_to_a_bound_with_jitter() {
    let k = key("bad");
    for failures in 1..40 {
        let full = (FIRST_RETRY * 2u32.pow(failures.min(20) - 1)).min(LONGEST_RETRY);
        let wait = backoff(&k, failures);
        assert!(wait <= full && wait >= full / 2, "{failures}: {wait:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_status_write_the_api_server_never_answers_times_out() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(request) = api.next_request().await {
            held.push(request);
        }
        held.len()
    });
    let mut queue = StatusQueue::default();
    queue.offer(vec![policy_verdict("hung", 1)]);
    let started = Instant::now();
    assert_eq!(queue.write_next(&client).await, Some("timeout"));
    assert_eq!(Instant::now() - started, API_TIMEOUT);
    assert_eq!(queue.failing[&key("hung")].failures, 1);
    drop(client);
    assert_eq!(server.await.unwrap(), 1);
}

/// The task: a failing object delays no other, and a User is created between writes.
#[tokio::test(start_paused = true)]
async fn the_writer_writes_every_other_object_while_one_keeps_failing() {
    let (client, api) = mock_client();
    let server = api_failing(api, "bad");
    let (commands_tx, commands) = mpsc::channel(16);
    let (leader_tx, leader) = watch::channel(true);
    let metrics = Arc::new(Metrics::new());
    let writer = tokio::spawn(run(client, commands, leader, metrics.clone()));
    let names = ["a", "bad", "c", "d"];
    commands_tx
        .send(Command::Verdicts {
            verdicts: names.iter().map(|n| policy_verdict(n, 1)).collect(),
            gone: vec![],
        })
        .await
        .unwrap();
    // A minute of backoffs for `bad`, and a new round for the others meanwhile.
    tokio::time::sleep(Duration::from_secs(30)).await;
    commands_tx
        .send(Command::Verdicts {
            verdicts: ["a", "c", "d"]
                .iter()
                .map(|n| policy_verdict(n, 2))
                .collect(),
            gone: vec![],
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(commands_tx);
    writer.await.unwrap();
    drop(leader_tx);
    let paths = server.await.unwrap();
    for name in ["a", "c", "d"] {
        let writes = paths
            .iter()
            .filter(|p| p.contains(&format!("/{name}/status")))
            .count();
        assert_eq!(writes, 2, "{name}: one per generation");
    }
    let bad = paths.iter().filter(|p| p.contains("/bad/status")).count();
    // Tries at about 0, 1, 3, 7, 15, 31 s (less jitter): a handful, not hundreds.
    assert!((4..=12).contains(&bad), "{bad} tries of the failing object");
    let text = metrics.encode();
    assert!(
        text.contains(&format!(
            "portcullis_status_writes_total{{result=\"error\"}} {bad}"
        )),
        "{text}"
    );
}

/// Verdicts on Users read on demand (no watch follows them): written like the others, never
/// remembered after, and at most [`MAX_UNWATCHED`] wait at once.
#[tokio::test(start_paused = true)]
async fn verdicts_on_unwatched_objects_are_bounded_and_not_remembered() {
    let (client, api) = mock_client();
    let server = api_failing(api, "none");
    let mut queue = StatusQueue::default();
    let many: Vec<Verdict> = (0..MAX_UNWATCHED + 10)
        .map(|i| policy_verdict(&format!("u{i}"), 1))
        .collect();
    queue.offer_unwatched(many);
    assert_eq!(queue.pending.len(), MAX_UNWATCHED);
    // A newer verdict on one that waits replaces it; one more new is still dropped.
    queue.offer_unwatched(vec![policy_verdict("u0", 2), policy_verdict("new", 1)]);
    assert_eq!(queue.pending.len(), MAX_UNWATCHED);
    assert_eq!(queue.pending[&key("u0")].generation, 2);
    // One whose status already says it leaves at once.
    let mut said = policy_verdict("u1", 1);
    said.observed = Some(ResourceStatus {
        observed_generation: Some(1),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("Accepted".into()),
            message: Some("serving".into()),
            last_transition_time: None,
            observed_generation: Some(1),
        }],
    });
    queue.offer_unwatched(vec![said]);
    assert_eq!(queue.pending.len(), MAX_UNWATCHED - 1);
    while queue.next_due() == Some(Instant::now()) {
        assert_eq!(queue.write_next(&client).await, Some("ok"));
    }
    assert!(queue.pending.is_empty() && queue.unwatched.is_empty());
    assert!(queue.written.is_empty(), "nothing remembered");
    drop(client);
    assert_eq!(server.await.unwrap().len(), MAX_UNWATCHED - 1);
}
