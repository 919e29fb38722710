//! The one task that writes to the API server: status conditions from the index's
//! verdicts, and Users created on first sight. Nothing on the request path waits on it but
//! a User creation, which it serves before any status write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::judge::{ObjectKey, Ready, Verdict};
use super::objects::api_resource;
use crate::metrics::Metrics;
use crate::resources::{self, ResourceStatus};
use crate::users::CreateUser;

/// The field manager of every write.
pub const MANAGER: &str = "portcullis";
/// After a failed status write, before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub enum Command {
    /// The index's verdicts after a rebuild; only those that differ from the object's
    /// status are written.
    Verdicts(Vec<Verdict>),
    /// Create a User, or return the one that already has its name.
    CreateUser(CreateUser),
}

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
    let mut paused_until = tokio::time::Instant::now();
    loop {
        let writing = *leader.borrow() && !status.pending.is_empty();
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None => return,
                Some(Command::CreateUser(CreateUser { user, reply })) => {
                    let _ = reply.send(create_user(&client, &user).await);
                }
                Some(Command::Verdicts(verdicts)) => status.offer(verdicts),
            },
            changed = leader.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(paused_until), if writing => {
                match status.write_next(&client).await {
                    Ok(Some(written)) => metrics.status_write(written),
                    Ok(None) => {}
                    Err(e) => {
                        metrics.status_write("error");
                        tracing::warn!(error = %e, "status write failed; retrying");
                        paused_until = tokio::time::Instant::now() + RETRY_AFTER;
                    }
                }
            }
        }
    }
}

/// Verdicts waiting to be written, latest per object.
#[derive(Default)]
struct StatusQueue {
    pending: BTreeMap<ObjectKey, Verdict>,
    /// What this replica last wrote (to which incarnation of the object, at which
    /// generation), so that a verdict is not written again before the watch echoes the
    /// write back.
    written: HashMap<ObjectKey, (u64, i64, Ready)>,
}

impl StatusQueue {
    fn offer(&mut self, verdicts: Vec<Verdict>) {
        for v in verdicts {
            if needs_write(&v, self.written.get(&v.key)) {
                self.pending.insert(v.key.clone(), v);
            } else {
                self.pending.remove(&v.key);
            }
        }
    }

    /// Writes the next pending verdict, if any: `ok`, or `gone` when the object no longer
    /// exists.
    async fn write_next(&mut self, client: &Client) -> Result<Option<&'static str>, kube::Error> {
        let Some((key, verdict)) = self.pending.pop_first() else {
            return Ok(None);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &api_resource(key.kind));
        let patch = status_patch(&verdict, &now());
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.written
                    .insert(key, (verdict.uid, verdict.generation, verdict.ready));
                Ok(Some("ok"))
            }
            // Deleted since: its status went with it.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Some("gone")),
            Err(e) => {
                self.pending.insert(key, verdict);
                Err(e)
            }
        }
    }
}

/// Whether the object's status says something other than the verdict.
fn needs_write(v: &Verdict, written: Option<&(u64, i64, Ready)>) -> bool {
    if written == Some(&(v.uid, v.generation, v.ready.clone())) {
        return false;
    }
    let Some(status) = &v.observed else {
        return true;
    };
    // Another replica has seen a newer generation: its word stands.
    if status.observed_generation.is_some_and(|g| g > v.generation) {
        return false;
    }
    let same = status.observed_generation == Some(v.generation)
        && ready_condition(status).is_some_and(|c| {
            c.status == status_word(v.ready.status)
                && c.reason.as_deref() == Some(v.ready.reason)
                && c.message.as_deref() == Some(message(v).as_str())
        });
    !same
}

fn ready_condition(status: &ResourceStatus) -> Option<&resources::Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

fn status_word(ready: bool) -> &'static str {
    if ready {
        "True"
    } else {
        "False"
    }
}

fn message(v: &Verdict) -> String {
    if v.previous_serves {
        format!("{}; the previous version keeps serving", v.ready.message)
    } else {
        v.ready.message.clone()
    }
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
                "message": message(v),
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
    match api.create(&params, user).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .get(name)
            .await
            .map_err(|e| format!("User {namespace}/{name} exists but cannot be read: {e}")),
        Err(e) => Err(format!("creating User {namespace}/{name}: {e}")),
    }
}

#[cfg(test)]
mod tests;
