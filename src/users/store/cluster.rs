//! [`ClusterUserStore`]: created Users as `User` objects. The store knows neither kube nor
//! the cluster module: it hands each object to the cluster's writer task as a
//! [`CreateUser`] request on a channel, and awaits the answer. The User watch brings the
//! object back into the index; until then the resolver's overlay serves it.

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{manifest, StoreError, UserStore};
use crate::resources;
use crate::users::KnownUser;

/// Create this User, or answer with the object that already holds its name.
#[derive(Debug)]
pub struct CreateUser {
    pub user: Box<resources::User>,
    /// The object as stored, or why it could not be.
    pub reply: oneshot::Sender<Result<resources::User, String>>,
    /// Whether the writer also writes its status: no User watch will bring it back
    /// (`--users on-demand`).
    pub unwatched: bool,
}

/// `C` is the writer task's command, made from a [`CreateUser`].
pub struct ClusterUserStore<C> {
    writer: mpsc::Sender<C>,
    /// Put on every created User, so that a `--selector` watch sees it.
    labels: Vec<(String, String)>,
    /// See [`CreateUser::unwatched`].
    unwatched: bool,
}

impl<C> ClusterUserStore<C> {
    pub fn new(writer: mpsc::Sender<C>, labels: Vec<(String, String)>) -> Self {
        ClusterUserStore {
            writer,
            labels,
            unwatched: false,
        }
    }

    /// `--users on-demand`: no watch brings a created User back; the writer writes its
    /// status when it creates it.
    pub fn unwatched(mut self) -> Self {
        self.unwatched = true;
        self
    }
}

impl<C: From<CreateUser> + Send + 'static> UserStore for ClusterUserStore<C> {
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
            let request = CreateUser {
                user: Box::new(manifest),
                reply,
                unwatched: self.unwatched,
            };
            self.writer
                .send(C::from(request))
                .await
                .map_err(|_| StoreError::Io("the writer task has stopped".into()))?;
            let created = answer
                .await
                .map_err(|_| StoreError::Io("the writer task dropped the request".into()))?
                .map_err(StoreError::Io)?;
            Ok(KnownUser::from_manifest(&created))
        })
    }

    fn describe(&self) -> String {
        "the Kubernetes API (User custom resources)".into()
    }
}
