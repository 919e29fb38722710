//! The reload that serves what a source loaded. It knows nothing of files or the cluster:
//! each hands over a [`Loaded`] on a channel.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::health::Health;
use crate::decision::Authorizer;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::source::Loaded;

/// Serves what a source compiled, or keeps the last good configuration and says so (log,
/// `portcullis_config_last_load_ok`).
#[derive(Clone)]
pub struct Reloader {
    pub snapshots: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    pub authorizer: Arc<Authorizer>,
    pub health: Health,
}

impl Reloader {
    /// Returns whether a new snapshot is serving.
    pub async fn apply(&self, loaded: Loaded) -> bool {
        if let Some(refused) = loaded.refused {
            self.metrics.resources_refused(refused);
        }
        let snapshot = match loaded.compiled {
            Ok(snapshot) if loaded.users_only => {
                tracing::debug!(users = snapshot.users.len(), "users updated");
                self.swap(snapshot);
                return true;
            }
            Ok(snapshot) => snapshot,
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "configuration error");
                }
                let serving = if self.snapshots.is_ready() {
                    "the last good configuration keeps serving"
                } else {
                    "not ready: no good configuration yet"
                };
                tracing::error!(errors = errors.len(), "configuration rejected; {serving}");
                self.metrics.config_loaded(false, 0, 0);
                return false;
            }
        };
        for w in &snapshot.warnings {
            tracing::warn!(warning = %w, "configuration warning");
        }
        for s in &snapshot.skipped {
            tracing::error!(error = %s, "created User file skipped; fix or remove it");
        }
        let took_ms = loaded.took.map(|t| t.as_millis() as u64);
        tracing::info!(summary = %snapshot.summary(), took_ms, "configuration loaded");
        self.metrics
            .config_loaded(true, loaded.resources, snapshot.warnings.len());
        self.metrics.user_files_skipped(snapshot.skipped.len());
        self.swap(snapshot);
        self.health.ready().await;
        true
    }

    /// Serves `snapshot` at once; Users created meanwhile and now in it leave the overlay.
    fn swap(&self, snapshot: Snapshot) {
        self.snapshots.store(snapshot);
        if let Some(serving) = self.snapshots.load() {
            self.authorizer.users.index_changed(&serving.users);
        }
    }

    /// Serves each configuration the source loads from now on.
    pub fn follow(self, mut loaded: mpsc::Receiver<Loaded>) {
        tokio::spawn(async move {
            while let Some(next) = loaded.recv().await {
                self.apply(next).await;
            }
        });
    }
}
