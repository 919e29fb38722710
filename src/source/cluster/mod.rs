//! The cluster source: the four kinds from the API server, status and created Users
//! written back.
//!
//! - [`watch`]: one watcher per kind (and namespace) and one for the Secrets labelled
//!   `portcullis.dev/secret-consumer=true` per namespace (or one for all), feeding
//!   [`Change`]s to one index task; `objects` turns what the API sends into plain data;
//! - [`index`]: the pure index that those changes fold into, compiling each object on its
//!   own (last good version, conflicts, Secret references) into a snapshot and verdicts;
//! - [`judge`]: the judgement of one object, for its status and for the admission
//!   webhook, which reviews an object against the serving snapshot before it is stored;
//! - [`writer`]: the one task that writes to the API server (status, created Users);
//! - [`lease`]: which replica writes status;
//! - [`users`]: `--users on-demand`, where no User watch runs: Users read one at a time
//!   when a request needs them, and counted by a periodic metadata-only list.
//!
//! Created Users reach the writer from the cluster `UserStore` of [`crate::users`].
//!
//! Nothing here is on the request path (requests read the snapshot the index task swaps
//! in) but the reads of [`users::ClusterUsers`], with `--users on-demand`, on a cache miss.

pub mod by_name;
pub mod held;
pub mod index;
pub mod judge;
pub mod lease;
mod objects;
pub mod users;
pub mod watch;
pub mod writer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::mpsc;

use super::Loaded;
use crate::metrics::Metrics;
use crate::resources::Kind;
use crate::snapshot::Snapshot;
use crate::users::UserIndexPair;
use index::{ClusterIndex, Dirty, Rebuild};
use judge::{ObjectKey, Ready, Verdict};
use watch::Change;

/// How long the index task lets a burst of events gather before one rebuild.
const SETTLE: Duration = Duration::from_millis(10);

/// The longest any one call of the writer or the Lease waits for the API server (kube's
/// client's own retries of a `503` included): past it the call counts as failed. A
/// constant rather than a flag: a healthy API server answers these in milliseconds.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting to the API server (kube's default is 30 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest the client waits for the next bytes of any answer. A watch is a long read:
/// kube's watcher asks the server to end it after 290 s (`watcher::Config::timeout`) and
/// gives up itself 5 s later, so this is above both; it bounds the lists and the opening
/// of watches, which kube's watcher does not.
const READ_TIMEOUT: Duration = Duration::from_secs(330);

/// The kube client of `serve --kube`: in-cluster or `KUBECONFIG`, as
/// `kube::Client::try_default`, with connect and read timeouts.
pub async fn client() -> Result<Client, kube::Error> {
    Client::try_from(config().await?)
}

/// The configuration of [`client`].
pub async fn config() -> Result<kube::Config, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Ok(config)
}

/// The client that reads Users on demand: without kube's own retries of a `503` (which
/// take minutes), since a request waits for a read only until its deadline.
pub fn lookup_client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

/// Where the Users come from (`--users`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsersMode {
    /// Every User in memory, through a watch.
    #[default]
    Watch,
    /// Each User read when a request needs it; counted every `count_every`.
    OnDemand { count_every: Duration },
}

/// What to watch.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    /// A label selector on the four kinds.
    pub selector: Option<String>,
    /// The namespace whose resources apply to every request (design.md, "Tenancy").
    /// `None` (tests only): every resource is root.
    pub root_namespace: Option<String>,
    /// `--max-regex-bytes`, per namespace; `None`: the default.
    pub max_regex_bytes: Option<usize>,
    pub users: UsersMode,
}

