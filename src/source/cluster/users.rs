//! Created Users as `User` custom resources, written by the writer task. The User watcher
//! brings them back into the index; until then the resolver's overlay serves them.

use futures::future::BoxFuture;

use tokio::sync::{mpsc, oneshot};

use super::writer::Command;
use crate::resources;
use crate::snapshot::qualified;
use crate::users::{manifest, KnownUser, StoreError, UserStore};

pub struct ClusterUserStore {
    writer: mpsc::Sender<Command>,
    /// Put on every created User, so that a `--selector` watch sees it.
    labels: Vec<(String, String)>,
}

impl ClusterUserStore {
    pub fn new(writer: mpsc::Sender<Command>, labels: Vec<(String, String)>) -> Self {
        ClusterUserStore { writer, labels }
    }
}

/// A User object as the index knows it: `namespace/name`.
pub fn known(user: &resources::User) -> KnownUser {
    let name = qualified(
        user.metadata.namespace.as_deref(),
        user.metadata.name.as_deref().unwrap_or_default(),
    );
    KnownUser::new(&name, &user.spec)
}

impl UserStore for ClusterUserStore {
    fn create(
        &self,
        user: KnownUser,
        provider: &str,
    ) -> BoxFuture<'_, Result<KnownUser, StoreError>> {
        let mut manifest = manifest(&user, provider);
        manifest
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .extend(self.labels.iter().cloned());
        Box::pin(async move {
            if manifest.metadata.namespace.is_none() {
                return Err(StoreError::InvalidName(user.name().to_string()));
            }
            let (reply, answer) = oneshot::channel();
            let command = Command::CreateUser {
                user: Box::new(manifest),
                reply,
            };
            self.writer
                .send(command)
                .await
                .map_err(|_| StoreError::Io("the writer task has stopped".into()))?;
            let created = answer
                .await
                .map_err(|_| StoreError::Io("the writer task dropped the request".into()))?
                .map_err(StoreError::Io)?;
            Ok(known(&created))
        })
    }

    /// The User watch keeps the index current, so a User that exists is found there; one
    /// that is not (outside the selector, or not yet delivered) is adopted on `409` at
    /// creation. Asking the API server here would only add a round trip to the request.
    fn get<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Option<KnownUser>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "the Kubernetes API (User custom resources)".into()
    }
}
