//! The validating admission webhook: `POST /validate` takes an `AdmissionReview`
//! (`admission.k8s.io/v1`) for one of the four kinds and answers it with what
//! [`crate::source::cluster::judge::review`] says, over HTTPS ([`super::tls`]).
//!
//! AdmissionReview in and out only: the judgement is the cluster module's.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::tls::{self, ServingCert};
use crate::resources::{self, checks, Kind, GROUP};
use crate::snapshot::SnapshotStore;
use crate::source::cluster::judge::{review, Answer, Candidate};

const API_VERSION: &str = "admission.k8s.io/v1";
/// An object and the one it replaces (an update), each up to the 3 MiB the API server
/// accepts in a request, and the envelope around them.
pub const MAX_REVIEW_BYTES: usize = 7 * 1024 * 1024;
/// A review whose declared `Content-Length` is at most this is small: it is judged in a
/// lane of its own, so that heavy reviews never make it wait for a permit.
pub const SMALL_REVIEW_BYTES: usize = 256 * 1024;
/// Heavy reviews (over [`SMALL_REVIEW_BYTES`], or of unknown length) read and judged at
/// once. With [`SMALL_PERMITS`], this bounds the webhook's memory: at most this many
/// bodies of up to [`MAX_REVIEW_BYTES`] and their parsed objects are held (see
/// BENCHMARKS.md for what one costs).
pub const HEAVY_PERMITS: usize = 2;
/// Small reviews read and judged at once.
pub const SMALL_PERMITS: usize = 4;
/// Each review is answered within this, waiting for a permit included; past it, it is
/// refused (as the API server would refuse it on its own timeout, per `failurePolicy`).
/// The judgement itself cannot be interrupted: it keeps its permit until it ends, so
/// reviews past their deadline never add up to more work than the permits allow.
pub const REVIEW_DEADLINE: Duration = Duration::from_secs(1);

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
        .with_state(Lanes {
            snapshots,
            heavy: Arc::new(Semaphore::new(HEAVY_PERMITS)),
            small: Arc::new(Semaphore::new(SMALL_PERMITS)),
        })
}

/// What the handler shares: the configuration judged against and the two lanes' permits.
#[derive(Clone)]
struct Lanes {
    snapshots: Arc<SnapshotStore>,
    heavy: Arc<Semaphore>,
    small: Arc<Semaphore>,
}

/// Why a review was not judged.
enum NotJudged {
    TooLarge,
    Unreadable(String),
    Late,
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
    /// Kept as text until weighed: an object of a million small values costs a JSON
    /// tree hundreds of MiB, and is refused before one is built.
    #[serde(default)]
    object: Option<Box<RawValue>>,
    #[serde(default)]
    old_object: Option<Box<RawValue>>,
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

/// Reads and judges one review off the async runtime, in its lane, within
/// [`REVIEW_DEADLINE`].
async fn validate(State(lanes): State<Lanes>, request: Request) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if length.is_some_and(|l| l > MAX_REVIEW_BYTES) {
        return too_large();
    }
    let (lane, limit) = match length {
        Some(l) if l <= SMALL_REVIEW_BYTES => (&lanes.small, SMALL_REVIEW_BYTES),
        _ => (&lanes.heavy, MAX_REVIEW_BYTES),
    };
    // The uid, once the review is parsed: a late answer still names its request.
    let uid = Arc::new(OnceLock::new());
    let judged = async {
        let permit = lane
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NotJudged::Late)?;
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                match e
                    .into_inner()
                    .downcast::<http_body_util::LengthLimitError>()
                {
                    Ok(_) => NotJudged::TooLarge,
                    Err(e) => NotJudged::Unreadable(e.to_string()),
                }
            })?;
        let (snapshots, uid) = (lanes.snapshots.clone(), uid.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            judge(&body, &snapshots, &uid)
        })
        .await
        .map_err(|e| NotJudged::Unreadable(format!("the review's judgement failed: {e}")))
    };
    let response = match tokio::time::timeout(REVIEW_DEADLINE, judged).await {
        Ok(Ok(response)) => response,
        Ok(Err(NotJudged::TooLarge)) => return too_large(),
        Ok(Err(NotJudged::Unreadable(message))) => unreadable(String::new(), message),
        Ok(Err(NotJudged::Late)) | Err(_) => late(uid.get().cloned().unwrap_or_default()),
    };
    Json(json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": response,
    }))
    .into_response()
}

fn too_large() -> Response {
    tracing::warn!(
        limit = MAX_REVIEW_BYTES,
        "admission review refused: body too large"
    );
    let message = format!("an AdmissionReview is at most {MAX_REVIEW_BYTES} bytes");
    (StatusCode::PAYLOAD_TOO_LARGE, message).into_response()
}

