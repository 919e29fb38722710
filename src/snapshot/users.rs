//! Users by name and by identifier, kept compact: a snapshot may hold 100,000 of them.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use serde_json::{json, Map, Value};
use smallvec::SmallVec;

use crate::resources::{Identifier, UserSpec};

/// A User that portcullis knows (configured, from the cluster, or created), as the index
/// keeps it and policies see it (`user` in the request context). The resource itself, as
/// written in a file or the API, is [`crate::resources::User`].
///
/// All its text sits in one shared allocation, so a clone is a reference count and a User
/// costs about 200 bytes, where its spec as JSON maps costs about 900.
#[derive(Clone, PartialEq)]
pub struct KnownUser {
    /// The name, `data` as JSON, the email, then each identifier's system and value.
    text: Arc<str>,
    /// Where each piece of `text` ends, in that order.
    ends: SmallVec<[u32; 5]>,
    has_data: bool,
    has_email: bool,
    inactive: Option<bool>,
}

const NAME: usize = 0;
const DATA: usize = 1;
const EMAIL: usize = 2;
const FIRST_IDENTIFIER: usize = 3;

impl KnownUser {
    /// Callers bound the size: configuration refuses a User over [`MAX_USER_BYTES`] (after
    /// reading it whole), and userinfo answers are limited to 64 KiB.
    pub fn new(name: &str, spec: &UserSpec) -> Self {
        let data = spec.data.as_ref().map(Value::to_string);
        let mut text = String::with_capacity(
            name.len()
                + data.as_ref().map_or(0, String::len)
                + spec.email.as_ref().map_or(0, String::len)
                + spec
                    .identifier
                    .iter()
                    .map(|i| i.system.len() + i.value.len())
                    .sum::<usize>(),
        );
        let mut ends = SmallVec::new();
        let mut push = |s: &str| {
            text.push_str(s);
            ends.push(u32::try_from(text.len()).expect("a User is bounded well under 4 GiB"));
        };
        push(name);
        push(data.as_deref().unwrap_or(""));
        push(spec.email.as_deref().unwrap_or(""));
        for id in &spec.identifier {
            push(&id.system);
            push(&id.value);
        }
        Self {
            text: text.into(),
            ends,
            has_data: data.is_some(),
            has_email: spec.email.is_some(),
            inactive: spec.inactive,
        }
    }

    fn piece(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Bytes of text: name, data, email and identifiers.
    pub fn size(&self) -> usize {
        self.text.len()
    }

    /// The name the index knows it by: `namespace/name` from the cluster.
    pub fn name(&self) -> &str {
        self.piece(NAME)
    }

    /// `metadata.name`: what `x-portcullis-user` and `user.id` show.
    pub fn object_name(&self) -> &str {
        super::object_name(self.name())
    }

    pub fn email(&self) -> Option<&str> {
        self.has_email.then(|| self.piece(EMAIL))
    }

    /// `(system, value)` of each identifier, in order.
    pub fn identifiers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.identifier_count()).map(|i| self.identifier(i))
    }

    fn identifier_count(&self) -> usize {
        (self.ends.len() - FIRST_IDENTIFIER) / 2
    }

    fn identifier(&self, i: usize) -> (&str, &str) {
        let at = FIRST_IDENTIFIER + 2 * i;
        (self.piece(at), self.piece(at + 1))
    }

    pub fn has_identifier(&self, system: &str, value: &str) -> bool {
        self.identifiers().any(|id| id == (system, value))
    }

    pub fn is_active(&self) -> bool {
        !self.inactive.unwrap_or(false)
    }

    /// `data`, parsed: `{}` when the User has none.
    pub fn data(&self) -> Value {
        if !self.has_data {
            return Value::Object(Map::new());
        }
        // Serialized by `new` from a Value: it parses.
        serde_json::from_str(self.piece(DATA)).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// `{id, data, identifier, email?}`: the shape of `user` in the request context.
    pub fn to_context(&self) -> Value {
        let mut v = Map::with_capacity(4);
        v.insert("id".into(), json!(self.object_name()));
        v.insert("data".into(), self.data());
        v.insert(
            "identifier".into(),
            Value::Array(
                self.identifiers()
                    .map(|(system, value)| json!({"system": system, "value": value}))
                    .collect(),
            ),
        );
        if let Some(email) = self.email() {
            v.insert("email".into(), json!(email));
        }
        Value::Object(v)
    }

    /// The User as a resource spec again, e.g. to write it out.
    pub fn spec(&self) -> UserSpec {
        UserSpec {
            data: self.has_data.then(|| self.data()),
            identifier: self
                .identifiers()
                .map(|(system, value)| Identifier {
                    system: system.into(),
                    value: value.into(),
                })
                .collect(),
            email: self.email().map(str::to_owned),
            inactive: self.inactive,
        }
    }
}

/// The largest User configuration accepts: Kubernetes stores objects up to about 1.5 MiB.
pub const MAX_USER_BYTES: usize = 1 << 20;

