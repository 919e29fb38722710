//! Where configuration comes from, and the reload that serves it. The reload knows nothing
//! of files: any source that compiles a snapshot hands it to a [`Reloader`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::servers::Health;
use crate::decision::Authorizer;
use crate::metrics::Metrics;
use crate::snapshot::{Compiler, Snapshot, SnapshotStore};
use crate::source::{files, ConfigError};

/// How long a burst of file events must be quiet before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// File mode: the `--config` paths, then the directory of created Users.
pub struct FileSource {
    pub config: Vec<PathBuf>,
    /// `--users-dir`, canonical: read after the rest, and leniently, even when it sits
    /// inside a `--config` directory.
    pub users_dir: Option<PathBuf>,
}

/// A compiled configuration, or every error that kept it from compiling; how many
/// resources were read; and how long reading and compiling took, when that is known.
type Compiled = (Result<Snapshot, Vec<ConfigError>>, usize, Option<Duration>);

impl FileSource {
    /// Everything the files hold now, with room for `users` Users. Blocking: file reads
    /// and compilation.
    fn compile(&self, users: usize) -> Compiled {
        let started = std::time::Instant::now();
        let mut compiler = Compiler::with_user_capacity(users);
        let except = self.users_dir.as_deref();
        let mut count = files::load_each_except(&self.config, except, |r| compiler.push(r));
        if let Some(dir) = &self.users_dir {
            count += files::load_each(std::slice::from_ref(dir), |r| compiler.push_created_user(r));
        }
        (compiler.finish(), count, Some(started.elapsed()))
    }
}

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
    pub async fn apply(&self, (compiled, resources, took): Compiled) -> bool {
        let snapshot = match compiled {
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
        let took_ms = took.map(|t| t.as_millis() as u64);
        tracing::info!(summary = %snapshot.summary(), took_ms, "configuration loaded");
        self.metrics
            .config_loaded(true, resources, snapshot.warnings.len());
        self.metrics.user_files_skipped(snapshot.skipped.len());
        self.swap(snapshot);
        self.health.ready().await;
        true
    }

    /// Serves `snapshot` at once; Users created meanwhile and now in it leave the overlay.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshots.store(snapshot);
        if let Some(serving) = self.snapshots.load() {
            self.authorizer.users.index_changed(&serving.users);
        }
    }
}

/// Loads the files, then again after every burst of changes, off the request threads.
/// The watch lasts as long as the returned watcher.
pub async fn start(
    source: FileSource,
    reloader: Reloader,
) -> notify::Result<notify::RecommendedWatcher> {
    reloader.apply(source.compile(0)).await;
    // Not the users dir (unless it lies inside a --config directory): each created User
    // would otherwise reload everything. Created Users are served from the resolver's
    // overlay and read back at the next reload.
    let (watcher, mut changes) = files::watch(&source.config, RELOAD_SETTLE)?;
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            // As many Users as serve now: a reload seldom changes that much.
            let users = reloader.snapshots.load().map_or(0, |s| s.users.len());
            let compiled = tokio::task::block_in_place(|| source.compile(users));
            reloader.apply(compiled).await;
        }
    });
    Ok(watcher)
}

/// Kube mode: the watchers and index task, the writer task, the status Lease.
pub struct Cluster {
    built: tokio::sync::mpsc::Receiver<crate::cluster::Built>,
    writer: tokio::sync::mpsc::Sender<crate::cluster::writer::Command>,
    user_labels: Vec<(String, String)>,
}

impl Cluster {
    pub fn start(
        client: kube::Client,
        settings: crate::cluster::Settings,
        lease_namespace: Option<String>,
        metrics: Arc<Metrics>,
    ) -> Self {
        use crate::cluster::{lease, writer};
        let (writer_tx, commands) = tokio::sync::mpsc::channel(1024);
        let (leader_tx, leader) = tokio::sync::watch::channel(false);
        let namespace = lease_namespace.unwrap_or_else(|| client.default_namespace().to_string());
        let identity = format!(
            "{}-{}",
            std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "portcullis".into()),
            std::process::id()
        );
        tokio::spawn(lease::run(
            client.clone(),
            lease::LeaseSettings::new(namespace, identity),
            leader_tx,
        ));
        tokio::spawn(writer::run(
            client.clone(),
            commands,
            leader,
            metrics.clone(),
        ));
        let user_labels = settings.labels_for_created();
        let built =
            crate::cluster::start(client.clone(), settings, Some(writer_tx.clone()), metrics);
        Cluster {
            built,
            writer: writer_tx,
            user_labels,
        }
    }

    pub fn user_store(&self) -> Arc<dyn crate::users::UserStore> {
        Arc::new(crate::users::ClusterUserStore::new(
            self.writer.clone(),
            self.user_labels.clone(),
        ))
    }

    /// Serves each snapshot the index task builds.
    pub fn serve(mut self, reloader: Reloader) {
        tokio::spawn(async move {
            while let Some(built) = self.built.recv().await {
                reloader.metrics.resources_refused(built.refused);
                if built.users_only {
                    tracing::debug!(users = built.snapshot.users.len(), "users updated");
                    reloader.swap(built.snapshot);
                } else {
                    reloader
                        .apply((Ok(built.snapshot), built.objects, None))
                        .await;
                }
            }
        });
    }
}
