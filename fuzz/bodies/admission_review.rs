//! Fuzz body `admission_review`: the admission webhook (`server::webhook::router`,
//! `POST /validate`) on an arbitrary body, as the API server would send it, through the
//! whole axum route (body limit, JSON, review, answer).
//!
//! Input: the request body. Each body is reviewed twice: by a replica that has not read the
//! cluster yet, and by one that serves a small fixed configuration (an issuer, a system,
//! a User), so that conflicts are found. An input that is not JSON is also turned into an
//! `AdmissionReview` of one of the four kinds (`common::Gen::spec`) and reviewed.
//! Properties: no panic; the answer is always a well-formed `AdmissionReview` of
//! `admission.k8s.io/v1` whose `response.uid` is the request's (`""` when there is none);
//! a refusal carries 400 or 403 and a message, an allow no status; what a replica refuses
//! on its own, one that serves a configuration refuses too; a refusal never quotes a
//! secret of the object (`jwt.secret`, `jwt.keys[].k`, the introspection
//! `authorization`).

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::Router;
use portcullis::resources::{parse_documents, Origin};
use portcullis::snapshot::{Compiler, SnapshotStore};
use serde_json::{json, Value};
use tower::ServiceExt;

const NAMESPACE: &str = "team-a";

/// What the joined replica serves (Kubernetes manifests of namespace `team-a`).
pub fn serving_config() -> String {
    let manifest = |kind: &str, name: &str, spec: Value| {
        json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": kind,
               "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec})
    };
    json!([
        manifest(
            "IdentityProvider",
            "idp",
            json!({"system": "https://auth.example.com"})
        ),
        manifest(
            "TokenIntrospector",
            "auth",
            json!({"type": "jwt",
            "jwt": {"iss": "https://auth.example.com", "secret": "very-secret"},
            "identity_provider": {"reference": "IdentityProvider/idp"}})
        ),
        manifest(
            "User",
            "basic",
            json!({"identifier": [{"system": "https://auth.example.com", "value": "basic"}]})
        ),
        manifest(
            "AccessPolicy",
            "public",
            json!({"engine": "matcho", "matcho": {"uri": "#^/public"}})
        ),
    ])
    .to_string()
}

struct Routers {
    alone: Router,
    joined: Router,
}

fn routers() -> &'static Routers {
    static ROUTERS: OnceLock<Routers> = OnceLock::new();
    ROUTERS.get_or_init(|| {
        let (resources, errors) =
            parse_documents(std::path::Path::new("serving.json"), &serving_config());
        assert!(errors.is_empty(), "{errors:?}");
        let mut compiler = Compiler::default();
        for mut r in resources {
            r.origin = Origin::Cluster { generation: 1 };
            compiler
                .admit(&r)
                .expect("the serving configuration admits");
        }
        let joined = Arc::new(SnapshotStore::default());
        joined.store(compiler.into_snapshot());
        Routers {
            alone: portcullis::server::webhook::router(Arc::new(SnapshotStore::default())),
            joined: portcullis::server::webhook::router(joined),
        }
    })
}

/// The answer's `response`, checked for form.
fn post(router: &Router, body: Vec<u8>) -> Value {
    let request = http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = common::block_on(router.clone().oneshot(request)).expect("infallible");
    assert_eq!(
        response.status(),
        200,
        "the webhook answers 200, whatever it was sent"
    );
    let bytes =
        common::block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("a body");
    let review: Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review["response"].clone();
    let allowed = response["allowed"]
        .as_bool()
        .expect("`allowed` is a boolean");
    assert!(response["uid"].is_string(), "`uid` is a string");
    if allowed {
        assert!(response.get("status").is_none(), "an allow with a status");
    } else {
        let code = response["status"]["code"]
            .as_u64()
            .expect("a refusal's code");
        assert!(code == 400 || code == 403, "refused with {code}");
        assert!(response["status"]["message"].is_string());
    }
    if let Some(warnings) = response.get("warnings") {
        let warnings = warnings.as_array().expect("warnings are a list");
        assert!(warnings.iter().all(Value::is_string));
    }
    response
}

