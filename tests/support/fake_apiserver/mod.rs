//! A fake Kubernetes API server that speaks real HTTP, so tests run kube-rs's own client and
//! watchers against it.
//!
//! Serves `portcullis.dev/v1alpha1` `tokenintrospectors`, `accesspolicies`,
//! `identityproviders` and `users` (namespaced, with a status subresource), core `v1`
//! `secrets` and `coordination.k8s.io/v1` `leases`: get, list, watch, create, replace,
//! delete, merge/strategic-merge patch and server-side apply, with the real server's
//! resourceVersion, generation and status-subresource rules ([`store`]) and its watch
//! protocol ([`watch`]). Lists and watches take label and field selectors (an object that
//! a change moves into or out of a watch's selectors comes as `ADDED` or `DELETED`), and
//! a list asked for as `PartialObjectMetadataList` answers metadata only; a list of one name
//! in a namespace, or by the label `portcullis.dev/identifier=`, reads no other object
//! (an index), so that the store can hold millions. The handle also acts as an admin
//! ([`FakeApiServer::apply`], [`FakeApiServer::preload`]),
//! breaks the server ([`FakeApiServer::set_outage`], [`FakeApiServer::set_stalled`],
//! [`FakeApiServer::fail_status_writes`], [`FakeApiServer::compact`]) and
//! shows what clients sent ([`FakeApiServer::requests`]).
//!
//! Known differences from a real server: server-side apply merges the intent (removing what
//! the same field manager dropped since its last apply) and knows no ownership conflicts;
//! arrays inside objects are replaced whole by every kind of patch; `dryRun`, finalizers,
//! validation and admission do not exist; bookmarks come every second.
//!
//! What kube-rs 5 does with it (see the tests in `tests/kube/fake_apiserver.rs`): its watcher
//! lists with `limit=500` (pages are served), watches from the list's resourceVersion,
//! and relists only on an `ERROR` event with code 410 inside a 200 watch response (an HTTP
//! 410 would make it retry the same watch forever). Its client retries a `503` by itself
//! (see [`FakeApiServer::client`]), so a watcher sees no error during a short outage: it
//! just resumes, about a second after the outage ends.

mod store;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use store::{
    equality, fields_match, labels_match, ApiError, Part, ResourceType, Store, INDEXED_LABEL, TYPES,
};

/// A request as a client sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path_and_query: String,
    pub content_type: Option<String>,
    /// The `Accept` header: `...;as=PartialObjectMetadataList;...` asks for metadata only.
    pub accept: Option<String>,
    /// The body as JSON, or as a JSON string when it is not JSON (YAML); `None` when empty.
    pub body: Option<Value>,
}

impl RecordedRequest {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }

    /// A query parameter, decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.path_and_query.split_once('?')?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Bumped on every change of the store, so that open watches look again.
    tick: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store and wakes the watches.
    fn change<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let out = f(&mut self.lock());
        self.tick.send_modify(|t| *t += 1);
        out
    }
}

