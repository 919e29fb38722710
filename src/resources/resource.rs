//! One resource as a source read it, before compilation, and the error that points at it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::{AccessPolicySpec, IdentityProviderSpec, Kind, TokenIntrospectorSpec, UserSpec};

/// One resource as read from a source, before compilation.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    pub namespace: Option<String>,
    pub origin: Origin,
    pub spec: Spec,
    /// `metadata.labels` of a Kubernetes-form manifest read from a file (empty when it has
    /// none), for `validate` to check a User's `portcullis.dev/identifier`; `None` for
    /// the Aidbox form and for objects from the cluster.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    TokenIntrospector(TokenIntrospectorSpec),
    AccessPolicy(AccessPolicySpec),
    IdentityProvider(IdentityProviderSpec),
    User(UserSpec),
    /// A core `v1` Secret from a file: not a resource of portcullis, only what the
    /// Secret references of the Kubernetes form resolve to offline (`validate`, `explain`,
    /// `test`).
    Secret(SecretData),
}

impl Spec {
    /// One of the four kinds; `None` for a Secret.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Spec::TokenIntrospector(_) => Some(Kind::TokenIntrospector),
            Spec::AccessPolicy(_) => Some(Kind::AccessPolicy),
            Spec::IdentityProvider(_) => Some(Kind::IdentityProvider),
            Spec::User(_) => Some(Kind::User),
            Spec::Secret(_) => None,
        }
    }

    /// `TokenIntrospector`, ..., `Secret`: as messages name it.
    pub fn kind_name(&self) -> &'static str {
        self.kind().map_or("Secret", Kind::name)
    }
}

/// A Secret's keys and values (`data` decoded from base64, then `stringData` over it, as
/// the API server merges them). Debug output shows only the keys.
#[derive(Clone, Default, PartialEq)]
pub struct SecretData {
    pub values: std::collections::BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.values.keys().map(|k| (k, super::REDACTED)))
            .finish()
    }
}

impl Resource {
    /// `Kind/name` (`Kind/namespace/name` from the cluster), as errors and logs name it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.spec.kind_name(), self.key())
    }

    /// The name the snapshot knows it by: `namespace/name` from the cluster, where names
    /// are unique only per namespace; the plain name from a file.
    pub fn key(&self) -> String {
        super::qualified(self.scope(), &self.name)
    }

    /// The namespace that names and references resolve in: the object's own. Files form
    /// one flat configuration (no namespace) unless `--root-namespace` is given (see
    /// [`crate::snapshot::Compiler::scoped`]).
    pub fn scope(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

/// Where a resource was read, so that every error can point at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `document` counts from 1; `line` is where that document starts.
    File {
        // Shared by every resource of the file.
        path: Arc<Path>,
        document: usize,
        line: usize,
    },
    /// An object read from the Kubernetes API (its `Kind/namespace/name` is in the error).
    Cluster { generation: i64 },
}

impl Origin {
    /// The same place after `documents` documents and `lines` lines were added before it
    /// (removed, when negative). The whole file (document 0) stays where it is.
    pub fn shift(&mut self, documents: isize, lines: isize) {
        if let Origin::File { document, line, .. } = self {
            if *document > 0 {
                *document = document.saturating_add_signed(documents);
                *line = line.saturating_add_signed(lines);
            }
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                document,
                line,
            } => match (*document, *line) {
                (0, 0) => write!(f, "{}", path.display()),
                (0, line) => write!(f, "{}:{line}", path.display()),
                _ => write!(f, "{}:{line} (document {document})", path.display()),
            },
            Origin::Cluster { generation } => write!(f, "cluster (generation {generation})"),
        }
    }
}

/// A configuration error: where, which resource, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Origin,
    /// `Kind/name` when the document got that far.
    pub resource: Option<String>,
    /// Dotted path inside the resource's spec, e.g. `jwt.keys[0].alg`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(r) = &self.resource {
            write!(f, ": {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}
