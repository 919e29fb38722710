//! `--users on-demand`: the cluster's side. No User watch runs; instead
//!
//! - [`ClusterUsers`] reads one User when a request needs it ([`UserLookup`]): by name (a
//!   list with `metadata.name=<name>`, under `--selector`), or by identifier (a list with
//!   `portcullis.dev/identifier=<hash of system|value>`, under `--selector`). The API
//!   server applies the selector exactly as it does for a watch. Each object read is judged
//!   as the watch mode would (its spec parses, it is not too large, no older User holds its
//!   identifier), and its `Ready` condition, with a warning when its label is missing or
//!   wrong, goes to the writer;
//! - [`count`] runs every `--users-count-interval-secs`: a metadata-only list of the Users
//!   (pages of [`PAGE`]) counts them per namespace for the caps on creation, keeps their
//!   names (hashed: a read by name is skipped for a name no User has), and, on the
//!   replica that writes status, a list of the Users without the label judges them, so that
//!   hand-written Users that are never found by identifier still say why.
//!
//! Memory stays flat however many Users the cluster holds: a page at a time, counts, and
//! 4 bytes a User for the names.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject, ListParams, ObjectList};
use kube::Client;
use tokio::sync::{mpsc, watch};

use super::judge::{Ready, Verdict};
use super::objects::{api_resource, judge, Judged};
use super::{writer, API_TIMEOUT};
use crate::metrics::Metrics;
use crate::resources::Kind;
use crate::snapshot::Rejection;
use crate::users::{
    identifier_label, KnownUser, LookupResult, NameList, Refused, UserCounts, UserLookup,
    IDENTIFIER_LABEL,
};

/// Objects per page of a list of Users.
pub const PAGE: u32 = 500;
/// `--users-count-interval-secs` by default.
pub const DEFAULT_COUNT_INTERVAL: Duration = Duration::from_secs(60);

/// Users whose status warns (their label is missing or wrong) remembered at most, so that
/// a fix of the label is read again and the warning taken back.
const MAX_WARNED: usize = 10_000;

/// Reads Users from the API server, one at a time.
pub struct ClusterUsers {
    client: Client,
    /// `--selector`: a User outside it is not one of this deployment's.
    selector: Option<String>,
    reporter: Reporter,
}

/// Where the verdicts on the Users read go (status), and which of them warn.
#[derive(Clone, Default)]
pub struct Reporter {
    writer: Option<mpsc::Sender<writer::Command>>,
    /// `(namespace, name)` of the Users whose last verdict warns.
    warned: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Reporter {
    pub fn new(writer: Option<mpsc::Sender<writer::Command>>) -> Self {
        Reporter {
            writer,
            warned: Arc::default(),
        }
    }

    /// Hands the verdicts on the Users read to the writer, never waiting: a full queue
    /// drops them, and the next read of those Users offers them again.
    fn report(&self, verdicts: Vec<Verdict>) {
        if verdicts.is_empty() {
            return;
        }
        {
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            for v in &verdicts {
                let key = (v.key.namespace.clone(), v.key.name.clone());
                if v.ready.status && v.ready != Ready::accepted() {
                    if warned.len() < MAX_WARNED {
                        warned.insert(key);
                    }
                } else {
                    warned.remove(&key);
                }
            }
        }
        if let Some(writer) = &self.writer {
            let _ = writer.try_send(writer::Command::UserVerdicts(verdicts));
        }
    }

    /// The Users whose last verdict warns.
    fn warned(&self) -> HashSet<(String, String)> {
        self.warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A User that is gone, or no longer this deployment's.
    fn forget(&self, key: &(String, String)) {
        self.warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

impl ClusterUsers {
    pub fn new(client: Client, selector: Option<String>, reporter: Reporter) -> Self {
        ClusterUsers {
            client,
            selector,
            reporter,
        }
    }

    /// The Users of `namespace` that `labels` (and `--selector`) select, and `fields`.
    fn list(
        &self,
        namespace: &str,
        labels: Option<String>,
        fields: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<DynamicObject>, String>> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &api_resource(Kind::User));
        let mut params = ListParams::default();
        if let Some(selector) = joined(labels.as_deref(), self.selector.as_deref()) {
            params = params.labels(&selector);
        }
        if let Some(fields) = &fields {
            params = params.fields(fields);
        }
        let namespace = namespace.to_string();
        Box::pin(async move {
            match tokio::time::timeout(API_TIMEOUT, api.list(&params)).await {
                Ok(Ok(list)) => Ok(list.items),
                Ok(Err(e)) => Err(format!("listing Users of {namespace}: {e}")),
                Err(_) => Err(format!(
                    "listing Users of {namespace}: no answer within {API_TIMEOUT:?}"
                )),
            }
        })
    }
}

impl UserLookup for ClusterUsers {
    fn by_name(&self, namespace: &str, name: &str) -> BoxFuture<'static, LookupResult> {
        // A list by name (the `list` verb): the API server applies `--selector` itself, as
        // to the watch of the other kinds, and reads the one object by its key.
        let list = self.list(namespace, None, Some(format!("metadata.name={name}")));
        let reporter = self.reporter.clone();
        let name = name.to_string();
        Box::pin(async move {
            let judged: Vec<Judged> = list.await?.into_iter().map(judge).collect();
            let mut found = None;
            let mut verdicts = Vec::new();
            for j in judged {
                if j.object.key.name == name {
                    found = j.user.clone();
                }
                verdicts.push(j.verdict(None));
            }
            reporter.report(verdicts);
            Ok(found)
        })
    }

    fn by_identifier(
        &self,
        namespace: &str,
        system: &str,
        value: &str,
    ) -> BoxFuture<'static, LookupResult> {
        let label = format!("{IDENTIFIER_LABEL}={}", identifier_label(system, value));
        let list = self.list(namespace, Some(label), None);
        let reporter = self.reporter.clone();
        let (system, value) = (system.to_string(), value.to_string());
        Box::pin(async move {
            let judged: Vec<Judged> = list.await?.into_iter().map(judge).collect();
            let (found, verdicts) = pick(judged, &system, &value);
            reporter.report(verdicts);
            Ok(found)
        })
    }
}

/// `a,b` of two selectors, either of which may be missing.
fn joined(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a.filter(|s| !s.is_empty()), b.filter(|s| !s.is_empty())) {
        (Some(a), Some(b)) => Some(format!("{a},{b}")),
        (a, b) => a.or(b).map(str::to_string),
    }
}