impl fmt::Debug for KnownUser {
    // Only the name: `data` and identifiers are personal data, and Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

/// Users by name and by identifier `(system, value)`.
///
/// The tables hold positions in `users`, not copies of the keys: the keys are read back from
/// the User itself.
#[derive(Default, Clone)]
pub struct UserIndex {
    users: Vec<KnownUser>,
    by_name: HashTable<u32>,
    /// `(position, identifier number)`.
    by_identifier: HashTable<(u32, u32)>,
    hasher: KeyHasher,
}

/// How the tables hash their keys: one definition for lookups, inserts and rehashes.
#[derive(Default, Clone)]
struct KeyHasher(RandomState);

impl KeyHasher {
    fn name(&self, name: &str) -> u64 {
        self.0.hash_one(name)
    }

    fn identifier(&self, id: (&str, &str)) -> u64 {
        self.0.hash_one(id)
    }
}

impl fmt::Debug for UserIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserIndex")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

fn position(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 4 billion Users")
}

impl UserIndex {
    pub fn with_capacity(users: usize) -> Self {
        UserIndex {
            users: Vec::with_capacity(users),
            by_name: HashTable::with_capacity(users),
            by_identifier: HashTable::with_capacity(users),
            hasher: KeyHasher::default(),
        }
    }

    /// Adds or replaces (by name) a user. Returns the name of another user that already
    /// claimed one of its identifiers, if any (the first one keeps it).
    pub fn insert(&mut self, user: KnownUser) -> Option<String> {
        let Self {
            users,
            by_name,
            by_identifier,
            hasher,
        } = self;
        let name_hash = hasher.name(user.name());
        let found = by_name
            .find(name_hash, |&p| users[p as usize].name() == user.name())
            .copied();
        let pos = match found {
            Some(pos) => {
                for (i, id) in users[pos as usize].identifiers().enumerate() {
                    let own = |&(p, k): &(u32, u32)| p == pos && k as usize == i;
                    if let Ok(entry) = by_identifier.find_entry(hasher.identifier(id), own) {
                        entry.remove();
                    }
                }
                users[pos as usize] = user;
                pos
            }
            None => {
                let pos = position(users.len());
                users.push(user);
                by_name.insert_unique(name_hash, pos, |&p| hasher.name(users[p as usize].name()));
                pos
            }
        };
        let mut clash = None;
        for (i, id) in users[pos as usize].identifiers().enumerate() {
            let hash = hasher.identifier(id);
            let holder = by_identifier
                .find(hash, |&(p, k)| {
                    users[p as usize].identifier(k as usize) == id
                })
                .map(|&(p, _)| p);
            match holder {
                Some(p) if p != pos => clash = Some(users[p as usize].name().to_owned()),
                Some(_) => {} // the same identifier twice in one User
                None => {
                    by_identifier.insert_unique(hash, (pos, position(i)), |&(p, k)| {
                        hasher.identifier(users[p as usize].identifier(k as usize))
                    });
                }
            }
        }
        clash
    }

    /// Takes a User out by name; the last User moves into its place.
    pub fn remove(&mut self, name: &str) -> Option<KnownUser> {
        let Self {
            users,
            by_name,
            by_identifier,
            hasher,
        } = self;
        let entry = by_name
            .find_entry(hasher.name(name), |&p| users[p as usize].name() == name)
            .ok()?;
        let pos = *entry.get();
        entry.remove();
        for (i, id) in users[pos as usize].identifiers().enumerate() {
            let own = |&(p, k): &(u32, u32)| p == pos && k as usize == i;
            if let Ok(entry) = by_identifier.find_entry(hasher.identifier(id), own) {
                entry.remove();
            }
        }
        let last = position(users.len() - 1);
        let removed = users.swap_remove(pos as usize);
        if last != pos {
            let moved = &users[pos as usize];
            if let Some(p) = by_name.find_mut(hasher.name(moved.name()), |&p| p == last) {
                *p = pos;
            }
            for (i, id) in moved.identifiers().enumerate() {
                let was = |&(p, k): &(u32, u32)| p == last && k as usize == i;
                if let Some(entry) = by_identifier.find_mut(hasher.identifier(id), was) {
                    entry.0 = pos;
                }
            }
        }
        Some(removed)
    }

    /// Frees the room left by growth, once every User is in.
    pub fn shrink_to_fit(&mut self) {
        let Self {
            users,
            by_name,
            by_identifier,
            hasher,
        } = self;
        users.shrink_to_fit();
        by_name.shrink_to_fit(|&p| hasher.name(users[p as usize].name()));
        by_identifier
            .shrink_to_fit(|&(p, k)| hasher.identifier(users[p as usize].identifier(k as usize)));
    }