/// A running fake API server; stops (ending its watches) when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1:<free port>`.
    pub async fn start() -> FakeApiServer {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            tick: tokio::sync::watch::Sender::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        // Dropping the handle closes the store, which ends the watches; then the graceful
        // shutdown closes every connection, so clients see a server that is gone.
        let mut closed = shared.tick.subscribe();
        let gone = shared.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = closed.wait_for(|_| gone.lock().closed).await;
                })
                .await
                .expect("fake API server");
        });
        FakeApiServer { shared, addr }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes `dir/kubeconfig` for this server (default namespace `portcullis`), for a
    /// process that reads `KUBECONFIG`; returns its path.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: portcullis}}}}]\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    /// A kube client configuration for this server: plain HTTP, default namespace `default`.
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("the server's URL"))
    }

    /// A kube client for this server, as [`FakeApiServer::config`] makes it. It keeps kube's
    /// default retry layer: a `503` is retried up to 15 times, waiting the greater of
    /// `Retry-After` (1 s here) and an exponential backoff, so one call during a long
    /// outage takes minutes to fail (set `default_retry = false` in the config to see the
    /// `503` at once).
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("a kube client for the fake API server")
    }

    /// Creates or replaces `obj` (`apiVersion`, `kind`, `metadata.name`, namespace
    /// `default` unless given) as an admin's `kubectl apply` would: generation moves only
    /// when the content changes, and `.status` of the portcullis kinds is kept as it was.
    /// Returns the stored object.
    pub fn apply(&self, obj: Value) -> Value {
        self.shared.change(|s| s.admin_apply(obj))
    }

    /// Stores objects as given, `.status` included (as an earlier run left them), each
    /// stamped as a created object is (one `creationTimestamp` for all), without events:
    /// they were there before any client came. For a million Users, where
    /// [`FakeApiServer::apply`] and [`FakeApiServer::set_status`] would keep two copies
    /// of each in the change log.
    pub fn preload(&self, objects: impl IntoIterator<Item = Value>) {
        let now = k8s_openapi::jiff::Timestamp::now()
            .round(k8s_openapi::jiff::Unit::Second)
            .expect("round to seconds");
        let created = json!(now.to_string());
        self.shared.change(|s| {
            for obj in objects {
                s.preload(obj, &created);
            }
        });
    }

    /// Writes `.status` as a controller would, through `/status` (a merge patch): for an
    /// object that a previous run already reported on.
    pub fn set_status(&self, api_version: &str, plural: &str, ns: &str, name: &str, status: Value) {
        let rt = resource_type(api_version, plural);
        let body = json!({ "status": status }).to_string();
        self.shared
            .change(|s| {
                s.patch(
                    rt,
                    ns,
                    name,
                    Part::Status,
                    "application/merge-patch+json",
                    &body,
                    None,
                )
            })
            .unwrap_or_else(|e| panic!("status of {plural}/{ns}/{name}: {:?}", e.status()));
    }

    /// Deletes an object (a `DELETED` event); returns it, `None` when it did not exist.
    pub fn delete(&self, api_version: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = resource_type(api_version, plural);
        self.shared.change(|s| s.delete(rt, ns, name).ok())
    }

    pub fn get(&self, api_version: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let rt = resource_type(api_version, plural);
        self.shared.lock().get(rt, ns, name).cloned()
    }

    /// Every object of a kind, all namespaces, ordered by namespace and name.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let store = self.shared.lock();
        store
            .objects
            .iter()
            .filter(|((p, _, _), _)| *p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.lock().rv.to_string()
    }

    /// While on, every request gets `503` and every open watch ends.
    pub fn set_outage(&self, on: bool) {
        self.shared.change(|s| s.outage = on);
    }

    /// [`FakeApiServer::set_outage`], answering `500 InternalError`: kube's client hands
    /// that to the watcher at once, as it does a long outage after its retries.
    pub fn set_broken(&self, on: bool) {
        self.shared.change(|s| {
            s.outage = on;
            s.outage_500 = on;
        });
    }

    /// While on, the server takes every request (and connection) and answers none, and
    /// open watches send nothing, as a hung API server; when turned off, the held requests
    /// are served and the watches go on.
    pub fn set_stalled(&self, on: bool) {
        self.shared.change(|s| s.stalled = on);
    }

    /// Every status write (`PATCH` or `PUT` of `/status`) of this object gets
    /// `500 InternalError`, which kube's client does not retry; other objects are served.
    pub fn fail_status_writes(&self, plural: &str, ns: &str, name: &str) {
        self.shared.change(|s| {
            s.failing_status
                .insert((plural.to_string(), ns.to_string(), name.to_string()))
        });
    }

    /// Forgets the change history: a watch resuming from a resourceVersion older than the
    /// current one gets an `ERROR` event `410 Expired`, which makes kube's watcher relist.
    pub fn compact(&self) {
        self.shared.change(Store::compact);
    }

    /// Every request so far (including refused ones), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.change(|s| s.closed = true);
    }
}

fn resource_type(api_version: &str, plural: &str) -> &'static ResourceType {
    ResourceType::by_plural(api_version, plural)
        .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {plural}"))
}

/// What a request path addresses.
struct Route {
    rt: &'static ResourceType,
    ns: Option<String>,
    name: Option<String>,
    part: Part,
}

