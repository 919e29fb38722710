//! The judgement of one object, wherever an object of the four kinds is judged. Plain
//! data in and out, no kube types:
//!
//! - its `Ready` condition: [`ClusterIndex::compile`](super::index::ClusterIndex::compile)
//!   runs [`check`] with the Secrets the index read, into the compiler of the whole build;
//! - the admission webhook: [`review`] runs [`check`] with placeholders for the Secrets,
//!   into a compiler that joins the serving snapshot ([`Compiler::joining`]), so that an
//!   object is refused for what its status would say, with the same message.
//!
//! Both end in [`Compiler::admit`], which shares every check of a resource with
//! [`Compiler::add`], what `validate` and file mode run: PEM keys parse, regexes and JSON
//! Schemas compile, matcho is well formed, exactly one key source, issuer, system and
//! identifier conflicts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::resources::checks;
use crate::resources::{parse_spec, qualified, Kind, ResourceStatus, SecretKeyRef, SecretProblem};
use crate::resources::{read_annotations, DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION};
use crate::resources::{FieldError, Origin, Resource, Spec};
use crate::snapshot::{Compiler, RejectReason, Rejection, Snapshot};
use crate::users::{LabelCheck, IDENTIFIER_LABEL};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.name(), self.namespace, self.name)
    }
}

/// One object as the API server holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub key: ObjectKey,
    pub generation: i64,
    /// A hash of `metadata.uid`: tells an object from one of the same name deleted before
    /// it (whose status writes must not count for it).
    pub uid: u64,
    /// `creationTimestamp` in seconds: of two conflicting objects, the older serves.
    pub created: i64,
    /// The spec, or the field that kept it from parsing.
    pub spec: Result<Spec, FieldError>,
    /// The status it carries now, so that only what changed is written.
    pub status: Option<ResourceStatus>,
}

/// The `data` of a Secret.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// What the `Ready` condition of an object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    pub status: bool,
    /// `Accepted`, `Invalid`, `Conflict` or `SecretNotFound`.
    pub reason: &'static str,
    pub message: String,
}

impl Ready {
    pub(crate) fn accepted() -> Self {
        Ready {
            status: true,
            reason: "Accepted",
            message: "serving".into(),
        }
    }

    pub(crate) fn refused(reason: &'static str, errors: &[FieldError]) -> Self {
        let message = errors
            .iter()
            .map(|e| match e.field.as_str() {
                "" => e.message.clone(),
                field => format!("field `{field}`: {}", e.message),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ready {
            status: false,
            reason,
            message,
        }
    }

    pub(crate) fn from_rejection(r: &Rejection) -> Self {
        let reason = match r.reason {
            RejectReason::Invalid => "Invalid",
            RejectReason::Conflict => "Conflict",
        };
        Self::refused(reason, &r.errors)
    }
}

/// The index's word on one object, for its status.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub key: ObjectKey,
    /// [`Object::uid`].
    pub uid: u64,
    pub generation: i64,
    pub ready: Ready,
    /// Whether an earlier good version of the object serves in its place.
    pub previous_serves: bool,
    /// The status the object carries now.
    pub observed: Option<ResourceStatus>,
}

impl Verdict {
    /// What the `Ready` condition's message says.
    pub fn message(&self) -> String {
        if self.previous_serves {
            format!("{}; the previous version keeps serving", self.ready.message)
        } else {
            self.ready.message.clone()
        }
    }

    /// Whether `status` leaves nothing to write: it says this verdict already, or another
    /// replica has seen a newer generation (its word stands).
    pub fn said_by(&self, status: &ResourceStatus) -> bool {
        if status
            .observed_generation
            .is_some_and(|g| g > self.generation)
        {
            return true;
        }
        status.observed_generation == Some(self.generation)
            && ready_condition(status).is_some_and(|c| {
                c.status == status_word(self.ready.status)
                    && c.reason.as_deref() == Some(self.ready.reason)
                    && c.message.as_deref() == Some(self.message().as_str())
            })
    }
}

/// The `Ready` condition of a status.
pub fn ready_condition(status: &ResourceStatus) -> Option<&crate::resources::Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

/// A condition's `status`.
pub fn status_word(ready: bool) -> &'static str {
    if ready {
        "True"
    } else {
        "False"
    }
}