impl Settings {
    /// The labels a created User must carry to be seen by a watch with this selector: its
    /// equality terms (`k=v`, `k==v`). Other terms (`!=`, `in`, existence) name no value.
    pub fn labels_for_created(&self) -> Vec<(String, String)> {
        let Some(selector) = &self.selector else {
            return Vec::new();
        };
        selector
            .split(',')
            .filter(|term| !term.contains("!="))
            .filter_map(|term| {
                let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    }
}

/// Kube mode as `serve` runs it: the watchers and index task, the writer task, the status
/// Lease.
pub struct Cluster {
    /// Each snapshot the index task builds.
    pub loaded: mpsc::Receiver<Loaded>,
    writer: mpsc::Sender<writer::Command>,
    user_labels: Vec<(String, String)>,
    on_demand: Option<OnDemandParts>,
}

/// `--users on-demand`: the counts the periodic list keeps, the selector a read goes
/// through, and where the verdicts on the Users read go.
struct OnDemandParts {
    counts: Arc<crate::users::UserCounts>,
    selector: Option<String>,
    reporter: users::Reporter,
}

impl Cluster {
    pub fn start(
        client: Client,
        settings: Settings,
        lease_namespace: Option<String>,
        lease_name: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (writer_tx, commands) = mpsc::channel(1024);
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
            lease::LeaseSettings {
                name: lease_name,
                ..lease::LeaseSettings::new(namespace, identity)
            },
            leader_tx,
        ));
        tokio::spawn(writer::run(
            client.clone(),
            commands,
            leader.clone(),
            metrics.clone(),
        ));
        let user_labels = settings.labels_for_created();
        let on_demand = match settings.users {
            UsersMode::Watch => None,
            UsersMode::OnDemand { count_every } => {
                let counts = Arc::new(crate::users::UserCounts::default());
                let reporter = users::Reporter::new(Some(writer_tx.clone()));
                let reader = users::ClusterUsers::new(
                    client.clone(),
                    settings.selector.clone(),
                    reporter.clone(),
                );
                tokio::spawn(users::count(
                    Arc::new(reader),
                    scopes(&settings),
                    counts.clone(),
                    writer_tx.clone(),
                    leader,
                    count_every,
                    metrics.clone(),
                ));
                Some(OnDemandParts {
                    counts,
                    selector: settings.selector.clone(),
                    reporter,
                })
            }
        };
        let loaded = index(client, settings, Some(writer_tx.clone()), metrics);
        Cluster {
            loaded,
            writer: writer_tx,
            user_labels,
            on_demand,
        }
    }

    /// `--users on-demand`: the reads of Users through `client` (see [`lookup_client`]),
    /// and the counts of the periodic list; `None` in watch mode.
    pub fn user_lookup(
        &self,
        client: Client,
    ) -> Option<(
        Arc<dyn crate::users::UserLookup>,
        Arc<crate::users::UserCounts>,
    )> {
        let parts = self.on_demand.as_ref()?;
        let lookup =
            users::ClusterUsers::new(client, parts.selector.clone(), parts.reporter.clone());
        Some((Arc::new(lookup), parts.counts.clone()))
    }

    /// Where created Users go: `User` objects, written by the writer task.
    pub fn user_store(&self) -> Arc<dyn crate::users::UserStore> {
        let store =
            crate::users::ClusterUserStore::new(self.writer.clone(), self.user_labels.clone());
        match self.on_demand {
            Some(_) => Arc::new(store.unwatched()),
            None => Arc::new(store),
        }
    }
}

