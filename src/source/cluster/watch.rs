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

use super::held::{HeldObject, Statuses};
use super::judge::{ObjectKey, SecretData};
use super::objects::{api_resource, watched, watched_key, Watched};
use crate::metrics::Metrics;
use crate::resources::Kind;

pub enum Change {
    /// A list of every object of a kind in one namespace (or all) begins: a first list, or
    /// a relist after the watch could not resume (`410 Gone`). Its objects follow in
    /// [`Change::Listed`] chunks as they come, so that 100,000 Users are never held twice
    /// (in a list, then in the index), and the list ends with [`Change::Relisted`].
    Listing {
        kind: Kind,
        namespace: Option<String>,
    },
    Listed {
        kind: Kind,
        objects: Vec<HeldObject>,
    },
    /// The list is complete, with its last objects: what it lacks was deleted.
    Relisted {
        kind: Kind,
        namespace: Option<String>,
        objects: Vec<HeldObject>,
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
    // Each object is cut down to what the index keeps as it arrives, its status shared
    // with the objects of this watch that carry the same.
    let statuses = Arc::new(Statuses::default());
    let shared = statuses.clone();
    let mut chunk = Vec::new();
    tokio::spawn(forward(
        events,
        changes,
        Fold {
            list: move |step| match step {
                List::Started => {
                    chunk.clear();
                    Some(Change::Listing {
                        kind,
                        namespace: namespace.clone(),
                    })
                }
                List::Object(o) => {
                    chunk.push(HeldObject::new(watched(kind, o), &shared));
                    (chunk.len() >= CHUNK).then(|| Change::Listed {
                        kind,
                        objects: std::mem::take(&mut chunk),
                    })
                }
                List::Done => Some(Change::Relisted {
                    kind,
                    namespace: namespace.clone(),
                    objects: std::mem::take(&mut chunk),
                }),
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

/// Objects of a list per [`Change::Listed`].
const CHUNK: usize = 512;

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
    let mut listed = Vec::new();
    tokio::spawn(forward(
        events,
        changes,
        Fold {
            // Few, and small: handed over in one change.
            list: move |step| match step {
                List::Started => {
                    listed.clear();
                    None
                }
                List::Object(s) => {
                    let (namespace, name) = secret_key(&s);
                    listed.push((namespace, name, data(s)));
                    None
                }
                List::Done => Some(Change::SecretsRelisted {
                    namespace: listed_namespace.clone(),
                    secrets: std::mem::take(&mut listed),
                }),
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
struct Fold<L, A, D, F> {
    /// A step of the first list (or of a relist), and the change it makes, if any.
    list: L,
    applied: A,
    deleted: D,
    failed: F,
}

/// A list as kube-rs hands it over: object by object.
enum List<K> {
    Started,
    Object(K),
    Done,
}

/// Sends the changes of each list and event until the index task stops listening.
async fn forward<K, L, A, D, F>(
    mut events: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
    changes: mpsc::Sender<Change>,
    mut fold: Fold<L, A, D, F>,
) where
    L: FnMut(List<K>) -> Option<Change>,
    A: FnMut(K) -> Change,
    D: FnMut(K) -> Change,
    F: FnMut(&watcher::Error),
{
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(Event::Init) => (fold.list)(List::Started),
            Ok(Event::InitApply(o)) => (fold.list)(List::Object(o)),
            Ok(Event::InitDone) => (fold.list)(List::Done),
            Ok(Event::Apply(o)) => Some((fold.applied)(o)),
            Ok(Event::Delete(o)) => Some((fold.deleted)(o)),
            Err(e) => {
                (fold.failed)(&e);
                None
            }
        };
        let Some(change) = change else { continue };
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
