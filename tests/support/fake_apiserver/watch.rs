//! The watch protocol: newline-delimited JSON events over a chunked response, replayed from
//! the change log after the requested resourceVersion, then live.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::store::{fields_match, labels_match, ApiError, Change, ResourceType};
use super::{error, Shared};

/// How often a watch that asked for bookmarks gets one (a real server: about a minute).
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

struct Filter {
    rt: &'static ResourceType,
    ns: Option<String>,
    labels: String,
    fields: String,
}

impl Filter {
    fn matches(&self, plural: &str, obj: &Value) -> bool {
        plural == self.rt.plural
            && self
                .ns
                .as_deref()
                .is_none_or(|ns| obj["metadata"]["namespace"] == ns)
            && labels_match(&self.labels, obj)
            && fields_match(&self.fields, obj)
    }
}

struct Options {
    /// `None`: start with the current objects as `ADDED` (resourceVersion unset or "0").
    from: Option<u64>,
    bookmarks: bool,
    /// `sendInitialEvents=true`: mark the end of the initial events with a bookmark.
    initial_events_end: bool,
    timeout: Option<Duration>,
}

pub fn respond(
    shared: Arc<Shared>,
    rt: &'static ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Response {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let initial_events_end = param("sendInitialEvents") == "true";
    let from = match param("resourceVersion") {
        _ if initial_events_end => None,
        "" | "0" => None,
        rv => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error(ApiError::bad_request(format!(
                    "invalid resourceVersion {rv}"
                )))
            }
        },
    };
    let options = Options {
        from,
        bookmarks: param("allowWatchBookmarks") == "true",
        initial_events_end,
        timeout: param("timeoutSeconds")
            .parse()
            .ok()
            .map(Duration::from_secs),
    };
    let filter = Filter {
        rt,
        ns: ns.map(str::to_string),
        labels: param("labelSelector").to_string(),
        fields: param("fieldSelector").to_string(),
    };
    let (tx, rx) = mpsc::channel::<String>(64);
    tokio::spawn(stream(shared, filter, options, tx));
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .expect("a watch response")
}

fn event(kind: &str, object: &Value) -> String {
    format!("{}\n", json!({ "type": kind, "object": object }))
}

fn bookmark(rt: &ResourceType, rv: u64, initial_events_end: bool) -> String {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let object = json!({ "apiVersion": rt.api_version(), "kind": rt.kind, "metadata": metadata });
    event("BOOKMARK", &object)
}

fn expired(rv: u64, oldest: u64) -> String {
    let status = ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {rv} ({oldest})"),
    )
    .status();
    event("ERROR", &status)
}

/// What a watch with `filter` sees of a change, as the real server's watch cache has it:
/// an object that enters the selectors is `ADDED`, one that leaves them is `DELETED`
/// (its last matching content at the change's resourceVersion).
fn seen(filter: &Filter, c: &Change) -> Option<String> {
    let now = filter.matches(c.plural, &c.object);
    let before = c
        .previous
        .as_ref()
        .is_some_and(|p| filter.matches(c.plural, p));
    match (c.event, before, now) {
        ("MODIFIED", false, true) => Some(event("ADDED", &c.object)),
        ("MODIFIED", true, false) => {
            let mut gone = c.previous.clone().expect("matched before");
            gone["metadata"]["resourceVersion"] = c.object["metadata"]["resourceVersion"].clone();
            Some(event("DELETED", &gone))
        }
        (_, _, true) => Some(event(c.event, &c.object)),
        _ => None,
    }
}

/// Feeds one watch until its timeout, an outage, the server's end, or the client leaving.
async fn stream(shared: Arc<Shared>, filter: Filter, options: Options, tx: mpsc::Sender<String>) {
    // Subscribed before the first look, so no change slips between look and wait.
    let mut tick = shared.tick.subscribe();
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let (mut last, mut lines) = {
        let store = shared.lock();
        if store.outage || store.closed {
            return;
        }
        match options.from {
            Some(rv) => (rv, Vec::new()),
            None => {
                let mut lines: Vec<String> = store
                    .objects
                    .iter()
                    .filter(|((plural, _, _), obj)| filter.matches(plural, obj))
                    .map(|(_, obj)| event("ADDED", obj))
                    .collect();
                if options.initial_events_end {
                    lines.push(bookmark(filter.rt, store.rv, true));
                }
                (store.rv, lines)
            }
        }
    };
    let mut next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
    loop {
        let mut end = false;
        {
            let store = shared.lock();
            if store.outage || store.closed {
                return;
            }
            if store.stalled {
                // Nothing until the server answers again.
            } else if last < store.oldest {
                // Events after `last` are forgotten: the client must relist.
                lines.push(expired(last, store.oldest));
                end = true;
            } else {
                let from = store.history.partition_point(|c| c.rv <= last);
                lines.extend(
                    store.history[from..]
                        .iter()
                        .filter_map(|c| seen(&filter, c)),
                );
                last = store.rv;
            }
        }
        for line in lines.drain(..) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if end {
            return;
        }
        let timeout = async {
            match deadline {
                Some(deadline) => sleep_until(deadline).await,
                None => pending().await,
            }
        };
        tokio::select! {
            changed = tick.changed() => if changed.is_err() { return },
            () = timeout => return,
            () = tx.closed() => return,
            () = sleep_until(next_bookmark), if options.bookmarks => {
                if !shared.lock().stalled {
                    lines.push(bookmark(filter.rt, last, false));
                }
                next_bookmark = Instant::now() + BOOKMARK_INTERVAL;
            }
        }
    }
}