/// `/api/v1[/namespaces/{ns}]/{plural}[/{name}]` and
/// `/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/status]]`.
fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, part) = match rest {
        [plural] => (*plural, None, Part::Main),
        [plural, name] if ns.is_some() => (*plural, Some(name.to_string()), Part::Main),
        [plural, name, "status"] if ns.is_some() => (*plural, Some(name.to_string()), Part::Status),
        _ => return None,
    };
    let rt = TYPES
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)?;
    (part == Part::Main || rt.status).then_some(Route { rt, ns, name, part })
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let outage = {
        let mut store = shared.lock();
        store.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path_and_query,
            content_type: content_type.clone(),
            accept: accept.clone(),
            body: (!text.is_empty())
                .then(|| serde_json::from_str(&text).unwrap_or_else(|_| json!(text))),
        });
        (store.outage || store.closed).then_some(store.outage_500)
    };
    // Hung: hold the request until the stall ends (or the server does).
    let mut tick = shared.tick.subscribe();
    let _ = tick
        .wait_for(|_| {
            let store = shared.lock();
            !store.stalled || store.closed
        })
        .await;
    if let Some(broken) = outage {
        let e = match broken {
            true => ApiError::new(500, "InternalError", "the fake API server is broken"),
            false => ApiError::new(503, "ServiceUnavailable", "the fake API server is down"),
        };
        let mut response = error(e);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    }
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let Some(route) = route(parts.uri.path()) else {
        return error(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let (rt, part) = (route.rt, route.part);
    let json_body = || {
        serde_json::from_str::<Value>(&text)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    };
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let result = match (parts.method, route.ns.as_deref(), route.name.as_deref()) {
        (Method::GET, ns, None) if watch => return watch::respond(shared, rt, ns, &query),
        (Method::GET, ns, None) => {
            list(&shared.lock(), rt, ns, &query).map(|list| match accept.as_deref() {
                Some(a) if a.contains("as=PartialObjectMetadataList") => metadata_only(list),
                _ => list,
            })
        }
        (Method::DELETE, ns, None) => Ok(delete_collection(&shared, rt, ns, &query)),
        (Method::POST, Some(ns), None) => {
            match json_body().and_then(|b| shared.change(|s| s.create(rt, ns, b))) {
                Ok(created) => return json_response(StatusCode::CREATED, &created),
                Err(e) => Err(e),
            }
        }
        (Method::GET, Some(ns), Some(name)) => shared
            .lock()
            .get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name)),
        (Method::PATCH | Method::PUT, Some(ns), Some(name))
            if part == Part::Status
                && shared.lock().failing_status.contains(&(
                    rt.plural.to_string(),
                    ns.to_string(),
                    name.to_string(),
                )) =>
        {
            Err(ApiError::new(
                500,
                "InternalError",
                "the fake API server fails this object's status writes",
            ))
        }
        (Method::PUT, Some(ns), Some(name)) => {
            json_body().and_then(|b| shared.change(|s| s.replace(rt, ns, name, part, b)))
        }
        (Method::PATCH, Some(ns), Some(name)) => {
            let content_type = content_type.unwrap_or_default();
            let manager = query.get("fieldManager").map(String::as_str);
            shared.change(|s| s.patch(rt, ns, name, part, &content_type, &text, manager))
        }
        (Method::DELETE, Some(ns), Some(name)) => {
            // DeleteOptions may carry preconditions (uid, resourceVersion).
            let options = serde_json::from_str::<Value>(&text).unwrap_or_default();
            let preconditions = &options["preconditions"];
            shared.change(|s| s.delete_if(rt, ns, name, preconditions))
        }
        (method, ..) => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    };
    match result {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => error(e),
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error(e: ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.status())
}

/// The objects of `rt` in `ns` (all namespaces when `None`) that match the request's
/// label and field selectors, ordered by namespace and name.
fn selected<'a>(
    store: &'a Store,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &'a HashMap<String, String>,
) -> Vec<(&'a store::Key, &'a Value)> {
    selected_after(store, rt, ns, query, None).collect()
}

