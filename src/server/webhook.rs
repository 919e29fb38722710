//! The validating admission webhook: `POST /validate` takes an `AdmissionReview`
//! (`admission.k8s.io/v1`) for one of the four kinds and answers it with what
//! [`crate::source::cluster::judge::review`] says, over HTTPS ([`super::tls`]).
//!
//! AdmissionReview in and out only: the judgement is the cluster module's.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::tls::{self, ServingCert};
use crate::resources::{Kind, GROUP};
use crate::snapshot::SnapshotStore;
use crate::source::cluster::judge::{review, Answer, Candidate};

const API_VERSION: &str = "admission.k8s.io/v1";
/// An object and the one it replaces, each up to the API server's ~1.5 MB.
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// Binds `addr`, reads the certificate and key, and serves the webhook until `stop`.
pub async fn serve(
    addr: SocketAddr,
    cert_file: &Path,
    key_file: &Path,
    snapshots: Arc<SnapshotStore>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let cert = ServingCert::load(cert_file, key_file)?;
    let config = cert.server_config()?;
    cert.watch().with_context(|| {
        format!(
            "watching --tls-cert-file {} and --tls-key-file {}",
            cert_file.display(),
            key_file.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --webhook-addr {addr}"))?;
    tracing::info!(webhook = %addr, "admission webhook serving HTTPS");
    tls::serve(listener, config, router(snapshots), stop).await;
    Ok(())
}

pub fn router(snapshots: Arc<SnapshotStore>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(snapshots)
}

/// The parts of an `AdmissionReview` that are read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview {
    api_version: String,
    kind: String,
    request: AdmissionRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    operation: String,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    old_object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    group: String,
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionResponse {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

async fn validate(State(snapshots): State<Arc<SnapshotStore>>, body: Bytes) -> Json<Value> {
    let response = match serde_json::from_slice::<AdmissionReview>(&body) {
        Ok(r) if r.api_version == API_VERSION && r.kind == "AdmissionReview" => {
            answer(r.request, &snapshots)
        }
        Ok(r) => unreadable(
            r.request.uid,
            format!(
                "expected an AdmissionReview of {API_VERSION}, got a {} of {}: \
                 set admissionReviewVersions: [v1]",
                r.kind, r.api_version
            ),
        ),
        Err(e) => {
            // The API server pairs answers with requests by uid: find it if it is there.
            let uid = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["request"]["uid"].as_str().map(str::to_string))
                .unwrap_or_default();
            unreadable(uid, format!("cannot read the AdmissionReview: {e}"))
        }
    };
    Json(json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// Refused: the request could not be read.
fn unreadable(uid: String, message: String) -> AdmissionResponse {
    tracing::warn!(%message, "admission review refused");
    AdmissionResponse {
        uid,
        allowed: false,
        status: Some(json!({"code": 400, "reason": "BadRequest", "message": message})),
        warnings: Vec::new(),
    }
}

fn answer(request: AdmissionRequest, snapshots: &SnapshotStore) -> AdmissionResponse {
    let allowed = |warnings| AdmissionResponse {
        uid: request.uid.clone(),
        allowed: true,
        status: None,
        warnings,
    };
    // Not one of the four kinds: not for portcullis to judge.
    let kind = match Kind::from_name(&request.kind.kind) {
        Some(kind) if request.kind.group == GROUP => kind,
        _ => return allowed(Vec::new()),
    };
    // A deletion always applies, as it does in the index.
    if request.operation != "CREATE" && request.operation != "UPDATE" {
        return allowed(Vec::new());
    }
    let metadata = |o: &Option<Value>, field: &str| {
        o.as_ref()
            .and_then(|o| o["metadata"][field].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let name = match request.name.as_str() {
        "" => metadata(&request.object, "name"),
        name => name.to_string(),
    };
    let namespace = match request.namespace.as_str() {
        "" => metadata(&request.object, "namespace"),
        namespace => namespace.to_string(),
    };
    let spec = |o: &Option<Value>| o.as_ref().and_then(|o| o.get("spec")).cloned();
    let candidate = Candidate {
        kind,
        namespace,
        name,
        spec: spec(&request.object),
        old_spec: spec(&request.old_object),
    };
    let Answer { refused, warnings } = review(&candidate, snapshots.load().as_ref());
    let Some(ready) = refused else {
        return allowed(warnings);
    };
    let name = match candidate.name.as_str() {
        "" => "(a generated name)",
        name => name,
    };
    let resource = format!("{}/{}/{name}", kind.name(), candidate.namespace);
    tracing::info!(
        %resource,
        operation = %request.operation,
        reason = ready.reason,
        message = %ready.message,
        "admission refused"
    );
    AdmissionResponse {
        uid: request.uid,
        allowed: false,
        status: Some(json!({
            "code": 403,
            "reason": ready.reason,
            "message": format!("{resource}: {}", ready.message),
        })),
        warnings,
    }
}
