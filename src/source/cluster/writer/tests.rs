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
    assert_eq!(queue.write_next(&client).await.unwrap(), Some("ok"));
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
