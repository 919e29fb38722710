//! The cluster's objects, folded from watch events into an index that compiles into a
//! snapshot and one verdict per object. Plain data in and out: no kube types, so that tests
//! drive it without an API server.
//!
//! Each object keeps its last good version: a new object that is invalid stays out, an
//! invalid edit of a valid object leaves the previous version serving, and a deletion
//! always applies. Objects are kept in the compact form of [`super::held`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::by_name::{split, ByName, Named};
use super::held::{Held, HeldObject, HeldSpec, Statuses};
use super::judge::{Object, ObjectKey, Ready, SecretData, Verdict};
use std::sync::Arc;

use crate::resources::{qualified, Kind, SecretKeyRef};
use crate::resources::{Origin, Resource};
use crate::snapshot::{team_of, Compiler, RejectReason, Rejection, Snapshot};
use crate::users::{admit_known, KnownUser, UserIndex};

struct Entry {
    held: Held,
    last_good: LastGood,
    /// Whether the last verdict on it was `Accepted` and its status said so already: the
    /// writer holds nothing for it, nor the log a refusal, so that the same verdict again
    /// changes nothing and is not sent (a restart's 100,000 verdicts are not built only
    /// to be found written). Set for the objects of the first lists, before any verdict.
    settled: bool,
    /// Whether it was seen since the list of its kind and namespace began (see
    /// [`ClusterIndex::begin_list`]).
    listed: bool,
}

/// A User's entry: found by its name, which its User holds (or, while its spec does not
/// parse, `name`).
struct UserEntry {
    entry: Entry,
    name: Option<Box<str>>,
}

impl UserEntry {
    fn new(key: &ObjectKey, entry: Entry) -> Self {
        let mut user = UserEntry { entry, name: None };
        user.name_from(key);
        user
    }

    /// Holds the name apart when the User does not.
    fn name_from(&mut self, key: &ObjectKey) {
        self.name = match &self.entry.held.spec {
            Ok(HeldSpec::User(_)) => None,
            _ => Some(qualified(Some(&key.namespace), &key.name).into()),
        };
    }

    fn key(&self) -> ObjectKey {
        let (namespace, name) = split(self.name());
        ObjectKey {
            kind: Kind::User,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Named for UserEntry {
    fn name(&self) -> &str {
        match (&self.entry.held.spec, &self.name) {
            (Ok(HeldSpec::User(user)), _) => user.name(),
            (_, Some(name)) => name,
            (_, None) => "",
        }
    }
}

/// The version of an object that last compiled.
enum LastGood {
    None,
    /// The current version: nothing is kept beside it, so that 100,000 Users are not held
    /// twice.
    Current,
    /// An earlier version (or the current one with its Secrets filled in), kept while it
    /// is what serves.
    Kept(Box<Resource>),
    /// An earlier version of a User, in its one form, and its generation.
    KeptUser(Box<(KnownUser, i64)>),
}

#[derive(Default)]
pub struct ClusterIndex {
    /// The namespace whose objects apply to every request; `None`: every object does.
    root: Option<Arc<str>>,
    /// `--max-regex-bytes`; `None`: the default.
    max_regex_bytes: Option<usize>,
    /// Every object but the Users.
    objects: BTreeMap<ObjectKey, Entry>,
    users: ByName<UserEntry>,
    /// `(namespace, name)` of every Secret with the consumer label in the watched
    /// namespaces → its data, kept only while an object references it (`None`: labelled,
    /// not referenced). A Secret without the label is never here.
    secrets: HashMap<(String, String), Option<SecretData>>,
    /// Users refused for a clash at the last compile of all Users: while there are any, a
    /// change to one User may change another's standing.
    clashing_users: usize,
    /// Objects deleted (or missing from a relist) since [`ClusterIndex::take_removed`],
    /// so that the status writer forgets them.
    removed: Vec<ObjectKey>,
    /// Whether verdicts were given: objects that come after are not [`Entry::settled`].
    judged: bool,
    /// The statuses of the objects applied as [`Object`]s, shared.
    statuses: Statuses,
}

/// Which parts of the snapshot an event touched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// The configuration (every kind but User, and the Secrets it reads).
    pub config: bool,
    pub users: bool,
    /// The namespaces whose configuration changed, when `config` and not `everywhere`.
    pub namespaces: BTreeSet<String>,
    /// A change whose namespaces are not known (a relist across all namespaces).
    pub everywhere: bool,
}

impl Dirty {
    fn of(kind: Kind, namespace: &str) -> Self {
        let config = kind != Kind::User;
        Dirty {
            config,
            users: kind == Kind::User,
            namespaces: config.then(|| namespace.to_string()).into_iter().collect(),
            everywhere: false,
        }
    }

    /// The configuration of one namespace, or of every one (`None`).
    pub fn config_of(namespace: Option<&str>) -> Self {
        Dirty {
            config: true,
            namespaces: namespace.map(str::to_string).into_iter().collect(),
            everywhere: namespace.is_none(),
            ..Dirty::default()
        }
    }

    pub fn any(&self) -> bool {
        self.config || self.users
    }

    pub fn merge(&mut self, other: Dirty) {
        self.config |= other.config;
        self.users |= other.users;
        self.everywhere |= other.everywhere;
        self.namespaces.extend(other.namespaces);
    }
}

/// What a configuration rebuild compiles anew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebuild {
    /// Every scope: the first build, a change in the root namespace, or one whose
    /// namespaces are not known.
    All,
    /// Only these teams' namespaces; every other scope is kept as it is.
    Teams(Vec<String>),
}

impl ClusterIndex {
    /// An index whose objects outside `root` apply only to their own namespace.
    pub fn with_root(root: Option<&str>) -> Self {
        ClusterIndex {
            root: root.map(Into::into),
            ..ClusterIndex::default()
        }
    }

