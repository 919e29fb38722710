//! Where resources come from. A source produces [`Resource`]s; the snapshot compiler
//! neither knows nor cares which source that was.

mod document;
pub mod files;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use crate::resources::FieldError;
use crate::resources::{AccessPolicySpec, IdentityProviderSpec, TokenIntrospectorSpec, UserSpec};

pub use document::{for_each_document, parse_documents};

/// One resource as read from a source, before compilation.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    pub namespace: Option<String>,
    pub origin: Origin,
    pub spec: Spec,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    TokenIntrospector(TokenIntrospectorSpec),
    AccessPolicy(AccessPolicySpec),
    IdentityProvider(IdentityProviderSpec),
    User(UserSpec),
}

impl Spec {
    pub fn kind(&self) -> &'static str {
        match self {
            Spec::TokenIntrospector(_) => "TokenIntrospector",
            Spec::AccessPolicy(_) => "AccessPolicy",
            Spec::IdentityProvider(_) => "IdentityProvider",
            Spec::User(_) => "User",
        }
    }
}

impl Resource {
    /// `Kind/name`, as errors and logs name it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.spec.kind(), self.name)
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
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                path,
                document,
                line,
            } => write!(f, "{}:{line} (document {document})", path.display()),
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