/// The strings of the object's spec that are secrets.
fn secrets(review: &Value) -> Vec<String> {
    let spec = &review["request"]["object"]["spec"];
    let mut out = Vec::new();
    let mut take = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| s.len() >= 8) {
            out.push(s.to_string());
        }
    };
    take(&spec["jwt"]["secret"]);
    take(&spec["introspection_endpoint"]["authorization"]);
    for key in spec["jwt"]["keys"].as_array().into_iter().flatten() {
        take(&key["k"]);
    }
    out
}

/// `review` with every secret of the object's spec replaced by one of the same length.
fn without_secrets(mut review: Value) -> Value {
    // `pointer_mut`, not indexing: a part of the review that is not an object is no panic.
    let replace = |v: Option<&mut Value>| {
        if let Some(Value::String(s)) = v {
            *s = "Q".repeat(s.len());
        }
    };
    replace(review.pointer_mut("/request/object/spec/jwt/secret"));
    replace(review.pointer_mut("/request/object/spec/introspection_endpoint/authorization"));
    if let Some(keys) = review
        .pointer_mut("/request/object/spec/jwt/keys")
        .and_then(Value::as_array_mut)
    {
        for key in keys {
            replace(key.get_mut("k"));
        }
    }
    review
}

fn review(body: &[u8]) {
    let routers = routers();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let uid = parsed
        .as_ref()
        .and_then(|v| v["request"]["uid"].as_str())
        .unwrap_or_default()
        .to_string();
    let alone = post(&routers.alone, body.to_vec());
    let joined = post(&routers.joined, body.to_vec());
    for response in [&alone, &joined] {
        // Input that is not JSON as a whole may still be read by serde_json's typed reading
        // (it skips what it ignores, bad UTF-8 included): then any uid may come back.
        if parsed.is_some() {
            assert_eq!(
                response["uid"],
                uid.as_str(),
                "the answer is not paired with its request"
            );
        }
    }
    if alone["status"]["code"] == 403 {
        assert_eq!(
            joined["allowed"], false,
            "refused on its own, admitted beside a configuration: {alone}"
        );
    }
    let Some(parsed) = parsed else {
        return;
    };
    let secrets = secrets(&parsed);
    if secrets.is_empty() {
        return;
    }
    let redacted = serde_json::to_vec(&without_secrets(parsed)).expect("JSON");
    for (router, answer) in [(&routers.alone, &alone), (&routers.joined, &joined)] {
        let text = answer.to_string();
        let other = post(router, redacted.clone()).to_string();
        for secret in &secrets {
            let quoted = serde_json::to_string(secret).expect("JSON");
            let escaped = &quoted[1..quoted.len() - 1];
            assert!(
                !text.contains(escaped) || other.contains(escaped),
                "the answer quotes a secret: {text}"
            );
        }
    }
}

pub fn run(data: &[u8]) {
    review(data);
    if serde_json::from_slice::<Value>(data).is_ok() {
        return;
    }
    // Not JSON: an AdmissionReview built from the bytes.
    let mut gen = common::Gen::new(data);
    let kind = gen.pick(&common::KINDS);
    let object = |gen: &mut common::Gen, name: &str| {
        json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": kind,
               "metadata": {"name": name, "namespace": NAMESPACE}, "spec": gen.spec(kind)})
    };
    let name = gen
        .pick(&["basic", "auth", "idp", "public", "new", ""])
        .to_string();
    let operation = gen.pick(&["CREATE", "UPDATE", "DELETE", "CONNECT"]);
    let new = object(&mut gen, &name);
    let old = match gen.below(3) {
        0 => Value::Null,
        1 => new.clone(),
        _ => object(&mut gen, &name),
    };
    let group = if gen.below(8) == 0 {
        "other.dev"
    } else {
        "portcullis.dev"
    };
    let review_body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{}", gen.u64()),
            "kind": {"group": group, "version": "v1alpha1", "kind": kind},
            "name": name,
            "namespace": NAMESPACE,
            "operation": operation,
            "object": new,
            "oldObject": old,
        }
    });
    review(&serde_json::to_vec(&review_body).expect("JSON"));
}