    pub fn max_regex_bytes(mut self, bytes: Option<usize>) -> Self {
        self.max_regex_bytes = bytes;
        self
    }

    /// What a change compiles anew: a root namespace change touches every scope.
    pub fn rebuild_for(&self, dirty: &Dirty) -> Rebuild {
        let root = self.root.as_deref();
        let touches_root = dirty
            .namespaces
            .iter()
            .any(|ns| team_of(root, Some(ns)).is_none());
        if dirty.everywhere || touches_root {
            Rebuild::All
        } else {
            Rebuild::Teams(dirty.namespaces.iter().cloned().collect())
        }
    }

    /// An object added or changed. A change to its status alone touches nothing.
    pub fn apply(&mut self, object: Object) -> Dirty {
        let object = HeldObject::new(object, &self.statuses);
        self.apply_held(object)
    }

    /// [`ClusterIndex::apply`] of an object in the form kept.
    pub fn apply_held(&mut self, object: HeldObject) -> Dirty {
        let HeldObject { key, held } = object;
        let found = match key.kind {
            Kind::User => match self.users.get_mut(&key.namespace, &key.name) {
                Some(user) => {
                    let touched = replace(&mut user.entry, &key, held);
                    user.name_from(&key);
                    user.entry.listed = true;
                    Some(touched)
                }
                None => {
                    let entry = self.new_entry(held);
                    self.users.insert_new(UserEntry::new(&key, entry));
                    None
                }
            },
            _ => match self.objects.get_mut(&key) {
                Some(entry) => {
                    entry.listed = true;
                    Some(replace(entry, &key, held))
                }
                None => {
                    let entry = self.new_entry(held);
                    self.objects.insert(key.clone(), entry);
                    None
                }
            },
        };
        match found {
            Some(false) => Dirty::default(),
            // New, or changed.
            _ => Dirty::of(key.kind, &key.namespace),
        }
    }

    fn new_entry(&self, held: Held) -> Entry {
        Entry {
            held,
            last_good: LastGood::None,
            settled: !self.judged,
            listed: true,
        }
    }

    pub fn delete(&mut self, key: &ObjectKey) -> Dirty {
        let removed = match key.kind {
            Kind::User => self.users.remove(&key.namespace, &key.name).is_some(),
            _ => self.objects.remove(key).is_some(),
        };
        match removed {
            true => {
                self.removed.push(key.clone());
                Dirty::of(key.kind, &key.namespace)
            }
            false => Dirty::default(),
        }
    }

    /// The objects removed since the last call.
    pub fn take_removed(&mut self) -> Vec<ObjectKey> {
        std::mem::take(&mut self.removed)
    }

    /// A complete list of one kind (in one namespace, or in all): what it lacks was deleted,
    /// perhaps while the watch was down.
    pub fn relist(&mut self, kind: Kind, namespace: Option<&str>, objects: Vec<Object>) -> Dirty {
        let objects = objects
            .into_iter()
            .map(|o| HeldObject::new(o, &self.statuses))
            .collect();
        self.relist_held(kind, namespace, objects)
    }