/// The objects of `rt` (in `ns`) that the query's selectors match, in key order, from just
/// after `after` (a page's last `(namespace, name)`): a page costs its own length, not the
/// whole store's. A read of one name in a namespace (`metadata.name=`), or by the indexed
/// label (`portcullis.dev/identifier=`), costs what it returns, however many objects the
/// store holds.
fn selected_after<'a>(
    store: &'a Store,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &'a HashMap<String, String>,
    after: Option<(String, String)>,
) -> impl Iterator<Item = (&'a store::Key, &'a Value)> + 'a {
    use std::ops::Bound;
    let labels = query.get("labelSelector").map(String::as_str).unwrap_or("");
    let fields = query.get("fieldSelector").map(String::as_str).unwrap_or("");
    let plural = rt.plural;
    let start = match after {
        Some((ns, name)) => Bound::Excluded((plural, ns, name)),
        None => Bound::Included((plural, String::new(), String::new())),
    };
    let one_name = ns.zip(equality(fields, "metadata.name"));
    let candidates: Box<dyn Iterator<Item = (&'a store::Key, &'a Value)> + 'a> =
        match (one_name, equality(labels, INDEXED_LABEL)) {
            (Some((ns, name)), _) => Box::new(
                store
                    .objects
                    .get_key_value(&(plural, ns.to_string(), name.to_string()))
                    .into_iter(),
            ),
            (None, Some(value)) => Box::new(
                store
                    .labelled(value)
                    .filter_map(|key| store.objects.get_key_value(key)),
            ),
            (None, None) if store::absence(labels, INDEXED_LABEL) => Box::new(
                store
                    .unlabelled
                    .range((start.clone(), Bound::Unbounded))
                    .filter_map(|key| store.objects.get_key_value(key)),
            ),
            (None, None) => Box::new(store.objects.range((start.clone(), Bound::Unbounded))),
        };
    let ns = ns.map(str::to_string);
    candidates
        .skip_while(move |(key, _)| match &start {
            Bound::Excluded(after) => *key <= after,
            _ => key.0 < plural,
        })
        .take_while(move |((p, _, _), _)| *p == plural)
        .filter(move |((_, obj_ns, _), obj)| {
            ns.as_ref().is_none_or(|ns| ns == obj_ns)
                && labels_match(labels, obj)
                && fields_match(fields, obj)
        })
}

/// A list, paginated when `limit` is given: the continue token holds the list's
/// resourceVersion and the last key served, so every page reports the first page's
/// resourceVersion, as a real list snapshot does (objects changed meanwhile come back
/// as watch events from there).
fn list(
    store: &Store,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let (rv, after) = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let bad = || ApiError::bad_request(format!("invalid continue token {token}"));
            let (rv, key) = token.split_once('|').ok_or_else(bad)?;
            let (ns, name) = key.split_once('/').ok_or_else(bad)?;
            (rv.to_string(), Some((ns.to_string(), name.to_string())))
        }
        None => (store.rv.to_string(), None),
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut rest = selected_after(store, rt, ns, query, after).peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < limit {
        let Some(((_, ns, name), obj)) = rest.next() else {
            break;
        };
        items.push(obj.clone());
        last = Some(format!("{ns}/{name}"));
    }
    let mut metadata = json!({ "resourceVersion": rv });
    if let (Some(last), true) = (last, rest.peek().is_some()) {
        metadata["continue"] = json!(format!("{rv}|{last}"));
    }
    Ok(json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
        "metadata": metadata,
        "items": items,
    }))
}

/// A list as `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
/// asks for it: each item's metadata alone (a Secret's data never leaves the server).
fn metadata_only(list: Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": item["metadata"],
            })
        })
        .collect();
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": list["metadata"],
        "items": items,
    })
}

fn delete_collection(
    shared: &Shared,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
) -> Value {
    shared.change(|store| {
        let keys: Vec<_> = selected(store, rt, ns, query)
            .into_iter()
            .map(|(key, _)| key.clone())
            .collect();
        let items: Vec<Value> = keys
            .iter()
            .filter_map(|(_, ns, name)| store.delete(rt, ns, name).ok())
            .collect();
        json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": { "resourceVersion": store.rv.to_string() },
            "items": items,
        })
    })
}