/// Refused: not judged within [`REVIEW_DEADLINE`].
fn late(uid: String) -> AdmissionResponse {
    let message = format!(
        "portcullis could not judge this review within {} ms (too many at once): try again",
        REVIEW_DEADLINE.as_millis()
    );
    tracing::warn!(%uid, "admission review refused: past its deadline");
    AdmissionResponse {
        uid,
        allowed: false,
        status: Some(json!({"code": 503, "reason": "ServiceUnavailable", "message": message})),
        warnings: Vec::new(),
    }
}

/// Parses and judges `body` (on a blocking thread), setting `uid` once it is known.
fn judge(body: &[u8], snapshots: &SnapshotStore, uid: &OnceLock<String>) -> AdmissionResponse {
    match serde_json::from_slice::<AdmissionReview>(body) {
        Ok(r) if r.api_version == API_VERSION && r.kind == "AdmissionReview" => {
            let _ = uid.set(r.request.uid.clone());
            answer(r.request, snapshots)
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
            // The API server pairs answers with requests by uid: find it if it is there,
            // reading past the rest without building it.
            #[derive(Deserialize)]
            struct Peek {
                request: PeekRequest,
            }
            #[derive(Deserialize)]
            struct PeekRequest {
                uid: String,
            }
            let uid = serde_json::from_slice::<Peek>(body)
                .map(|p| p.request.uid)
                .unwrap_or_default();
            unreadable(uid, format!("cannot read the AdmissionReview: {e}"))
        }
    }
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

/// The object of a review, parsed once it is known to weigh at most what a spec and
/// metadata may ([`checks::MAX_SPEC_WEIGHT`], [`checks::MAX_METADATA_WEIGHT`]).
fn read_object(raw: Option<&RawValue>) -> Result<Option<Value>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let limit = checks::MAX_SPEC_WEIGHT + checks::MAX_METADATA_WEIGHT;
    match resources::weigh_text(raw.get(), limit) {
        Ok(Some(_)) => {}
        Ok(None) => return Err(format!("spec: {}", resources::spec_too_heavy())),
        Err(e) => return Err(format!("cannot read the object: {e}")),
    }
    serde_json::from_str(raw.get())
        .map(Some)
        .map_err(|e| format!("cannot read the object: {e}"))
}

/// The object's name and namespace, from the review or else the object.
fn names(request: &AdmissionRequest, object: Option<&Value>) -> (String, String) {
    let metadata = |field: &str| {
        object
            .and_then(|o| o["metadata"][field].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let name = match request.name.as_str() {
        "" => metadata("name"),
        name => name.to_string(),
    };
    let namespace = match request.namespace.as_str() {
        "" => metadata("namespace"),
        namespace => namespace.to_string(),
    };
    (name, namespace)
}

/// Refused before it was judged: too heavy to read, or not an object.
fn refused(request: &AdmissionRequest, kind: Kind, message: String) -> AdmissionResponse {
    let (name, namespace) = names(request, None);
    let resource = format!("{}/{namespace}/{name}", kind.name());
    tracing::info!(%resource, operation = %request.operation, %message, "admission refused");
    AdmissionResponse {
        uid: request.uid.clone(),
        allowed: false,
        status: Some(json!({
            "code": 403,
            "reason": "Invalid",
            "message": format!("{resource}: {message}"),
        })),
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
    let mut warnings = Vec::new();
    let object = match read_object(request.object.as_deref()) {
        Ok(object) => object,
        Err(message) => return refused(&request, kind, message),
    };
    // The object it replaces, over the bound (stored before it, or while no webhook ran):
    // the new one is judged as if created, so that an update can bring it back under.
    let old_object = match read_object(request.old_object.as_deref()) {
        Ok(old) => old,
        Err(_) => {
            warnings.push(format!(
                "the object this replaces is over the bound ({}): judged as new",
                resources::spec_too_heavy()
            ));
            None
        }
    };
    let (name, namespace) = names(&request, object.as_ref());
    let annotations = |o: &Option<Value>| {
        o.as_ref()
            .and_then(|o| o.get("metadata")?.get("annotations"))
            .cloned()
    };
    let candidate = Candidate {
        kind,
        namespace,
        name,
        annotations: annotations(&object),
        old_annotations: annotations(&old_object),
        labels: object
            .as_ref()
            .and_then(|o| o["metadata"]["labels"].as_object())
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        // Moved, not copied: the spec is most of an object.
        spec: object.and_then(|mut o| o.as_object_mut()?.remove("spec")),
        old_spec: old_object.and_then(|mut o| o.as_object_mut()?.remove("spec")),
    };
    let Answer {
        refused,
        warnings: found,
    } = review(&candidate, snapshots.load().as_ref());
    warnings.extend(found);
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