    /// [`ClusterIndex::relist`] of objects in the form kept.
    pub fn relist_held(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        objects: Vec<HeldObject>,
    ) -> Dirty {
        self.begin_list(kind, namespace);
        self.end_list(kind, namespace, objects)
    }

    /// A list of one kind (in one namespace, or in all) begins. Its objects come in as they
    /// are read ([`ClusterIndex::list_part`]), each applied as an event would be; at its end
    /// ([`ClusterIndex::end_list`]) what it lacked is deleted.
    pub fn begin_list(&mut self, kind: Kind, namespace: Option<&str>) {
        let in_scope = |ns: &str| namespace.is_none_or(|n| n == ns);
        match kind {
            Kind::User => {
                for user in self.users.values_mut() {
                    if in_scope(split(user.name()).0) {
                        user.entry.listed = false;
                    }
                }
            }
            _ => {
                for (key, entry) in &mut self.objects {
                    if key.kind == kind && in_scope(&key.namespace) {
                        entry.listed = false;
                    }
                }
            }
        }
    }

    /// Some objects of the list begun.
    pub fn list_part(&mut self, objects: Vec<HeldObject>) -> Dirty {
        let mut dirty = Dirty::default();
        for o in objects {
            dirty.merge(self.apply_held(o));
        }
        dirty
    }

    /// The last objects of the list begun; what it lacked is deleted.
    pub fn end_list(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        objects: Vec<HeldObject>,
    ) -> Dirty {
        let mut dirty = self.list_part(objects);
        let in_scope = |ns: &str| namespace.is_none_or(|n| n == ns);
        let before = self.len();
        let removed = &mut self.removed;
        match kind {
            Kind::User => self.users.retain(
                |user| user.entry.listed || !in_scope(split(user.name()).0),
                |user| removed.push(user.key()),
            ),
            _ => self.objects.retain(|key, entry| {
                let keep = entry.listed || key.kind != kind || !in_scope(&key.namespace);
                if !keep {
                    removed.push(key.clone());
                }
                keep
            }),
        }
        dirty.merge(match (self.len() != before, kind, namespace) {
            (false, ..) => Dirty::default(),
            (true, Kind::User, ns) => Dirty::of(kind, ns.unwrap_or_default()),
            (true, _, ns) => Dirty::config_of(ns),
        });
        dirty
    }

    /// A labelled Secret added or changed (`Some`), or gone (`None`): deleted, or its
    /// consumer label removed. Its data is kept only while an object references it.
    pub fn set_secret(&mut self, namespace: &str, name: &str, data: Option<SecretData>) -> Dirty {
        let key = (namespace.to_string(), name.to_string());
        let referenced = self.secret_refs().contains(&key);
        let before = self.secrets.get(&key).cloned();
        match data {
            Some(data) => self.secrets.insert(key.clone(), referenced.then_some(data)),
            None => self.secrets.remove(&key),
        };
        match referenced && self.secrets.get(&key) != before.as_ref() {
            true => Dirty::config_of(Some(namespace)),
            false => Dirty::default(),
        }
    }

    /// Every labelled Secret of one namespace (or of all): a first list, or a relist. What
    /// the list lacks is gone.
    pub fn relist_secrets(
        &mut self,
        namespace: Option<&str>,
        listed: Vec<(String, String, SecretData)>,
    ) -> Dirty {
        let in_scope = |(ns, _): &(String, String)| namespace.is_none_or(|n| n == ns);
        let refs = self.secret_refs();
        let held = |secrets: &HashMap<(String, String), Option<SecretData>>| {
            let mut held: Vec<_> = secrets
                .iter()
                .filter(|(k, v)| in_scope(k) && v.is_some())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            held.sort_by(|a, b| a.0.cmp(&b.0));
            held
        };
        let before = held(&self.secrets);
        self.secrets.retain(|k, _| !in_scope(k));
        for (ns, name, data) in listed {
            let key = (ns, name);
            let data = refs.contains(&key).then_some(data);
            self.secrets.insert(key, data);
        }
        match held(&self.secrets) != before {
            true => Dirty::config_of(namespace),
            false => Dirty::default(),
        }
    }

