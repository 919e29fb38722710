//! Watchers: one per kind and namespace, and one per referenced Secret, each turning
//! kube-rs's watch events into [`Change`]s for the index task.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;

use super::judge::{Object, ObjectKey, SecretData};
use super::objects::{api_resource, key, object};
use crate::metrics::Metrics;
use crate::resources::Kind;

pub enum Change {
    /// Every object of a kind in one namespace (or all): a first list, or a relist after
    /// the watch could not resume (`410 Gone`).
    Relisted {
        kind: Kind,
        namespace: Option<String>,
        objects: Vec<Object>,
    },
    Applied(Box<Object>),
    Deleted(ObjectKey),
    Secret {
        namespace: String,
        name: String,
        data: Option<SecretData>,
    },
}

/// Quick to retry, so that a short API server outage ends in seconds; doubling up to 5 s,
/// so that a long one is not hammered.
struct Retry {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

fn backoff() -> Retry {
    Retry { next: FIRST_RETRY }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (now * 2).min(LONGEST_RETRY);
        Some(now)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

pub fn kind(
    client: Client,
    kind: Kind,
    namespace: Option<String>,
    selector: Option<String>,
    changes: mpsc::Sender<Change>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let resource = api_resource(kind);
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut config = watcher::Config::default();
    if let Some(selector) = &selector {
        config = config.labels(selector);
    }
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).backoff(backoff()).boxed();
        let mut listed = Vec::new();
        while let Some(event) = events.next().await {
            let change = match event {
                Ok(Event::Init) => {
                    listed.clear();
                    continue;
                }
                Ok(Event::InitApply(o)) => {
                    listed.push(object(kind, o));
                    continue;
                }
                Ok(Event::InitDone) => Change::Relisted {
                    kind,
                    namespace: namespace.clone(),
                    objects: std::mem::take(&mut listed),
                },
                Ok(Event::Apply(o)) => Change::Applied(Box::new(object(kind, o))),
                Ok(Event::Delete(o)) => Change::Deleted(key(kind, &o)),
                Err(e) => {
                    metrics.watch_error(kind.name());
                    tracing::warn!(kind = kind.name(), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    })
}

/// Watches the one Secret `namespace/name`: only referenced Secrets are read.
pub fn secret(
    client: Client,
    namespace: String,
    name: String,
    changes: mpsc::Sender<Change>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).backoff(backoff()).boxed();
        let mut listed = None;
        while let Some(event) = events.next().await {
            let data = match event {
                Ok(Event::Init) => {
                    listed = None;
                    continue;
                }
                Ok(Event::InitApply(s)) => {
                    listed = Some(data(s));
                    continue;
                }
                Ok(Event::InitDone) => listed.take(),
                Ok(Event::Apply(s)) => Some(data(s)),
                Ok(Event::Delete(_)) => None,
                Err(e) => {
                    metrics.watch_error("Secret");
                    tracing::warn!(secret = %format!("{namespace}/{name}"), error = %e,
                        "watch failed; retrying");
                    continue;
                }
            };
            let change = Change::Secret {
                namespace: namespace.clone(),
                name: name.clone(),
                data,
            };
            if changes.send(change).await.is_err() {
                return;
            }
        }
    })
}

fn data(secret: Secret) -> SecretData {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}