/// What stands in for a referenced Secret's value while an object is reviewed: the webhook
/// reads no Secret (the Secret may also come after the object). It is a valid HS256
/// secret, OCT key and `Authorization` value, so that every other field is checked.
const SECRET_PLACEHOLDER: &str = "placeholder-for-a-secret-reference";

/// Checks one object and admits it into `compiler`: its spec parsed, its Secret references
/// filled in by `read`. The error is what the object's `Ready` condition says.
pub fn check(
    object: &Object,
    read: impl FnMut(&SecretKeyRef) -> Result<String, Ready>,
    compiler: &mut Compiler,
) -> Result<Resource, Ready> {
    let r = resource(object, read)?;
    compiler
        .admit(&r)
        .map_err(|rejection| Ready::from_rejection(&rejection))?;
    Ok(r)
}

/// The object as the compiler takes it, with its Secret references filled in by `read`.
pub(crate) fn resource(
    o: &Object,
    read: impl FnMut(&SecretKeyRef) -> Result<String, Ready>,
) -> Result<Resource, Ready> {
    resource_of(
        &o.key.namespace,
        &o.key.name,
        o.generation,
        o.spec.clone(),
        read,
    )
}

/// [`resource`] of an object given by its parts: its spec owned, as the index parses a
/// policy's again from its text.
pub(crate) fn resource_of(
    namespace: &str,
    name: &str,
    generation: i64,
    spec: Result<Spec, FieldError>,
    read: impl FnMut(&SecretKeyRef) -> Result<String, Ready>,
) -> Result<Resource, Ready> {
    let mut spec = spec.map_err(|e| Ready::refused("Invalid", std::slice::from_ref(&e)))?;
    if let Spec::TokenIntrospector(ti) = &mut spec {
        ti.resolve_secrets(read)
            .map_err(|(field, problem)| match problem {
                SecretProblem::Both => Ready::refused(
                    "Invalid",
                    &[FieldError::new(field, checks::BOTH_INLINE_AND_REFERENCE)],
                ),
                SecretProblem::Read(ready) => Ready {
                    message: format!("field `{field}`: {}", ready.message),
                    ..ready
                },
            })?;
    }
    Ok(Resource {
        name: name.to_string(),
        namespace: Some(namespace.to_string()),
        origin: Origin::Cluster { generation },
        spec,
        labels: None,
    })
}

/// An object that the API server is about to store (create or update).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub kind: Kind,
    pub namespace: String,
    /// Empty when the API server generates the name.
    pub name: String,
    /// The object's `spec`, as sent.
    pub spec: Option<Value>,
    /// On an update, the `spec` it replaces.
    pub old_spec: Option<Value>,
    /// The object's `metadata.annotations`, as sent: an AccessPolicy's dry-run.
    pub annotations: Option<Value>,
    /// On an update, the annotations it replaces.
    pub old_annotations: Option<Value>,
    /// Its `metadata.labels`: a User's `portcullis.dev/identifier` matters with
    /// `--users on-demand`.
    pub labels: BTreeMap<String, String>,
}

/// The webhook's word on one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    /// `None`: allowed. Otherwise the `Ready` condition the object would get.
    pub refused: Option<Ready>,
    /// Said to the client either way (`kubectl` prints them).
    pub warnings: Vec<String>,
}

