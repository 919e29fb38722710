//! The one task that writes to the API server: status conditions from the index's
//! verdicts, and Users created on first sight. Nothing on the request path waits on it but
//! a User creation, which it serves before any status write.
//!
//! Every call it makes is cut at [`API_TIMEOUT`], so a stalled API server holds it at
//! most that long. An object whose status write fails (or times out) waits out its own
//! backoff ([`FIRST_RETRY`], doubling to [`LONGEST_RETRY`], with jitter) while the others
//! are written; what it remembers of an object goes when the object does.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::judge::{ready_condition, status_word, ObjectKey, Ready, Verdict};
use super::objects::api_resource;
use super::API_TIMEOUT;
use crate::metrics::Metrics;
use crate::resources::{self, ResourceStatus};
use crate::users::CreateUser;

/// The field manager of every write.
pub const MANAGER: &str = "portcullis";
/// After an object's first failed status write, before its next try (then doubling).
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest an object waits between two tries of its status write.
const LONGEST_RETRY: Duration = Duration::from_secs(60);

pub enum Command {
    /// The index's verdicts after a rebuild; only those that differ from the object's
    /// status are written. `gone`: objects deleted since the last round that reached the
    /// writer (applied before `verdicts`, so an object deleted and created again stays).
    Verdicts {
        verdicts: Vec<Verdict>,
        gone: Vec<ObjectKey>,
    },
    /// Create a User, or return the one that already has its name.
    CreateUser(CreateUser),
    /// `--users on-demand`: verdicts on Users read on demand (no watch brings them, nor
    /// their deletion). Written like the others, but not remembered once written (the
    /// next read sees the status), and at most [`MAX_UNWATCHED`] wait at once: past it a
    /// verdict is dropped, and offered again at the next read of its User.
    UserVerdicts(Vec<Verdict>),
}

/// Verdicts on Users read on demand waiting to be written, at most.
pub const MAX_UNWATCHED: usize = 4_096;

impl From<CreateUser> for Command {
    fn from(request: CreateUser) -> Self {
        Command::CreateUser(request)
    }
}

/// Runs until every sender is gone. Status is written only while `leader` says so (one
/// replica at a time); Users are created by any replica.
pub async fn run(
    client: Client,
    mut commands: mpsc::Receiver<Command>,
    mut leader: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    let mut status = StatusQueue::default();
    loop {
        let next = if *leader.borrow() {
            status.next_due()
        } else {
            None
        };
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None => return,
                Some(Command::CreateUser(CreateUser { user, reply, unwatched })) => {
                    // The request that asked has passed its deadline and gone on without
                    // a User: no call for nobody (the next request for it asks again).
                    if reply.is_closed() {
                        continue;
                    }
                    let created = create_user(&client, &user).await;
                    if let (Ok(created), true) = (&created, unwatched) {
                        // No watch brings it back: its status is written from here.
                        if let Some(verdict) = created_verdict(created) {
                            status.offer_unwatched(vec![verdict]);
                        }
                    }
                    let _ = reply.send(created);
                }
                Some(Command::Verdicts { verdicts, gone }) => {
                    status.forget(&gone);
                    status.offer(verdicts);
                }
                Some(Command::UserVerdicts(verdicts)) => status.offer_unwatched(verdicts),
            },
            changed = leader.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                if let Some(result) = status.write_next(&client).await {
                    metrics.status_write(result);
                }
            }
        }
    }
}