/// Of the Users a list by the label of `{system, value}` returned, the one found: the
/// oldest (by `creationTimestamp`, then name) that serves and holds the identifier, as the
/// watch mode keeps the first holder. The younger holders are `Conflict`, as there.
pub fn pick(judged: Vec<Judged>, system: &str, value: &str) -> (Option<KnownUser>, Vec<Verdict>) {
    let holds = |j: &Judged| {
        j.user
            .as_ref()
            .is_some_and(|u| u.has_identifier(system, value))
    };
    let holder = judged
        .iter()
        .filter(|j| holds(j))
        .min_by(|a, b| {
            (a.object.created, &a.object.key.name).cmp(&(b.object.created, &b.object.key.name))
        })
        .map(|j| j.object.key.clone());
    let mut found = None;
    let mut verdicts = Vec::with_capacity(judged.len());
    for j in &judged {
        let conflict = match &holder {
            Some(key) if *key == j.object.key => {
                found = j.user.clone();
                None
            }
            Some(key) if holds(j) => {
                let refused = Refused::IdentifierHeld {
                    holder: crate::resources::qualified(Some(&key.namespace), &key.name),
                };
                Some(Ready::from_rejection(&Rejection::from(refused)))
            }
            _ => None,
        };
        verdicts.push(j.verdict(conflict));
    }
    (found, verdicts)
}

/// Counts the Users every `every` for the caps on creation (a metadata-only list, page by
/// page, per namespace of `scopes`, `None` for all), and, while `leader` says this replica
/// writes status (and at once when it becomes the one), judges those without the
/// identifier label (whose status says they are found by name only). Runs until the
/// writer is gone.
pub async fn count(
    reader: Arc<ClusterUsers>,
    scopes: Vec<Option<String>>,
    counts: Arc<UserCounts>,
    writer: mpsc::Sender<writer::Command>,
    mut leader: watch::Receiver<bool>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    loop {
        count_all(&reader, &scopes, &counts, &metrics).await;
        if *leader.borrow_and_update() {
            sweep(&reader, &scopes).await;
        }
        let next = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => break,
                changed = leader.changed() => {
                    if changed.is_err() || writer.is_closed() {
                        return;
                    }
                    // Just became the replica that writes status: say what it would
                    // have said, without waiting for the next count.
                    if *leader.borrow_and_update() {
                        sweep(&reader, &scopes).await;
                    }
                }
            }
        }
        if writer.is_closed() {
            return;
        }
    }
}

