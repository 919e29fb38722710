//! Watchers: one per kind and namespace, and one for the labelled Secrets per namespace
//! (or one for all), each turning kube-rs's watch events into [`Change`]s for the index
//! task.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;

use super::held::{HeldObject, Listed, Statuses};
use super::judge::{ObjectKey, SecretData};
use super::objects::{api_resource, watched, watched_key, Watched};
use crate::metrics::Metrics;
use crate::resources::Kind;

pub enum Change {
    /// Every object of a kind in one namespace (or all): a first list, or a relist after
    /// the watch could not resume (`410 Gone`).
    Relisted {
        kind: Kind,
        namespace: Option<String>,
        objects: Listed<HeldObject>,
    },
    Applied(Box<HeldObject>),
    Deleted(ObjectKey),
    /// A labelled Secret added or changed (`Some`), or gone: deleted or unlabelled.
    Secret {
        namespace: String,
        name: String,
        data: Option<SecretData>,
    },
    /// Every labelled Secret of one namespace (or all): a first list, or a relist.
    SecretsRelisted {
        namespace: Option<String>,
        secrets: Vec<(String, String, SecretData)>,
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
    let api: Api<Watched> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut config = watcher::Config::default();
    if let Some(selector) = &selector {
        config = config.labels(selector);
    }
    let events = watcher::watcher(api, config).backoff(backoff()).boxed();
    let listed_namespace = namespace.clone();
    // Each object is cut down to what the index keeps as it arrives, its status shared
    // with the objects of this watch that carry the same.
    let statuses = Arc::new(Statuses::default());
    let shared = statuses.clone();
    tokio::spawn(forward(
        events,
        changes,
        Fold {
            item: move |o| HeldObject::new(watched(kind, o), &shared),
            relisted: move |objects| Change::Relisted {
                kind,
                namespace: listed_namespace.clone(),
                objects,
            },
            applied: move |o| {
                Change::Applied(Box::new(HeldObject::new(watched(kind, o), &statuses)))
            },
            deleted: move |o: Watched| Change::Deleted(watched_key(kind, &o)),
            failed: move |e: &watcher::Error| {
                metrics.watch_error(kind.name());
                tracing::warn!(kind = kind.name(), error = %e, "watch failed; retrying");
            },
        },
    ))
}

/// The label a Secret must carry to be read: its owner's consent that portcullis use it.
pub const SECRET_CONSUMER_LABEL: &str = "portcullis.dev/secret-consumer";

/// Watches the Secrets of one namespace (or of all) that carry
/// `portcullis.dev/secret-consumer=true`. No other Secret is ever read: one without the
/// label reaches neither portcullis's memory nor any URL, whoever references it.
pub fn secrets(
    client: Client,
    namespace: Option<String>,
    changes: mpsc::Sender<Change>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Secret> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = watcher::Config::default().labels(&format!("{SECRET_CONSUMER_LABEL}=true"));
    let events = watcher::watcher(api, config).backoff(backoff()).boxed();
    let listed_namespace = namespace.clone();
    tokio::spawn(forward(
        events,
        changes,
        Fold {
            item: |s: Secret| {
                let (namespace, name) = secret_key(&s);
                (namespace, name, data(s))
            },
            relisted: move |secrets: Listed<_>| Change::SecretsRelisted {
                namespace: listed_namespace.clone(),
                secrets: secrets.into_iter().collect(),
            },
            applied: |s: Secret| {
                let (namespace, name) = secret_key(&s);
                Change::Secret {
                    namespace,
                    name,
                    data: Some(data(s)),
                }
            },
            // Deleted, or no longer labelled: the watch's selector lets it go.
            deleted: |s: Secret| {
                let (namespace, name) = secret_key(&s);
                Change::Secret {
                    namespace,
                    name,
                    data: None,
                }
            },
            failed: move |e: &watcher::Error| {
                metrics.watch_error("Secret");
                tracing::warn!(namespace = namespace.as_deref().unwrap_or("*"), error = %e,
                    "Secret watch failed; retrying");
            },
        },
    ))
}

/// How one watcher's events become [`Change`]s.
struct Fold<I, R, A, D, F> {
    /// An object of the first list (or of a relist), as the list's change holds it.
    item: I,
    relisted: R,
    applied: A,
    deleted: D,
    failed: F,
}

/// Sends one change for a whole list (kube-rs hands it over object by object), then one
/// per event, until the index task stops listening.
async fn forward<K, T, I, R, A, D, F>(
    mut events: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
    changes: mpsc::Sender<Change>,
    mut fold: Fold<I, R, A, D, F>,
) where
    I: FnMut(K) -> T,
    R: FnMut(Listed<T>) -> Change,
    A: FnMut(K) -> Change,
    D: FnMut(K) -> Change,
    F: FnMut(&watcher::Error),
{
    let mut listed = Listed::default();
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(Event::Init) => {
                listed = Listed::default();
                continue;
            }
            Ok(Event::InitApply(o)) => {
                listed.push((fold.item)(o));
                continue;
            }
            Ok(Event::InitDone) => (fold.relisted)(std::mem::take(&mut listed)),
            Ok(Event::Apply(o)) => (fold.applied)(o),
            Ok(Event::Delete(o)) => (fold.deleted)(o),
            Err(e) => {
                (fold.failed)(&e);
                continue;
            }
        };
        if changes.send(change).await.is_err() {
            return;
        }
    }
}

fn secret_key(secret: &Secret) -> (String, String) {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

/// Logs whether the Secret `namespace/name` that `object` references, which is not among
/// the labelled ones, is missing or there without the label. Status says `SecretNotFound`
/// either way; only this log tells them apart. It asks for the Secret's metadata alone
/// (a list with a name field selector: the `list` verb, no `get`), so its data is never
/// read.
pub fn tell_unlabelled(client: Client, object: ObjectKey, namespace: String, name: String) {
    tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client, &namespace);
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        let secret = format!("{namespace}/{name}");
        let asked = tokio::time::timeout(super::API_TIMEOUT, api.list_metadata(&params)).await;
        let asked = asked.unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {:?}", super::API_TIMEOUT).into(),
            ))
        });
        match asked {
            Ok(list) if list.items.is_empty() => tracing::warn!(
                resource = %object,
                secret = %secret,
                "the referenced Secret does not exist"
            ),
            Ok(_) => tracing::warn!(
                resource = %object,
                secret = %secret,
                label = %format!("{SECRET_CONSUMER_LABEL}=true"),
                "the referenced Secret lacks the consumer label, so it is not read"
            ),
            Err(e) => tracing::warn!(
                resource = %object,
                secret = %secret,
                error = %e,
                "the referenced Secret is not labelled or does not exist; could not tell which"
            ),
        }
    });
}

fn data(secret: Secret) -> SecretData {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}
