//! The fake API server's state and its write semantics: what the real API server stamps on
//! an object, when `generation` moves, what a status subresource lets through, and the
//! change log that watches replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::RecordedRequest;

/// A kind the fake serves.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    /// Has a `status` subresource: the main resource ignores `.status`, `/status` takes only it.
    pub status: bool,
}

const fn portcullis(plural: &'static str, kind: &'static str) -> ResourceType {
    ResourceType {
        group: "portcullis.dev",
        version: "v1alpha1",
        plural,
        kind,
        status: true,
    }
}

pub const TYPES: &[ResourceType] = &[
    portcullis("tokenintrospectors", "TokenIntrospector"),
    portcullis("accesspolicies", "AccessPolicy"),
    portcullis("identityproviders", "IdentityProvider"),
    portcullis("users", "User"),
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        status: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        status: false,
    },
];

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn by_plural(api_version: &str, plural: &str) -> Option<&'static ResourceType> {
        TYPES
            .iter()
            .find(|t| t.plural == plural && t.api_version() == api_version)
    }

    /// `accesspolicies.portcullis.dev`, as the API server names a type in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A failure, answered as a Kubernetes `Status` so kube-rs maps it to `Error::Api`.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
    }

    fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

/// Objects are keyed by plural (unique among [`TYPES`]), namespace, name.
pub type Key = (&'static str, String, String);

/// One entry of the change log that watches replay.
pub struct Change {
    pub rv: u64,
    pub event: &'static str,
    pub plural: &'static str,
    pub object: Value,
    /// The object before this change, to tell a watch whose selector it now enters or
    /// leaves (`ADDED`, `DELETED`) as the real server does.
    pub previous: Option<Value>,
}

/// Which part of an object a write addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

#[derive(Default)]
pub struct Store {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    /// The last server-side-apply intent per object, field manager and part, so that a
    /// field dropped from an intent is removed, as managed fields make the real server do.
    intents: HashMap<(Key, String, bool), Value>,
    pub history: Vec<Change>,
    /// Watches from a resourceVersion below this get `410 Expired` (see `compact`).
    pub oldest: u64,
    pub outage: bool,
    /// During an outage, answer `500` (which kube's client does not retry) instead of `503`.
    pub outage_500: bool,
    /// Requests are taken and not answered, open watches send nothing, until it is off.
    pub stalled: bool,
    /// `(plural, namespace, name)` of objects whose status writes get `500`.
    pub failing_status: std::collections::HashSet<(String, String, String)>,
    pub closed: bool,
    pub requests: Vec<RecordedRequest>,
    /// The keys of the objects by the value of their [`INDEXED_LABEL`], so that a read by
    /// that label costs what it returns, not a scan of millions of Users.
    pub by_label: HashMap<String, BTreeSet<Key>>,
    /// The keys of the objects without it: the replica that writes status lists the Users
    /// without the label at each count, and a scan of millions under the store's one lock
    /// would hold every other request up, as no real API server does.
    pub unlabelled: BTreeSet<Key>,
    serial: u64,
}

/// The label whose equality selector is read from an index: `--users on-demand` finds a
/// User by it.
pub const INDEXED_LABEL: &str = "portcullis.dev/identifier";

impl Store {
    /// An empty store at resourceVersion 1: a real server never lists at "0", which on a
    /// watch means "any version", not "from the beginning".
    pub fn new() -> Self {
        Store {
            rv: 1,
            ..Store::default()
        }
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(rt.plural, ns.to_string(), name.to_string()))
    }

    fn get_or_404(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// POST: a new object; `409 AlreadyExists` when the name is taken.
    pub fn create(&mut self, rt: &ResourceType, ns: &str, body: Value) -> Result<Value, ApiError> {
        check_kind(rt, &body)?;
        let meta = &body["metadata"];
        if let Some(other) = meta["namespace"].as_str().filter(|o| *o != ns) {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({other}) does not match the namespace sent on the request ({ns})"
            )));
        }
        let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) => {
                self.serial += 1;
                format!("{prefix}{}", suffix(self.serial))
            }
            _ => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        };
        if self.get(rt, ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", rt.qualified()),
            ));
        }
        let obj = only_part(rt, Part::Main, None, body);
        Ok(self.commit(rt, ns, &name, obj))
    }

    /// PUT: replaces the addressed part; `409 Conflict` when the body names a stale resourceVersion.
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        part: Part,
        body: Value,
    ) -> Result<Value, ApiError> {
        check_kind(rt, &body)?;
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let old = self.get_or_404(rt, ns, name)?;
        check_precondition(rt, name, &old, &body)?;
        let obj = only_part(rt, part, Some(&old), body);
        Ok(self.commit(rt, ns, name, obj))
    }

    /// PATCH: merge patch (strategic merge treated alike) on an existing object, or
    /// server-side apply, which creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        part: Part,
        content_type: &str,
        body: &str,
        field_manager: Option<&str>,
    ) -> Result<Value, ApiError> {
        let content_type = content_type.split(';').next().unwrap_or("").trim();
        let old = self.get(rt, ns, name).cloned();
        let patched = match content_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let patch: Value = serde_json::from_str(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let old = old.ok_or_else(|| ApiError::not_found(rt, name))?;
                check_precondition(rt, name, &old, &patch)?;
                let mut patched = old.clone();
                merge_patch(&mut patched, &patch);
                only_part(rt, part, Some(&old), patched)
            }
            "application/apply-patch+yaml" => {
                let Some(manager) = field_manager.filter(|m| !m.is_empty()) else {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "fieldManager: Required value: is required for apply patch",
                    ));
                };
                // JSON is YAML: one parser reads both bodies.
                let intent: Value = serde_yaml::from_str(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?;
                check_kind(rt, &intent)?;
                if intent["metadata"]["name"].as_str() != Some(name) {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
                if old.is_none() && part == Part::Status {
                    return Err(ApiError::not_found(rt, name));
                }
                let key = (rt.plural, ns.to_string(), name.to_string());
                let intent_key = (key, manager.to_string(), part == Part::Status);
                let mut patched = old.clone().unwrap_or_else(|| json!({}));
                if let Some(previous) = self.intents.get(&intent_key) {
                    remove_dropped(&mut patched, previous, &intent);
                }
                merge_patch(&mut patched, &intent);
                self.intents.insert(intent_key, intent);
                only_part(rt, part, old.as_ref(), patched)
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {other}"),
                ))
            }
        };
        Ok(self.commit(rt, ns, name, patched))
    }

    /// DELETE with `DeleteOptions.preconditions`: `409 Conflict` unless uid and
    /// resourceVersion (those given) are the object's.
    pub fn delete_if(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, ApiError> {
        let old = self.get_or_404(rt, ns, name)?;
        for field in ["uid", "resourceVersion"] {
            if let Some(want) = preconditions[field].as_str() {
                if old["metadata"][field] != want {
                    return Err(ApiError::conflict(rt, name));
                }
            }
        }
        self.delete(rt, ns, name)
    }

    pub fn delete(&mut self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (rt.plural, ns.to_string(), name.to_string());
        let mut obj = self
            .objects
            .remove(&key)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        self.unindex(&key, &obj);
        self.intents.retain(|(k, _, _), _| *k != key);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(rt, "DELETED", obj.clone(), None);
        Ok(obj)
    }

    /// Creates or replaces as `kubectl apply` by an admin would (`.status` of a kind with a
    /// status subresource is not the admin's to set).
    pub fn admin_apply(&mut self, obj: Value) -> Value {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let rt = TYPES
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"));
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let old = self.get(rt, &ns, &name).cloned();
        let obj = only_part(rt, Part::Main, old.as_ref(), obj);
        self.commit(rt, &ns, &name, obj)
    }

    /// Stores `obj` as `ns/name`, stamping what the server owns: uid, creationTimestamp,
    /// resourceVersion, and generation (bumped when anything outside metadata and status
    /// changed). A write that changes nothing is a no-op, as on the real server: no new
    /// resourceVersion, no event.
    fn commit(&mut self, rt: &ResourceType, ns: &str, name: &str, mut obj: Value) -> Value {
        let key = (rt.plural, ns.to_string(), name.to_string());
        let old = self.objects.get(&key).cloned();
        if rt.plural == "secrets" {
            fold_string_data(&mut obj);
        }
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        for owned in ["managedFields", "deletionTimestamp", "generateName"] {
            meta.remove(owned);
        }
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        let (uid, created, generation) = match &old {
            Some(old) => {
                let changed = content(rt, old) != content(rt, &obj);
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                (
                    old["metadata"]["uid"].clone(),
                    old["metadata"]["creationTimestamp"].clone(),
                    generation + i64::from(changed),
                )
            }
            None => {
                self.serial += 1;
                let uid = format!("fa4e0000-0000-4000-8000-{:012x}", self.serial);
                let now = k8s_openapi::jiff::Timestamp::now()
                    .round(k8s_openapi::jiff::Unit::Second)
                    .expect("round to seconds");
                (json!(uid), json!(now.to_string()), 1)
            }
        };
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("uid".into(), uid);
        meta.insert("creationTimestamp".into(), created);
        meta.insert("generation".into(), json!(generation));
        if let Some(old) = &old {
            meta.insert(
                "resourceVersion".into(),
                old["metadata"]["resourceVersion"].clone(),
            );
            if *old == obj {
                return obj;
            }
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        self.index(&key, &obj);
        self.objects.insert(key, obj.clone());
        self.record(rt, event, obj.clone(), old);
        obj
    }

    /// Stores `obj` as given (its `.status` too), stamped as [`Store::commit`] stamps a new
    /// object, without an event: objects that were there before any client came. Cheaper
    /// than [`Store::admin_apply`] for a million.
    pub fn preload(&mut self, mut obj: Value, created: &Value) {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let rt = TYPES
            .iter()
            .find(|t| t.kind == kind)
            .unwrap_or_else(|| panic!("the fake API server does not serve {kind}"));
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = obj["metadata"]["name"].as_str().expect("metadata.name");
        let key = (rt.plural, ns.to_string(), name.to_string());
        let ns = key.1.clone();
        self.serial += 1;
        self.rv += 1;
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("namespace".into(), json!(ns));
        meta.insert(
            "uid".into(),
            json!(format!("fa4e0000-0000-4000-8000-{:012x}", self.serial)),
        );
        meta.insert("creationTimestamp".into(), created.clone());
        meta.insert("generation".into(), json!(1));
        meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if let Some(old) = self.objects.remove(&key) {
            self.unindex(&key, &old);
        }
        self.index(&key, &obj);
        self.objects.insert(key, obj);
    }

    /// The keys of the objects whose [`INDEXED_LABEL`] is `value`, in key order.
    pub fn labelled(&self, value: &str) -> impl Iterator<Item = &Key> {
        self.by_label.get(value).into_iter().flatten()
    }

    fn index(&mut self, key: &Key, obj: &Value) {
        match obj["metadata"]["labels"][INDEXED_LABEL].as_str() {
            Some(value) => {
                let keys = self.by_label.entry(value.to_string()).or_default();
                keys.insert(key.clone());
            }
            None => {
                self.unlabelled.insert(key.clone());
            }
        }
    }

    fn unindex(&mut self, key: &Key, obj: &Value) {
        match obj["metadata"]["labels"][INDEXED_LABEL].as_str() {
            Some(value) => {
                if let Some(keys) = self.by_label.get_mut(value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.by_label.remove(value);
                    }
                }
            }
            None => {
                self.unlabelled.remove(key);
            }
        }
    }

    fn record(
        &mut self,
        rt: &ResourceType,
        event: &'static str,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push(Change {
            rv: self.rv,
            event,
            plural: rt.plural,
            object,
            previous,
        });
    }

    /// Forgets the change log: a watch from before now gets `410 Expired`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest = self.rv;
    }
}