/// Verdicts waiting to be written, latest per object, and each object's backoff.
#[derive(Default)]
struct StatusQueue {
    /// The latest verdict of each object whose status must be written.
    pending: BTreeMap<ObjectKey, Verdict>,
    /// The keys of `pending` that may be written now (not waiting out a backoff).
    due: BTreeSet<ObjectKey>,
    /// Objects whose last status write failed: how many times in a row, and when the next
    /// try is.
    failing: HashMap<ObjectKey, Failing>,
    /// The next tries of `failing` not yet due, soonest first.
    retries: BTreeSet<(Instant, ObjectKey)>,
    /// What this replica last wrote (to which incarnation of the object, at which
    /// generation), so that a verdict is not written again before the watch echoes the
    /// write back.
    written: HashMap<ObjectKey, (u64, i64, Ready)>,
    /// The keys of `pending` that no watch follows (Users read on demand): not remembered
    /// in `written` once written, and bounded by [`MAX_UNWATCHED`].
    unwatched: HashSet<ObjectKey>,
}

#[derive(Clone, Copy, Debug)]
struct Failing {
    failures: u32,
    retry_at: Instant,
}

impl StatusQueue {
    fn offer(&mut self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            if needs_write(&v, self.written.get(&v.key)) {
                let waiting = self
                    .failing
                    .get(&v.key)
                    .is_some_and(|f| self.retries.contains(&(f.retry_at, v.key.clone())));
                if !waiting {
                    self.due.insert(v.key.clone());
                }
                self.pending.insert(v.key.clone(), v);
            } else {
                // Its status says the verdict (another replica wrote it, or the verdict
                // went back to what it says): nothing to retry.
                self.pending.remove(&v.key);
                self.due.remove(&v.key);
                self.stop_retrying(&v.key);
            }
        }
    }

    /// Verdicts on objects that no watch follows: written when their status says
    /// otherwise, never remembered after, at most [`MAX_UNWATCHED`] waiting.
    fn offer_unwatched(&mut self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            let known = self.unwatched.contains(&v.key);
            if !needs_write(&v, None) {
                if known {
                    self.forget(std::slice::from_ref(&v.key));
                }
                continue;
            }
            if !known && self.unwatched.len() >= MAX_UNWATCHED {
                continue;
            }
            self.unwatched.insert(v.key.clone());
            self.offer(vec![v]);
        }
    }

    /// Forgets objects that were deleted.
    fn forget(&mut self, gone: &[ObjectKey]) {
        for key in gone {
            self.pending.remove(key);
            self.due.remove(key);
            self.written.remove(key);
            self.unwatched.remove(key);
            self.stop_retrying(key);
        }
    }

    fn stop_retrying(&mut self, key: &ObjectKey) {
        if let Some(f) = self.failing.remove(key) {
            self.retries.remove(&(f.retry_at, key.clone()));
        }
    }

    /// When the next write may go: now, the soonest retry, or `None` with nothing pending.
    fn next_due(&self) -> Option<Instant> {
        if self.due.is_empty() {
            self.retries.first().map(|(at, _)| *at)
        } else {
            Some(Instant::now())
        }
    }

    /// Moves the retries whose time has come to `due`.
    fn promote(&mut self, now: Instant) {
        while let Some((at, _)) = self.retries.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.retries.pop_first().expect("looked at above");
            if self.pending.contains_key(&key) {
                self.due.insert(key);
            }
        }
    }

    /// Writes the next due verdict, if any, within [`API_TIMEOUT`]. Returns the result as
    /// the metric counts it: `ok`, `gone` (the object no longer exists), `error` or
    /// `timeout` (the object is tried again after its backoff; the others meanwhile).
    async fn write_next(&mut self, client: &Client) -> Option<&'static str> {
        self.promote(Instant::now());
        let key = self.due.pop_first()?;
        let verdict = self.pending.remove(&key)?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &api_resource(key.kind));
        let patch = status_patch(&verdict, &now());
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let call = api.patch_status(&key.name, &params, &patch);
        let (result, error) = match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(_)) => {
                self.stop_retrying(&key);
                if !self.unwatched.remove(&key) {
                    self.written
                        .insert(key, (verdict.uid, verdict.generation, verdict.ready));
                }
                return Some("ok");
            }
            // Deleted since: its status went with it.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                self.forget(std::slice::from_ref(&key));
                return Some("gone");
            }
            Ok(Err(e)) => ("error", e.to_string()),
            Err(_) => ("timeout", format!("no answer within {API_TIMEOUT:?}")),
        };
        let failures = self.failing.get(&key).map_or(0, |f| f.failures) + 1;
        let wait = backoff(&key, failures);
        tracing::warn!(
            resource = %key,
            error = %error,
            failures,
            retry_in = ?wait,
            "status write failed; retrying this object later, the others meanwhile"
        );
        self.stop_retrying(&key);
        let retry_at = Instant::now() + wait;
        self.retries.insert((retry_at, key.clone()));
        self.failing
            .insert(key.clone(), Failing { failures, retry_at });
        self.pending.entry(key).or_insert(verdict);
        Some(result)
    }
}