/// Counts the Users of every scope, from their metadata alone, into `counts`; a failure
/// keeps the last count.
async fn count_all(
    reader: &ClusterUsers,
    scopes: &[Option<String>],
    counts: &UserCounts,
    metrics: &Metrics,
) {
    let mut per_namespace = HashMap::new();
    let mut names = counts.names().listing();
    for scope in scopes {
        let counted = count_scope(
            &reader.client,
            scope.as_deref(),
            reader.selector.as_deref(),
            &mut per_namespace,
            &mut names,
        )
        .await;
        if let Err(e) = counted {
            tracing::warn!(error = %e,
                "counting the Users failed; the caps on creation keep the last count, \
                 and Users are read by name again until a count succeeds");
            counts.names().unknown();
            return;
        }
    }
    let total: usize = per_namespace.values().sum();
    tracing::debug!(
        users = total,
        namespaces = per_namespace.len(),
        "Users counted"
    );
    counts.counted(per_namespace);
    counts.names().listed(names);
    metrics.users_counted(total);
}

/// Judges the Users without the identifier label (their status says they are found by
/// name only), and reads again those warned of before that are labelled (or gone) since,
/// so that their status takes the warning back.
async fn sweep(reader: &ClusterUsers, scopes: &[Option<String>]) {
    let reporter = reader.reporter.clone();
    let mut now_unlabelled = HashSet::new();
    for scope in scopes {
        let without = format!("!{IDENTIFIER_LABEL}");
        let labels = joined(Some(&without), reader.selector.as_deref());
        let result = each_page(
            &reader.client,
            scope.as_deref(),
            labels.as_deref(),
            false,
            |page| {
                let verdicts: Vec<Verdict> = page
                    .into_iter()
                    .map(|o| {
                        let judged = judge(o);
                        let key = &judged.object.key;
                        now_unlabelled.insert((key.namespace.clone(), key.name.clone()));
                        judged.verdict(None)
                    })
                    .collect();
                reporter.report(verdicts);
            },
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "listing the Users without the identifier label failed");
            return;
        }
    }
    for key in reporter.warned().difference(&now_unlabelled) {
        // Its verdict goes to the writer as the read judges it.
        if let Ok(None) = reader.by_name(&key.0, &key.1).await {
            reporter.forget(key);
        }
    }
}

/// Adds the Users of one scope to `per_namespace` and `names`, from their metadata alone.
async fn count_scope(
    client: &Client,
    scope: Option<&str>,
    selector: Option<&str>,
    per_namespace: &mut HashMap<String, usize>,
    names: &mut NameList,
) -> Result<(), String> {
    each_page(client, scope, selector, true, |page| {
        for o in page {
            let namespace = o.metadata.namespace.unwrap_or_default();
            names.add(&namespace, o.metadata.name.as_deref().unwrap_or_default());
            *per_namespace.entry(namespace).or_default() += 1;
        }
    })
    .await
}

/// Lists the Users of `scope` that `labels` selects, [`PAGE`] at a time, handing each page
/// to `each` (with `metadata_only`, their metadata alone); every call cut at
/// [`API_TIMEOUT`].
async fn each_page(
    client: &Client,
    scope: Option<&str>,
    labels: Option<&str>,
    metadata_only: bool,
    mut each: impl FnMut(Vec<DynamicObject>),
) -> Result<(), String> {
    let resource = api_resource(Kind::User);
    let api: Api<DynamicObject> = match scope {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mut params = ListParams::default().limit(PAGE);
    if let Some(labels) = labels {
        params = params.labels(labels);
    }
    let mut token: Option<String> = None;
    loop {
        let page = match &token {
            Some(t) => params.clone().continue_token(t),
            None => params.clone(),
        };
        let listed: Result<ObjectList<DynamicObject>, kube::Error> = if metadata_only {
            let call = api.list_metadata(&page);
            match tokio::time::timeout(API_TIMEOUT, call).await {
                Ok(list) => list.map(|l| ObjectList {
                    types: l.types,
                    metadata: l.metadata,
                    items: l
                        .items
                        .into_iter()
                        .map(|m| DynamicObject {
                            types: None,
                            metadata: m.metadata,
                            data: serde_json::Value::Null,
                        })
                        .collect(),
                }),
                Err(_) => return Err(format!("no answer within {API_TIMEOUT:?}")),
            }
        } else {
            match tokio::time::timeout(API_TIMEOUT, api.list(&page)).await {
                Ok(list) => list,
                Err(_) => return Err(format!("no answer within {API_TIMEOUT:?}")),
            }
        };
        let list = listed.map_err(|e| e.to_string())?;
        token = list.metadata.continue_.filter(|c| !c.is_empty());
        each(list.items);
        if token.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