    /// Forgets the data of the Secrets no object references any more (their names stay,
    /// as labelled). Returns the namespaces where an object now references a labelled
    /// Secret whose data was not kept: those must be listed again.
    pub fn retain_secrets(&mut self) -> BTreeSet<String> {
        let refs = self.secret_refs();
        let mut reread = BTreeSet::new();
        for (key, data) in &mut self.secrets {
            match (refs.contains(key), data.is_some()) {
                (false, true) => *data = None,
                (true, false) => {
                    reread.insert(key.0.clone());
                }
                _ => {}
            }
        }
        reread
    }

    /// `(namespace, name)` of every Secret that a TokenIntrospector references now.
    pub fn secret_refs(&self) -> BTreeSet<(String, String)> {
        self.refs_by_object()
            .map(|(key, name)| (key.namespace.clone(), name))
            .collect()
    }

    /// Each object and the name of a Secret it references that is not among the labelled
    /// Secrets: missing, or there without the consumer label (the index cannot tell).
    pub fn unlabelled_secret_refs(&self) -> BTreeSet<(ObjectKey, String)> {
        self.refs_by_object()
            .filter(|(key, name)| {
                !self
                    .secrets
                    .contains_key(&(key.namespace.clone(), name.clone()))
            })
            .map(|(key, name)| (key.clone(), name))
            .collect()
    }

    /// Each TokenIntrospector and the name of every Secret it references.
    fn refs_by_object(&self) -> impl Iterator<Item = (&ObjectKey, String)> {
        self.objects
            .iter()
            .filter_map(|(key, e)| Some((key, e.held.spec.as_ref().ok()?.introspector()?)))
            .flat_map(|(key, spec)| {
                spec.secret_refs()
                    .into_iter()
                    .map(move |(_, r)| (key, r.name.clone()))
            })
    }

    pub fn contains(&self, key: &ObjectKey) -> bool {
        match key.kind {
            Kind::User => self.users.contains(&key.namespace, &key.name),
            _ => self.objects.contains_key(key),
        }
    }