/// How long an object waits after its `failures`-th failed write in a row: [`FIRST_RETRY`]
/// doubling to [`LONGEST_RETRY`], less up to half at random, so that objects that failed
/// together do not all come back at once.
fn backoff(key: &ObjectKey, failures: u32) -> Duration {
    let full = FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(LONGEST_RETRY);
    // A per-process random hash of the object and the attempt: jitter without a crate.
    let random = std::collections::hash_map::RandomState::new().hash_one((key, failures));
    let fraction = (random % 1024) as f64 / 2048.0;
    full.mul_f64(1.0 - fraction)
}

/// Whether the object's status says something other than the verdict.
fn needs_write(v: &Verdict, written: Option<&(u64, i64, Ready)>) -> bool {
    if written == Some(&(v.uid, v.generation, v.ready.clone())) {
        return false;
    }
    let observed: Option<&ResourceStatus> = v.observed.as_ref();
    !observed.is_some_and(|status| v.said_by(status))
}

/// A merge patch of the status subresource: `observedGeneration` and the `Ready` condition,
/// whose `lastTransitionTime` moves only when its status does.
pub fn status_patch(v: &Verdict, now: &str) -> serde_json::Value {
    let status = status_word(v.ready.status);
    let since = v
        .observed
        .as_ref()
        .and_then(ready_condition)
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    json!({
        "status": {
            "observedGeneration": v.generation,
            "conditions": [{
                "type": "Ready",
                "status": status,
                "reason": v.ready.reason,
                "message": v.message(),
                "lastTransitionTime": since,
                "observedGeneration": v.generation,
            }]
        }
    })
}

/// The time as Kubernetes writes it (RFC 3339, whole seconds).
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

/// The verdict on a User as created (or adopted): judged as a User read on demand is.
fn created_verdict(user: &resources::User) -> Option<Verdict> {
    let object = serde_json::to_value(user).ok()?;
    let object: DynamicObject = serde_json::from_value(object).ok()?;
    Some(super::objects::judge(object).verdict(None))
}

/// Creates the User; on `409 AlreadyExists`, adopts the object that holds the name (the
/// caller checks that it is the user it meant).
async fn create_user(client: &Client, user: &resources::User) -> Result<resources::User, String> {
    let namespace = user.metadata.namespace.as_deref().unwrap_or("default");
    let name = user.metadata.name.as_deref().unwrap_or_default();
    let api: Api<resources::User> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    let timed_out =
        |what: &str| format!("{what} User {namespace}/{name}: no answer within {API_TIMEOUT:?}");
    match tokio::time::timeout(API_TIMEOUT, api.create(&params, user)).await {
        Ok(Ok(created)) => Ok(created),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
            match tokio::time::timeout(API_TIMEOUT, api.get(name)).await {
                Ok(read) => read
                    .map_err(|e| format!("User {namespace}/{name} exists but cannot be read: {e}")),
                Err(_) => Err(timed_out("reading")),
            }
        }
        Ok(Err(e)) => Err(format!("creating User {namespace}/{name}: {e}")),
        Err(_) => Err(timed_out("creating")),
    }
}

#[cfg(test)]
mod tests;