fn check_kind(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let (api_version, kind) = (body["apiVersion"].as_str(), body["kind"].as_str());
    if api_version.is_some_and(|v| v != rt.api_version()) || kind.is_some_and(|k| k != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the body is {} {}, the URL names {} {}",
            api_version.unwrap_or(""),
            kind.unwrap_or(""),
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

/// `metadata.resourceVersion` in a body is a precondition.
fn check_precondition(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    body: &Value,
) -> Result<(), ApiError> {
    match body["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && old["metadata"]["resourceVersion"] != rv => {
            Err(ApiError::conflict(rt, name))
        }
        _ => Ok(()),
    }
}

/// What a write to `part` may change: a CRD with a status subresource keeps `.status` on
/// writes to the main resource, and takes nothing but `.status` through `/status`.
fn only_part(rt: &ResourceType, part: Part, old: Option<&Value>, new: Value) -> Value {
    let old_status = old.and_then(|o| o.get("status")).cloned();
    let (mut base, status) = match part {
        Part::Status => (
            old.cloned().unwrap_or(new.clone()),
            new.get("status").cloned(),
        ),
        Part::Main if rt.status => (new, old_status),
        Part::Main => return new,
    };
    let map = base.as_object_mut().expect("an object");
    match status {
        Some(status) => map.insert("status".into(), status),
        None => map.remove("status"),
    };
    base
}

/// The part of an object whose change bumps `metadata.generation`.
fn content(rt: &ResourceType, obj: &Value) -> Map<String, Value> {
    let mut map = obj.as_object().cloned().unwrap_or_default();
    for key in ["metadata", "apiVersion", "kind"] {
        map.remove(key);
    }
    if rt.status {
        map.remove("status");
    }
    map
}

/// A Secret's `stringData` is write-only: the server folds it into `data`.
fn fold_string_data(obj: &mut Value) {
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Removes from `target` the fields that `previous` (an earlier apply intent) set and
/// `intent` no longer does.
fn remove_dropped(target: &mut Value, previous: &Value, intent: &Value) {
    let (Some(target), Some(previous)) = (target.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (k, was) in previous {
        match intent.get(k) {
            None => {
                target.remove(k);
            }
            Some(now) => {
                if let Some(t) = target.get_mut(k) {
                    remove_dropped(t, was, now);
                }
            }
        }
    }
}

/// Five characters for `generateName`, like the real server's random suffix.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// Does `obj` satisfy a label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`, comma-separated)?
pub fn labels_match(selector: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    let label = |k: &str| labels[k.trim()].as_str();
    split_requirements(selector).into_iter().all(|req| {
        let set = |list: &str| -> Vec<String> {
            let list = list.trim().trim_start_matches('(').trim_end_matches(')');
            list.split(',').map(|v| v.trim().to_string()).collect()
        };
        if let Some((k, list)) = req.split_once(" notin ") {
            !label(k).is_some_and(|v| set(list).iter().any(|s| s == v))
        } else if let Some((k, list)) = req.split_once(" in ") {
            label(k).is_some_and(|v| set(list).iter().any(|s| s == v))
        } else if let Some((k, v)) = req.split_once("!=") {
            label(k) != Some(v.trim())
        } else if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            label(k) == Some(v.trim())
        } else if let Some(k) = req.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(req).is_some()
        }
    })
}

/// Does `obj` satisfy a field selector (`a.b=v`, `a.b==v`, `a.b!=v`, comma-separated)?
pub fn fields_match(selector: &str, obj: &Value) -> bool {
    split_requirements(selector).into_iter().all(|req| {
        let (path, want, equal) = match req.split_once("!=") {
            Some((p, v)) => (p, v, false),
            None => match req.split_once("==").or_else(|| req.split_once('=')) {
                Some((p, v)) => (p, v, true),
                None => return true,
            },
        };
        let pointer = format!("/{}", path.trim().replace('.', "/"));
        let have = match obj.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (have == want.trim()) == equal
    })
}

/// Whether `selector` requires the label `key` to be absent (`!key`).
pub fn absence(selector: &str, key: &str) -> bool {
    split_requirements(selector)
        .into_iter()
        .any(|req| req.trim().strip_prefix('!').map(str::trim) == Some(key))
}

/// The value `key=value` (or `key==value`) of a selector requires, if it does.
pub fn equality<'a>(selector: &'a str, key: &str) -> Option<&'a str> {
    split_requirements(selector).into_iter().find_map(|req| {
        if req.contains("!=") {
            return None;
        }
        let (k, v) = req.split_once("==").or_else(|| req.split_once('='))?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Splits a selector at commas outside parentheses.
fn split_requirements(selector: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(selector[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(selector[start..].trim());
    out.retain(|r| !r.is_empty());
    out
}
