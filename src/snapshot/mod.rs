//! The compiled, immutable configuration that the request path reads.
//!
//! Sources produce [`Resource`]s; [`compile`] turns a complete set of them into a
//! [`Snapshot`], or into every error found ([`Compiler`] does the same one resource at a
//! time, as a source parses them). [`SnapshotStore`] swaps snapshots atomically,
//! so a request sees one whole configuration, never half of an update.

mod compile;
mod policies;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::resources::{namespace_of, object_name, qualified};
pub use compile::{compile, Compiler, RejectReason, Rejection};
pub use policies::{Client, CompiledPolicy, PolicySet};
pub use store::SnapshotStore;

use crate::resources::ConfigError;
use crate::resources::IdentityProviderSpec;
use crate::token::TrustStore;
use crate::users::UserIndex;

/// Each part sits behind its own `Arc`, so that a change to the Users alone (a User event
/// from the cluster) makes a new snapshot without recompiling the rest.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub trust: Arc<TrustStore>,
    pub policies: Arc<PolicySet>,
    pub identity_providers: Arc<HashMap<String, Arc<CompiledProvider>>>,
    pub users: Arc<UserIndex>,
    /// What compiled but is likely a mistake (a policy that allows every request): served,
    /// and reported by `validate`, the log and a metric.
    pub warnings: Vec<ConfigError>,
    /// Files of created Users that were passed over (see [`Compiler::push_created_user`]).
    pub skipped: Vec<ConfigError>,
}

/// An IdentityProvider as the snapshot holds it: its name and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledProvider {
    pub name: String,
    pub spec: IdentityProviderSpec,
}

impl CompiledProvider {
    pub fn is_active(&self) -> bool {
        self.spec.active.unwrap_or(true)
    }
}

impl Snapshot {
    /// The same configuration with other Users.
    pub fn with_users(&self, users: Arc<UserIndex>) -> Snapshot {
        Snapshot {
            users,
            ..self.clone()
        }
    }

    /// Counts by kind, for logs and metrics.
    pub fn summary(&self) -> String {
        format!(
            "{} token introspectors, {} access policies, {} identity providers, {} users",
            self.trust.len(),
            self.policies.len(),
            self.identity_providers.len(),
            self.users.len()
        )
    }
}
