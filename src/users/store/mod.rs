//! Where created Users are kept, behind one trait: [`FileUserStore`] (`--users-dir`) and
//! [`ClusterUserStore`] (`User` objects, written by the cluster's writer task).
//!
//! A store only persists; Users become visible through the snapshot (files read back at
//! the next reload, or the cluster's User watch) and, until then, the resolver's overlay
//! of created Users.

mod cluster;
mod file;

use futures::future::BoxFuture;

use super::naming::{identifier_label, IDENTIFIER_LABEL};
use super::KnownUser;
use crate::resources::{self, object_name};

pub use cluster::{ClusterUserStore, CreateUser};
pub use file::FileUserStore;

/// Label put on every User that portcullis created, so that operators can list them.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "portcullis");
/// Label naming the IdentityProvider a created User came from.
pub const PROVIDER_LABEL: &str = "portcullis.dev/identity-provider";

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Io(String),
    /// A stored object by that name is unreadable: never overwritten, never trusted.
    #[error("stored User {name:?} is unreadable: {message}")]
    Corrupt { name: String, message: String },
    #[error("{0} is not a valid User name")]
    InvalidName(String),
}

/// Persists created Users.
///
/// Futures are boxed so that the store can sit behind `Arc<dyn UserStore>`.
pub trait UserStore: Send + Sync + 'static {
    /// Create the User. When an object by that name already exists, that object is
    /// returned unchanged: replicas creating the same user converge on one object. The
    /// caller checks that the object returned is the one it meant.
    /// `provider` is the IdentityProvider the User was created for, for a label.
    fn create(
        &self,
        user: KnownUser,
        provider: &str,
    ) -> BoxFuture<'_, Result<KnownUser, StoreError>>;

    /// Where Users go, for logs.
    fn describe(&self) -> String;

    /// The file store, whose Users reach the index only at the next reload: creation reads
    /// it by name first, so that a User another replica sharing the directory wrote (or
    /// one written before a restart) is taken without a userinfo call. The cluster store
    /// has nothing to read: its User watch keeps the index current, and creation adopts
    /// an object that exists (`409`).
    fn files(&self) -> Option<&FileUserStore> {
        None
    }
}

/// A created User as a `User` object, labelled with its manager and the IdentityProvider
/// it came from, so that operators can list them, and with the hash of its identifier
/// ([`IDENTIFIER_LABEL`]), so that `--users on-demand` finds it by identifier.
pub fn manifest(user: &KnownUser, provider: &str) -> resources::User {
    let mut object = user.to_manifest();
    let mut labels: std::collections::BTreeMap<String, String> = [
        (MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1),
        (PROVIDER_LABEL, object_name(provider)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some((system, value)) = user.identifiers().next() {
        labels.insert(
            IDENTIFIER_LABEL.to_string(),
            identifier_label(system, value),
        );
    }
    object.metadata.labels = Some(labels);
    object
}