/// Starts the watchers and the index task. Snapshots arrive on the returned channel, the
/// first once every watcher has listed its kind or the labelled Secrets; the verdicts go
/// to `writer`.
fn index(
    client: Client,
    settings: Settings,
    writer: Option<mpsc::Sender<writer::Command>>,
    metrics: Arc<Metrics>,
) -> mpsc::Receiver<Loaded> {
    let (changes_tx, changes) = mpsc::channel(1024);
    let scopes = scopes(&settings);
    let mut watchers = Vec::new();
    let mut waiting = HashSet::new();
    // `--users on-demand`: no User watch; the snapshot's Users stay empty.
    let kinds = Kind::ALL
        .into_iter()
        .filter(|&kind| kind != Kind::User || settings.users == UsersMode::Watch);
    for kind in kinds {
        for scope in &scopes {
            waiting.insert((kind, scope.clone()));
            watchers.push(AbortOnDrop(watch::kind(
                client.clone(),
                kind,
                scope.clone(),
                settings.selector.clone(),
                changes_tx.clone(),
                metrics.clone(),
            )));
        }
    }
    let mut secret_watchers = HashMap::new();
    for scope in &scopes {
        secret_watchers.insert(
            scope.clone(),
            AbortOnDrop(watch::secrets(
                client.clone(),
                scope.clone(),
                changes_tx.clone(),
                metrics.clone(),
            )),
        );
    }
    let (out, built) = mpsc::channel(4);
    let task = IndexTask {
        client,
        changes_tx,
        writer,
        out,
        waiting,
        index: ClusterIndex::with_root(settings.root_namespace.as_deref())
            .max_regex_bytes(settings.max_regex_bytes),
        every_namespace: settings.namespaces.is_empty(),
        secrets_waiting: scopes.iter().cloned().collect(),
        secret_watchers,
        told_unlabelled: HashSet::new(),
        metrics,
        config: None,
        users: UserIndexPair::default(),
        users_on_demand: settings.users != UsersMode::Watch,
        users_changed: BTreeSet::new(),
        users_relisted: false,
        refused: HashMap::new(),
        gone: Vec::new(),
        _watchers: watchers,
    };
    tokio::spawn(task.run(changes));
    built
}