    /// Where the User of this name sits among [`UserIndex::users`]: Users inserted one
    /// after another, none replaced or removed, sit in that order.
    pub fn position(&self, name: &str) -> Option<usize> {
        let hash = self.hasher.name(name);
        self.by_name
            .find(hash, |&p| self.users[p as usize].name() == name)
            .map(|&p| p as usize)
    }

    pub fn by_name(&self, name: &str) -> Option<&KnownUser> {
        self.position(name).map(|p| &self.users[p])
    }

    pub fn by_identifier(&self, system: &str, value: &str) -> Option<&KnownUser> {
        let hash = self.hasher.identifier((system, value));
        self.by_identifier
            .find(hash, |&(p, k)| {
                self.users[p as usize].identifier(k as usize) == (system, value)
            })
            .map(|&(p, _)| &self.users[p as usize])
    }

    /// Every User, in insertion order.
    pub fn users(&self) -> impl Iterator<Item = &KnownUser> {
        self.users.iter()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ids: &[(&str, &str)]) -> UserSpec {
        UserSpec {
            data: Some(json!({"name": "Ann", "roles": ["nurse"]})),
            identifier: ids
                .iter()
                .map(|(s, v)| Identifier {
                    system: (*s).into(),
                    value: (*v).into(),
                })
                .collect(),
            email: Some("ann@example.com".into()),
            inactive: Some(false),
        }
    }

    #[test]
    fn a_removed_user_is_gone_and_the_one_moved_into_its_place_is_still_found() {
        let mut index = UserIndex::default();
        for (name, id) in [("a", "1"), ("b", "2"), ("c", "3")] {
            assert!(index
                .insert(KnownUser::new(name, &spec(&[("s", id)])))
                .is_none());
        }
        assert_eq!(index.remove("a").unwrap().name(), "a");
        assert!(index.remove("a").is_none());
        assert!(index.by_name("a").is_none() && index.by_identifier("s", "1").is_none());
        for (name, id) in [("b", "2"), ("c", "3")] {
            assert_eq!(index.by_name(name).unwrap().name(), name);
            assert_eq!(index.by_identifier("s", id).unwrap().name(), name);
        }
        // The freed identifier can be taken again.
        assert!(index
            .insert(KnownUser::new("d", &spec(&[("s", "1")])))
            .is_none());
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn a_user_gives_back_its_spec_and_context() {
        let s = spec(&[("keycloak", "k-1"), ("google", "g-1")]);
        let u = KnownUser::new("ann", &s);
        assert_eq!(u.name(), "ann");
        assert_eq!(u.spec(), s);
        assert_eq!(
            u.to_context(),
            json!({"id": "ann", "data": {"name": "Ann", "roles": ["nurse"]},
                   "identifier": [{"system": "keycloak", "value": "k-1"},
                                  {"system": "google", "value": "g-1"}],
                   "email": "ann@example.com"})
        );
        let bare = KnownUser::new("bob", &UserSpec::default());
        assert_eq!(bare.spec(), UserSpec::default());
        assert_eq!(
            bare.to_context(),
            json!({"id": "bob", "data": {}, "identifier": []})
        );
        assert!(
            !format!("{u:?}").contains("Ann"),
            "Debug shows no personal data"
        );
    }

    #[test]
    fn finds_by_name_and_identifier_and_replaces_by_name() {
        let mut index = UserIndex::default();
        assert_eq!(
            index.insert(KnownUser::new("ann", &spec(&[("kc", "1")]))),
            None
        );
        assert_eq!(
            index.insert(KnownUser::new("bob", &spec(&[("kc", "2")]))),
            None
        );
        assert_eq!(index.by_name("ann").unwrap().name(), "ann");
        assert_eq!(index.by_identifier("kc", "2").unwrap().name(), "bob");
        assert!(index.by_identifier("kc", "3").is_none());
        assert!(index.by_identifier("other", "1").is_none());

        // Replacing ann moves her identifier; the old one no longer finds her.
        assert_eq!(
            index.insert(KnownUser::new("ann", &spec(&[("kc", "9")]))),
            None
        );
        assert_eq!(index.len(), 2);
        assert!(index.by_identifier("kc", "1").is_none());
        assert_eq!(index.by_identifier("kc", "9").unwrap().name(), "ann");
    }

    #[test]
    fn the_first_holder_keeps_a_shared_identifier() {
        let mut index = UserIndex::default();
        index.insert(KnownUser::new("ann", &spec(&[("kc", "1")])));
        assert_eq!(
            index.insert(KnownUser::new("eve", &spec(&[("kc", "1"), ("kc", "1")]))),
            Some("ann".to_owned())
        );
        assert_eq!(index.by_identifier("kc", "1").unwrap().name(), "ann");
        assert_eq!(index.by_name("eve").unwrap().name(), "eve");
    }

    #[test]
    fn system_and_value_do_not_run_together() {
        let mut index = UserIndex::default();
        index.insert(KnownUser::new("ann", &spec(&[("ab", "c")])));
        assert!(index.by_identifier("a", "bc").is_none());
    }
}