    /// How many objects, of every kind.
    pub fn len(&self) -> usize {
        self.objects.len() + self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits every object of `kinds` into a new compiler, the root namespace's first
    /// (the root wins a conflict), then older objects first, each in its current version
    /// or else its last good one; and says of each what happened.
    pub fn compile(&mut self, kinds: &[Kind]) -> (Compiler, Vec<Verdict>) {
        // Room for every User at once: an index grown by doubling leaves its earlier
        // copies behind.
        let users = match kinds.contains(&Kind::User) {
            true => self.users.len(),
            false => 0,
        };
        let mut compiler = Compiler::with_user_capacity(users).scoped(self.root.clone());
        if let Some(bytes) = self.max_regex_bytes {
            compiler = compiler.max_regex_bytes(bytes);
        }
        self.compile_into(compiler, kinds, None)
    }

    /// [`ClusterIndex::compile`] of the objects of `teams` only, every other scope taken
    /// from `previous` as it is.
    pub fn compile_teams(
        &mut self,
        previous: Arc<Snapshot>,
        teams: &[String],
    ) -> (Compiler, Vec<Verdict>) {
        let compiler = Compiler::rebuilding(previous, teams);
        self.compile_into(compiler, &Kind::CONFIG, Some(teams))
    }

    fn compile_into(
        &mut self,
        mut compiler: Compiler,
        kinds: &[Kind],
        teams: Option<&[String]>,
    ) -> (Compiler, Vec<Verdict>) {
        let Self {
            root,
            objects,
            users,
            secrets,
            clashing_users,
            ..
        } = self;
        let root = root.as_deref();
        let team = |namespace: &str| team_of(root, Some(namespace)).is_some();
        let mut verdicts = Vec::new();
        for &kind in kinds {
            if kind == Kind::User {
                // Positions, sorted as the other kinds: no key is copied.
                let mut order: Vec<usize> = (0..users.len()).collect();
                let values = users.values();
                let by = |at: usize| {
                    let user = &values[at];
                    let (namespace, name) = split(user.name());
                    (
                        (team(namespace), user.entry.held.created),
                        (namespace, name),
                    )
                };
                order.sort_by(|&a, &b| by(a).cmp(&by(b)));
                for at in order {
                    let user = &mut users.values_mut()[at];
                    let read = read_secret(secrets, "");
                    let checked = user
                        .entry
                        .held
                        .check(split(user.name()), read, &mut compiler);
                    let (ready, previous_serves) = settle(&mut user.entry, checked, &mut compiler);
                    if let Some(mut v) = verdict(&mut user.entry, ready, previous_serves) {
                        v.key = user.key();
                        verdicts.push(v);
                    }
                }
                continue;
            }
            let mut entries: Vec<(&ObjectKey, &mut Entry)> = objects
                .iter_mut()
                .filter(|(key, _)| key.kind == kind)
                .filter(|(key, _)| teams.is_none_or(|t| t.contains(&key.namespace)))
                .collect();
            let order = |key: &ObjectKey, e: &Entry| (team(&key.namespace), e.held.created);
            entries.sort_by(|(ka, a), (kb, b)| (order(ka, a), *ka).cmp(&(order(kb, b), *kb)));
            for (key, entry) in entries {
                let read = read_secret(secrets, &key.namespace);
                let checked = entry
                    .held
                    .check((&key.namespace, &key.name), read, &mut compiler);
                let (ready, previous_serves) = settle(entry, checked, &mut compiler);
                if let Some(mut v) = verdict(entry, ready, previous_serves) {
                    v.key = key.clone();
                    verdicts.push(v);
                }
            }
        }
        self.judged = true;
        if kinds.contains(&Kind::User) {
            *clashing_users = verdicts
                .iter()
                .filter(|v| v.key.kind == Kind::User && v.ready.reason == "Conflict")
                .count();
        }
        (compiler, verdicts)
    }

    /// Applies the changes of some Users to `users` in place: a User event costs a lookup
    /// and an insert, not a rebuild of every User. `None` when a change could shift
    /// another User's standing (an identifier clash now, or Users refused for one before):
    /// then [`ClusterIndex::compile`] them all, which settles clashes by age.
    pub fn update_users(
        &mut self,
        users: &mut UserIndex,
        changed: &BTreeSet<ObjectKey>,
    ) -> Option<Vec<Verdict>> {
        if self.clashing_users > 0 {
            return None;
        }
        let mut verdicts = Vec::with_capacity(changed.len());
        for key in changed {
            let name = qualified(Some(&key.namespace), &key.name);
            let found = match key.kind {
                Kind::User => self.users.get_mut(&key.namespace, &key.name),
                _ => None,
            };
            let Some(UserEntry { entry, .. }) = found else {
                users.remove(&name);
                continue;
            };
            let current = match &entry.held.spec {
                Ok(HeldSpec::User(user)) => Ok(user),
                Ok(HeldSpec::Config(_) | HeldSpec::Policy(_)) => return None,
                Err(e) => Err(Ready::refused("Invalid", std::slice::from_ref(&**e))),
            };
            let admitted = match current {
                Ok(user) => admit_known(users, None, user.clone()).map_err(Rejection::from),
                Err(_) => Ok(()),
            };
            let ready = match (current, admitted) {
                (_, Err(r)) if r.reason == RejectReason::Conflict => return None,
                (Ok(_), Err(r)) => Ready::from_rejection(&r),
                (Err(ready), _) => ready,
                (Ok(_), Ok(())) => {
                    entry.last_good = LastGood::Current;
                    Ready::accepted()
                }
            };
            if !ready.status {
                // `users` may be behind by more than this change: the earlier version that
                // serves is the one kept, not whichever it holds.
                if let LastGood::KeptUser(previous) = &entry.last_good {
                    if admit_known(users, None, previous.0.clone()).is_err() {
                        return None;
                    }
                }
            }
            let previous_serves = !ready.status && users.by_name(&name).is_some();
            if let Some(mut v) = verdict(entry, ready, previous_serves) {
                v.key = key.clone();
                verdicts.push(v);
            }
        }
        Some(verdicts)
    }

    /// The verdicts the writer's full queue dropped: sent again, whatever they say.
    pub fn undelivered(&mut self, verdicts: &[Verdict]) {
        for v in verdicts {
            let key = &v.key;
            let entry = match key.kind {
                Kind::User => (self.users.get_mut(&key.namespace, &key.name)).map(|u| &mut u.entry),
                _ => self.objects.get_mut(key),
            };
            if let Some(entry) = entry {
                entry.settled = false;
            }
        }
    }
}

/// Replaces the version of an entry with `held`; whether that touched it (a change to its
/// status alone does not).
fn replace(entry: &mut Entry, key: &ObjectKey, held: Held) -> bool {
    let touched = entry.held.generation != held.generation || entry.held.spec != held.spec;
    if touched && matches!(entry.last_good, LastGood::Current) {
        // The version being replaced compiled: keep it, in case this one does not.
        let generation = entry.held.generation;
        entry.last_good = match &entry.held.spec {
            Ok(HeldSpec::User(user)) => LastGood::KeptUser(Box::new((user.clone(), generation))),
            // Parsed (a policy from its text): kept only while a newer version fails.
            Ok(spec) => match spec.to_spec() {
                Ok(spec) => LastGood::Kept(Box::new(Resource {
                    name: key.name.clone(),
                    namespace: Some(key.namespace.clone()),
                    origin: Origin::Cluster { generation },
                    spec,
                    labels: None,
                })),
                Err(_) => LastGood::None,
            },
            Err(_) => LastGood::None,
        };
    }
    entry.held = held;
    touched
}

/// What the check of an entry ([`Held::check`]) makes of it: its `Ready`, and whether an
/// earlier version serves in its place. The version that compiled is the last good one.
fn settle(
    entry: &mut Entry,
    checked: Result<Option<Resource>, Ready>,
    compiler: &mut Compiler,
) -> (Ready, bool) {
    let ready = match checked {
        Ok(r) => {
            let secrets_filled_in = (entry.held.spec.as_ref().ok())
                .and_then(HeldSpec::introspector)
                .is_some_and(|ti| !ti.secret_refs().is_empty());
            entry.last_good = match r {
                // Kept, so that it serves on if a Secret goes.
                Some(r) if secrets_filled_in => LastGood::Kept(Box::new(r)),
                _ => LastGood::Current,
            };
            Ready::accepted()
        }
        Err(ready) => ready,
    };
    let previous_serves = !ready.status
        && match &entry.last_good {
            LastGood::Kept(previous) => compiler.admit(previous).is_ok(),
            LastGood::KeptUser(previous) => {
                let (user, generation) = &**previous;
                let origin = Origin::Cluster {
                    generation: *generation,
                };
                compiler.admit_user(user.clone(), &origin).is_ok()
            }
            LastGood::None | LastGood::Current => false,
        };
    (ready, previous_serves)
}

/// The verdict on `entry` (its `key` left for the caller to fill in), for the status
/// writer and the log of refusals; `None` when it is `Accepted` as its status says and so
/// was the last one ([`Entry::settled`]).
fn verdict(entry: &mut Entry, ready: Ready, previous_serves: bool) -> Option<Verdict> {
    let mut verdict = Verdict {
        key: ObjectKey {
            kind: Kind::User,
            namespace: String::new(),
            name: String::new(),
        },
        uid: entry.held.uid,
        generation: entry.held.generation,
        ready,
        previous_serves,
        observed: None,
    };
    let status = entry.held.status.as_deref();
    let says = verdict.ready.status && status.is_some_and(|s| verdict.said_by(s));
    let unchanged = says && entry.settled;
    entry.settled = says;
    if unchanged {
        return None;
    }
    verdict.observed = status.cloned();
    Some(verdict)
}

/// A Secret reference of an object in `namespace`, read from the Secrets the index holds.
fn read_secret<'a>(
    secrets: &'a HashMap<(String, String), Option<SecretData>>,
    namespace: &'a str,
) -> impl FnMut(&SecretKeyRef) -> Result<String, Ready> + 'a {
    move |r: &SecretKeyRef| {
        let missing = |message: String| Ready {
            status: false,
            reason: "SecretNotFound",
            message,
        };
        let data = secrets
            .get(&(namespace.to_string(), r.name.clone()))
            .and_then(Option::as_ref)
            .ok_or_else(|| missing(format!("Secret {namespace}/{} not found", r.name)))?;
        let bytes = data.get(&r.key).ok_or_else(|| {
            missing(format!(
                "Secret {namespace}/{} has no key {:?}",
                r.name, r.key
            ))
        })?;
        String::from_utf8(bytes.clone()).map_err(|_| Ready {
            status: false,
            reason: "Invalid",
            message: format!("Secret {namespace}/{} key {:?} is not UTF-8", r.name, r.key),
        })
    }
}

#[cfg(test)]
mod tests;
