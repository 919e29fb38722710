//! The four kinds of resource, as Kubernetes custom resources (`portcullis.dev/v1alpha1`).
//!
//! Field names inside `spec` are Aidbox's own, so a body copied from Aidbox's documentation
//! drops in unchanged. These types are only the wire shape: meaning is given by
//! the snapshot compiler.

mod access_policy;
pub mod checks;
mod crd;
mod document;
mod identity_provider;
mod kinds;
mod reference;
mod resource;
mod status;
mod text;
mod token_introspector;
mod user;
mod weight;

pub use access_policy::{read_annotations, AccessPolicy, AccessPolicySpec, PolicyEngine};
pub use access_policy::{DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION};
pub use crd::crds;
pub use document::{
    for_each_document, parse_documents, parse_spec, parse_text, spec_too_heavy, Parsed,
};
pub use identity_provider::{IdentityProvider, IdentityProviderSpec, UserinfoSource};
pub use kinds::{Kind, API_VERSION, GROUP, KIND_NAMES, VERSION};
pub use reference::{Link, Reference};
pub use resource::{ConfigError, Origin, Resource, SecretData, Spec};
pub use status::{Condition, ResourceStatus};
pub use text::{field_line, read_text, utf8, ReadError, MAX_FILE_BYTES};
pub use token_introspector::{
    ClaimToHeader, IntrospectionEndpoint, IntrospectorType, JwtKey, JwtSettings, KeyAlgorithm,
    KeyFormat, KeyType, SecretKeyRef, SecretProblem, TokenIntrospector, TokenIntrospectorSpec,
};
pub use user::{Identifier, User, UserSpec};
pub use weight::{json_weight, text_weight, weigh_text, weighs_at_most};

/// An error inside one resource, before the compiler knows where the resource came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What stands in for a secret wherever one would otherwise be shown: credential headers
/// and an `access_token` parameter in the request context, `explain` traces, configuration
/// errors and Debug output. One marker, so that one search finds every redaction.
pub const REDACTED: &str = "[redacted]";

/// Request headers that carry credentials. Policies see them only as [`REDACTED`] (after
/// the scheme word, for the two `Authorization` headers).
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The name the snapshot knows a resource by: `namespace/name` for one from the cluster,
/// where names are unique only per namespace; the plain name for one from a file.
pub fn qualified(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// A Kubernetes namespace name: an RFC 1123 label.
pub fn is_namespace_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The namespace part of a [`qualified`] name (Kubernetes names never hold a `/`).
pub fn namespace_of(qualified: &str) -> Option<&str> {
    qualified.rsplit_once('/').map(|(ns, _)| ns)
}

/// The object's own name in a [`qualified`] name: `metadata.name`.
pub fn object_name(qualified: &str) -> &str {
    qualified
        .rsplit_once('/')
        .map_or(qualified, |(_, name)| name)
}

/// Schema for a field that holds free JSON (matcho patterns, JSON Schemas, userinfo data):
/// the API server must keep it as written instead of pruning it.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Like [`any_json`], for a list of free JSON objects (`and`/`or` sub-policies).
pub(crate) fn any_json_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}