/// Reviews `candidate` as the cluster's index would judge it beside `serving`, what this
/// replica serves (`None` before it has read the cluster: then the object is checked on
/// its own).
///
/// Refused: whatever its status would refuse (a field that does not parse or compile, a
/// Secret reference also given inline, an issuer, system or identifier that another
/// object holds). Warned of, but allowed: references to objects that do not exist (yet),
/// since objects are often applied in any order, and policies that allow every request.
/// An update that leaves a refused spec as it was (a label, an annotation) is allowed,
/// with the refusal as a warning: only changes of the spec are held back.
pub fn review(candidate: &Candidate, serving: Option<&Arc<Snapshot>>) -> Answer {
    let key = ObjectKey {
        kind: candidate.kind,
        namespace: candidate.namespace.clone(),
        name: candidate.name.clone(),
    };
    let object = Object {
        key: key.clone(),
        generation: 0,
        uid: 0,
        created: 0,
        spec: spec(candidate.kind, candidate.spec.clone()).and_then(|mut spec| {
            let annotations = candidate.annotations.as_ref();
            read_annotations(&mut spec, |key| annotations?.get(key).map(Value::as_str))?;
            Ok(spec)
        }),
        status: None,
    };
    let mut warnings = Vec::new();
    let mut compiler = match serving {
        Some(serving) => Compiler::joining(serving.clone()),
        None => {
            warnings.push(
                "this portcullis has not read the cluster yet: conflicts with other objects \
                 and references to them were not checked"
                    .to_string(),
            );
            Compiler::default()
        }
    };
    let namespace = candidate.namespace.as_str();
    if let Ok(Spec::TokenIntrospector(spec)) = &object.spec {
        let target = spec.identity_provider.as_ref().map(|r| r.target());
        if let Some(Ok(("IdentityProvider", name))) = target {
            let provider = qualified(Some(namespace), name);
            if !compiler.knows_provider(&provider) {
                if serving.is_some() {
                    warnings.push(format!(
                        "field `identity_provider`: IdentityProvider/{provider} does not exist \
                         (yet): this TokenIntrospector, and its tokens, are refused until it does"
                    ));
                }
                // Stands in for it, so that the rest of the object is checked.
                let _ = compiler.admit(&Resource {
                    name: name.to_string(),
                    namespace: Some(namespace.to_string()),
                    origin: Origin::Cluster { generation: 0 },
                    spec: Spec::IdentityProvider(Default::default()),
                    labels: None,
                });
            }
        }
    }
    let placeholder = |_: &SecretKeyRef| Ok(SECRET_PLACEHOLDER.to_string());
    let admitted = match check(&object, placeholder, &mut compiler) {
        Ok(admitted) => admitted,
        Err(ready) => {
            let unchanged = candidate.old_spec.is_some()
                && candidate.old_spec == candidate.spec
                && dry_run_annotations(&candidate.old_annotations)
                    == dry_run_annotations(&candidate.annotations);
            if unchanged {
                warnings.push(format!(
                    "{key} does not serve: {} (allowed: the spec is unchanged)",
                    ready.message
                ));
                return Answer {
                    refused: None,
                    warnings,
                };
            }
            return Answer {
                refused: Some(ready),
                warnings,
            };
        }
    };
    warnings.extend(compiler.warnings().iter().map(|w| match &w.field {
        Some(field) => format!("field `{field}`: {}", w.message),
        None => w.message.clone(),
    }));
    // With `--users on-demand` no User is held: one that is not there may exist.
    let users_known = serving.is_some_and(|s| !s.users_on_demand);
    if let (Spec::User(user), Some(true)) = (&admitted.spec, serving.map(|s| s.users_on_demand)) {
        let identifiers = user
            .identifier
            .iter()
            .map(|i| (i.system.as_str(), i.value.as_str()));
        let label = candidate.labels.get(IDENTIFIER_LABEL).map(String::as_str);
        if let Some(warning) = LabelCheck::of(identifiers, label).warning() {
            warnings.push(format!("field `metadata.labels`: {warning}"));
        }
    }
    if let (Spec::AccessPolicy(policy), Some(serving), true) =
        (&admitted.spec, serving, users_known)
    {
        for (i, link) in policy.link.iter().flatten().enumerate() {
            if let Ok(("User", name)) = link.target() {
                let user = qualified(Some(namespace), name);
                if serving.users.by_name(&user).is_none() {
                    warnings.push(format!(
                        "field `link[{i}]`: User/{user} does not exist (yet): \
                         the link matches no one until it does"
                    ));
                }
            }
        }
    }
    Answer {
        refused: None,
        warnings,
    }
}

/// The annotations that are part of an object's spec (an AccessPolicy's dry-run), as sent.
fn dry_run_annotations(annotations: &Option<Value>) -> [Option<&Value>; 2] {
    [DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION]
        .map(|key| annotations.as_ref().and_then(|a| a.get(key)))
}

/// The `spec` of an object of `kind`, or the field that kept it from parsing.
pub fn spec(kind: Kind, spec: Option<serde_json::Value>) -> Result<Spec, FieldError> {
    match spec {
        Some(spec) => parse_spec(kind.name(), spec),
        None => Err(FieldError::new("spec", "missing")),
    }
}

#[cfg(test)]
mod tests;