/// One watch per namespace listed, or one for all.
fn scopes(settings: &Settings) -> Vec<Option<String>> {
    if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct IndexTask {
    client: Client,
    changes_tx: mpsc::Sender<Change>,
    writer: Option<mpsc::Sender<writer::Command>>,
    out: mpsc::Sender<Loaded>,
    /// Watchers that have not delivered their first list.
    waiting: HashSet<(Kind, Option<String>)>,
    index: ClusterIndex,
    /// Whether one watcher per kind sees every namespace (else one per watched namespace).
    every_namespace: bool,
    /// Secret watchers (by namespace, or `None` for all) that have not delivered a list:
    /// their first, or the one asked for to read a Secret newly referenced.
    secrets_waiting: HashSet<Option<String>>,
    secret_watchers: HashMap<Option<String>, AbortOnDrop>,
    /// References to a Secret that is not labelled (or not there) already logged as such.
    told_unlabelled: HashSet<(ObjectKey, String)>,
    metrics: Arc<Metrics>,
    /// The last build of everything but the Users, and of the Users.
    config: Option<Snapshot>,
    users: UserIndexPair<ObjectKey>,
    /// `--users on-demand`: no User is watched; snapshots say so.
    users_on_demand: bool,
    /// Users changed since the last build, to update in place; or all, after a relist.
    users_changed: BTreeSet<ObjectKey>,
    users_relisted: bool,
    /// Objects refused at the last build, to log each refusal once.
    refused: HashMap<ObjectKey, Ready>,
    /// Objects deleted that the writer has not yet been told of.
    gone: Vec<ObjectKey>,
    _watchers: Vec<AbortOnDrop>,
}

impl IndexTask {
    async fn run(mut self, mut changes: mpsc::Receiver<Change>) {
        let mut dirty = Dirty::default();
        while let Some(change) = changes.recv().await {
            dirty.merge(self.fold(change));
            tokio::time::sleep(SETTLE).await;
            while let Ok(change) = changes.try_recv() {
                dirty.merge(self.fold(change));
            }
            let first = self.config.is_none();
            // Only a configuration change can change which Secrets are referenced.
            if dirty.config {
                self.reread_secrets();
            }
            if !self.waiting.is_empty()
                || !self.secrets_waiting.is_empty()
                || (!first && !dirty.any())
            {
                continue;
            }
            let config_built = first || dirty.config;
            let built = tokio::task::block_in_place(|| self.build(dirty));
            dirty = Dirty::default();
            if config_built {
                self.tell_unlabelled();
            }
            if self.out.send(built).await.is_err() {
                return;
            }
        }
    }

    fn fold(&mut self, change: Change) -> Dirty {
        match change {
            Change::Listing { kind, namespace } => {
                // A User listed may shift another's standing: all are compiled again.
                self.users_relisted |= kind == Kind::User;
                self.index.begin_list(kind, namespace.as_deref());
                Dirty::default()
            }
            Change::Listed { kind, objects } => {
                self.users_relisted |= kind == Kind::User;
                self.index.list_part(objects)
            }
            Change::Relisted {
                kind,
                namespace,
                objects,
            } => {
                let first_list = self.waiting.remove(&(kind, namespace.clone()));
                self.users_relisted |= kind == Kind::User;
                let mut dirty = self.index.end_list(kind, namespace.as_deref(), objects);
                // The first list of a kind with no objects still makes a build.
                if first_list {
                    dirty.merge(match kind {
                        Kind::User => Dirty {
                            users: true,
                            ..Dirty::default()
                        },
                        _ => Dirty::config_of(namespace.as_deref()),
                    });
                }
                dirty
            }
            Change::Applied(object) => {
                let key = object.key.clone();
                let dirty = self.index.apply_held(*object);
                // Not a status write echoed back: that changes nothing to serve.
                if dirty.users {
                    self.users_changed.insert(key);
                }
                dirty
            }
            Change::Deleted(key) => {
                if key.kind == Kind::User {
                    self.users_changed.insert(key.clone());
                }
                self.index.delete(&key)
            }
            Change::Secret {
                namespace,
                name,
                data,
            } => self.index.set_secret(&namespace, &name, data),
            Change::SecretsRelisted { namespace, secrets } => {
                self.secrets_waiting.remove(&namespace);
                self.index.relist_secrets(namespace.as_deref(), secrets)
            }
        }
    }

    /// Drops the data of Secrets no longer referenced; where an object now references a
    /// labelled Secret whose data was dropped (or came before the reference), lists that
    /// namespace's labelled Secrets again, and holds the next build until it is read.
    fn reread_secrets(&mut self) {
        for namespace in self.index.retain_secrets() {
            let scope = (!self.every_namespace).then_some(namespace);
            if !self.secrets_waiting.insert(scope.clone()) {
                continue;
            }
            let watcher = watch::secrets(
                self.client.clone(),
                scope.clone(),
                self.changes_tx.clone(),
                self.metrics.clone(),
            );
            // The watcher it replaces is aborted: the new one lists afresh.
            self.secret_watchers.insert(scope, AbortOnDrop(watcher));
        }
    }

    /// Logs once, for each reference to a Secret that is not labelled, whether that
    /// Secret is missing or only unlabelled: status says `SecretNotFound` either way.
    fn tell_unlabelled(&mut self) {
        let unlabelled = self.index.unlabelled_secret_refs();
        self.told_unlabelled.retain(|r| unlabelled.contains(r));
        for (object, name) in unlabelled {
            if self.told_unlabelled.insert((object.clone(), name.clone())) {
                let namespace = object.namespace.clone();
                watch::tell_unlabelled(self.client.clone(), object, namespace, name);
            }
        }
    }

    fn build(&mut self, dirty: Dirty) -> Loaded {
        let users_only = !dirty.config && self.config.is_some();
        let mut verdicts = Vec::new();
        if dirty.config || self.config.is_none() {
            // A team's change compiles that team's scope; the root's, every scope.
            let rebuild = match &self.config {
                None => Rebuild::All,
                Some(_) => self.index.rebuild_for(&dirty),
            };
            let (compiler, v) = match (rebuild, self.config.take()) {
                (Rebuild::Teams(teams), Some(previous)) => {
                    self.index.compile_teams(Arc::new(previous), &teams)
                }
                _ => self.index.compile(&Kind::CONFIG),
            };
            self.metrics.resources_compiled(compiler.compiled());
            self.config = Some(compiler.into_snapshot());
            verdicts.extend(v);
        }
        if dirty.users || self.users.serving().is_none() {
            verdicts.extend(self.build_users());
        }
        let refused = self.log_refusals(&verdicts);
        let config = self.config.as_ref().expect("built above");
        let users = self.users.serving().cloned().expect("built above");
        let mut snapshot = config.with_users(users);
        snapshot.users_on_demand = self.users_on_demand;
        self.gone.extend(self.index.take_removed());
        if let Some(writer) = &self.writer {
            // Never waits: a full queue (1024 commands) drops this round's verdicts, and the
            // next rebuild resends them; the deletions are kept for the next round.
            let command = writer::Command::Verdicts {
                verdicts,
                gone: std::mem::take(&mut self.gone),
            };
            if let Err(mpsc::error::TrySendError::Full(writer::Command::Verdicts {
                verdicts,
                gone,
            })) = writer.try_send(command)
            {
                self.index.undelivered(&verdicts);
                self.gone = gone;
            }
        } else {
            self.gone.clear();
        }
        Loaded {
            compiled: Ok(snapshot),
            resources: self.index.len(),
            refused: Some(refused),
            took: None,
            users_only,
        }
    }

    /// The Users, changed in place where it can be done (see [`UserIndexPair`]); else
    /// compiled all over.
    fn build_users(&mut self) -> Vec<Verdict> {
        let changed = std::mem::take(&mut self.users_changed);
        let relisted = std::mem::take(&mut self.users_relisted);
        let next = if relisted {
            // Freed before all Users are compiled again.
            self.users.drop_spare();
            None
        } else {
            self.users.take_next(&changed)
        };
        let index = &mut self.index;
        let updated = next.and_then(|(mut next, catch_up)| {
            index.update_users(&mut next, &catch_up).map(|v| (next, v))
        });
        match updated {
            Some((users, verdicts)) => {
                self.users.serve_updated(users, changed);
                verdicts
            }
            None => {
                let (compiler, verdicts) = self.index.compile(&[Kind::User]);
                self.users.serve_rebuilt(compiler.into_users());
                verdicts
            }
        }
    }

    /// Logs each refusal once. Returns how many objects are refused.
    fn log_refusals(&mut self, verdicts: &[Verdict]) -> usize {
        let index = &self.index;
        self.refused.retain(|k, _| index.contains(k));
        for v in verdicts {
            if v.ready.status {
                self.refused.remove(&v.key);
                continue;
            }
            if self.refused.get(&v.key) != Some(&v.ready) {
                tracing::error!(
                    resource = %v.key,
                    generation = v.generation,
                    reason = v.ready.reason,
                    message = %v.ready.message,
                    previous_version_serves = v.previous_serves,
                    "resource refused"
                );
                self.refused.insert(v.key.clone(), v.ready.clone());
            }
        }
        self.refused.len()
    }
}

/// Reads the cluster's configuration once (for `explain --kube`).
pub async fn load_once(client: Client, settings: Settings) -> anyhow::Result<Arc<Snapshot>> {
    let mut loaded = index(client, settings, None, Arc::new(Metrics::new()));
    let first = tokio::time::timeout(Duration::from_secs(30), loaded.recv())
        .await
        .map_err(|_| anyhow::anyhow!("the cluster's resources were not listed within 30 s"))?
        .ok_or_else(|| anyhow::anyhow!("the watchers stopped"))?;
    let snapshot = first
        .compiled
        .map_err(|_| anyhow::anyhow!("the cluster's configuration did not compile"))?;
    Ok(Arc::new(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_users_carry_the_equality_terms_of_the_selector() {
        let settings = |selector: &str| Settings {
            selector: Some(selector.into()),
            ..Settings::default()
        };
        assert_eq!(
            settings("tier=auth, team==a,env!=dev,stage in (x),ready").labels_for_created(),
            [
                ("tier".to_string(), "auth".to_string()),
                ("team".into(), "a".into())
            ]
        );
        assert!(Settings::default().labels_for_created().is_empty());
    }
}
