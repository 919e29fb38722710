//! Users by name and by identifier, kept compact: a snapshot may hold 100,000 of them.
//!
//! - [`UserIndex`]: the index itself, which a snapshot serves behind an `Arc`;
//! - [`admit`]: the one way a User is checked and put into an index (by the compiler, and
//!   by the cluster's in-place updates);
//! - [`UserIndexPair`]: two indexes taking turns, so that a User event from the cluster
//!   changes Users in place instead of copying them all.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::{KnownUser, MAX_USER_BYTES};
use crate::resources::{namespace_of, UserSpec};

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
    /// Users per namespace (the part of a name before `/`; `""` for names without one),
    /// for the caps on creation.
    per_namespace: HashMap<Box<str>, u32>,
}

/// How the tables hash their keys: one definition for lookups, inserts and rehashes.
#[derive(Default, Clone)]
struct KeyHasher(RandomState);

impl KeyHasher {
    fn name(&self, name: &str) -> u64 {
        self.0.hash_one(name)
    }

    /// An identifier is a User's within its namespace only: two namespaces may hold one.
    fn identifier(&self, namespace: Option<&str>, id: (&str, &str)) -> u64 {
        self.0.hash_one((namespace, id))
    }
}

impl fmt::Debug for UserIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserIndex")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Takes the identifiers of `user`, which sits at `pos`, out of the identifier table.
fn unlink_identifiers(
    by_identifier: &mut HashTable<(u32, u32)>,
    hasher: &KeyHasher,
    user: &KnownUser,
    pos: u32,
) {
    let namespace = namespace_of(user.name());
    for (i, id) in user.identifiers().enumerate() {
        let own = |&(p, k): &(u32, u32)| p == pos && k as usize == i;
        if let Ok(entry) = by_identifier.find_entry(hasher.identifier(namespace, id), own) {
            entry.remove();
        }
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
            per_namespace: HashMap::new(),
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
            per_namespace,
        } = self;
        let name_hash = hasher.name(user.name());
        let found = by_name
            .find(name_hash, |&p| users[p as usize].name() == user.name())
            .copied();
        let pos = match found {
            Some(pos) => {
                unlink_identifiers(by_identifier, hasher, &users[pos as usize], pos);
                users[pos as usize] = user;
                pos
            }
            None => {
                let namespace = namespace_of(user.name()).unwrap_or_default();
                match per_namespace.get_mut(namespace) {
                    Some(n) => *n += 1,
                    None => {
                        per_namespace.insert(namespace.into(), 1);
                    }
                }
                let pos = position(users.len());
                users.push(user);
                by_name.insert_unique(name_hash, pos, |&p| hasher.name(users[p as usize].name()));
                pos
            }
        };
        let mut clash = None;
        let namespace = namespace_of(users[pos as usize].name());
        for (i, id) in users[pos as usize].identifiers().enumerate() {
            let hash = hasher.identifier(namespace, id);
            let holder = by_identifier
                .find(hash, |&(p, k)| {
                    let u = &users[p as usize];
                    u.identifier(k as usize) == id && namespace_of(u.name()) == namespace
                })
                .map(|&(p, _)| p);
            match holder {
                Some(p) if p != pos => clash = Some(users[p as usize].name().to_owned()),
                Some(_) => {} // the same identifier twice in one User
                None => {
                    by_identifier.insert_unique(hash, (pos, position(i)), |&(p, k)| {
                        let u = &users[p as usize];
                        hasher.identifier(namespace_of(u.name()), u.identifier(k as usize))
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
            per_namespace,
        } = self;
        let entry = by_name
            .find_entry(hasher.name(name), |&p| users[p as usize].name() == name)
            .ok()?;
        let pos = *entry.get();
        entry.remove();
        unlink_identifiers(by_identifier, hasher, &users[pos as usize], pos);
        let last = position(users.len() - 1);
        let removed = users.swap_remove(pos as usize);
        let namespace = namespace_of(removed.name()).unwrap_or_default();
        if let Some(n) = per_namespace.get_mut(namespace) {
            *n -= 1;
            if *n == 0 {
                per_namespace.remove(namespace);
            }
        }
        if last != pos {
            let moved = &users[pos as usize];
            if let Some(p) = by_name.find_mut(hasher.name(moved.name()), |&p| p == last) {
                *p = pos;
            }
            let moved_namespace = namespace_of(moved.name());
            for (i, id) in moved.identifiers().enumerate() {
                let was = |&(p, k): &(u32, u32)| p == last && k as usize == i;
                let hash = hasher.identifier(moved_namespace, id);
                if let Some(entry) = by_identifier.find_mut(hash, was) {
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
            per_namespace: _,
        } = self;
        users.shrink_to_fit();
        by_name.shrink_to_fit(|&p| hasher.name(users[p as usize].name()));
        by_identifier.shrink_to_fit(|&(p, k)| {
            let u = &users[p as usize];
            hasher.identifier(namespace_of(u.name()), u.identifier(k as usize))
        });
    }

    /// Where the User of this name sits among [`UserIndex::users`]: Users inserted one
    /// after another, none replaced or removed, sit in that order.
    pub fn position(&self, name: &str) -> Option<usize> {
        // Hashing is most of a lookup's cost, and the overlay of created Users, asked on
        // every decision that finds no User in the snapshot, is nearly always empty.
        if self.users.is_empty() {
            return None;
        }
        let hash = self.hasher.name(name);
        self.by_name
            .find(hash, |&p| self.users[p as usize].name() == name)
            .map(|&p| p as usize)
    }

    pub fn by_name(&self, name: &str) -> Option<&KnownUser> {
        self.position(name).map(|p| &self.users[p])
    }

    /// The User of `namespace` (`None`: file mode's flat configuration) holding the
    /// identifier `(system, value)`. Another namespace's User is never found.
    pub fn by_identifier(
        &self,
        namespace: Option<&str>,
        system: &str,
        value: &str,
    ) -> Option<&KnownUser> {
        if self.users.is_empty() {
            return None;
        }
        let hash = self.hasher.identifier(namespace, (system, value));
        self.by_identifier
            .find(hash, |&(p, k)| {
                let u = &self.users[p as usize];
                u.identifier(k as usize) == (system, value) && namespace_of(u.name()) == namespace
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

    /// How many Users are in `namespace` (`""`: those whose name has no namespace, as in
    /// file mode).
    pub fn count_in(&self, namespace: &str) -> usize {
        self.per_namespace.get(namespace).map_or(0, |&n| n as usize)
    }
}

/// Why [`admit`] refused a User.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Larger than [`MAX_USER_BYTES`].
    #[error("larger than {MAX_USER_BYTES} bytes")]
    TooLarge,
    /// Another User holds one of its identifiers (the first one keeps it).
    #[error("already held by User/{holder}")]
    IdentifierHeld { holder: String },
}

/// Puts a User into `users`, replacing its earlier version (by `name`), unless it is too
/// large or another User holds one of its identifiers, in `users` or in `also` (the Users
/// served while a configuration is compiled anew).
pub fn admit(
    users: &mut UserIndex,
    also: Option<&UserIndex>,
    name: &str,
    spec: &UserSpec,
) -> Result<(), Refused> {
    admit_known(users, also, KnownUser::new(name, spec))
}

/// [`admit`] of a User already in its one form, named by [`KnownUser::name`]: the
/// cluster keeps its Users so and admits them again on a relist or a clash, and file mode
/// takes those of unchanged files again at a reload, without going back to a spec.
pub fn admit_known(
    users: &mut UserIndex,
    also: Option<&UserIndex>,
    user: KnownUser,
) -> Result<(), Refused> {
    if user.size() > MAX_USER_BYTES {
        return Err(Refused::TooLarge);
    }
    let name = user.name();
    let namespace = namespace_of(name);
    let holder = [Some(&*users), also]
        .into_iter()
        .flatten()
        .flat_map(|index| {
            user.identifiers()
                .filter_map(|(system, value)| index.by_identifier(namespace, system, value))
        })
        .find(|holder| holder.name() != name);
    if let Some(holder) = holder {
        return Err(Refused::IdentifierHeld {
            holder: holder.name().to_string(),
        });
    }
    users.insert(user);
    Ok(())
}

/// The Users served, changed in place where it can be done, without copying 100,000 Users
/// per event: two indexes take turns, as in a left-right map. The one served before (the
/// spare) is no longer read once the requests that loaded it finish; it is brought up to
/// date with the Users changed since it was served, and served next.
///
/// `K` names a changed User (the cluster's object key).
#[derive(Debug)]
pub struct UserIndexPair<K> {
    serving: Option<Arc<UserIndex>>,
    spare: Option<Arc<UserIndex>>,
    /// The Users changed since the spare was served.
    spare_behind: BTreeSet<K>,
}

impl<K> Default for UserIndexPair<K> {
    fn default() -> Self {
        UserIndexPair {
            serving: None,
            spare: None,
            spare_behind: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> UserIndexPair<K> {
    /// The Users served now; `None` before the first [`UserIndexPair::serve_rebuilt`].
    pub fn serving(&self) -> Option<&Arc<UserIndex>> {
        self.serving.as_ref()
    }

    /// The index to change in place into the next one, and the Users it must take again:
    /// the spare when no request reads it any more, with the changes it missed and
    /// `changed`; else a copy of the served one, with `changed`. `None` before the first
    /// build. The spare is given up either way: serve the result with
    /// [`UserIndexPair::serve_updated`], or build all over.
    pub fn take_next(&mut self, changed: &BTreeSet<K>) -> Option<(UserIndex, BTreeSet<K>)> {
        let behind = std::mem::take(&mut self.spare_behind);
        let spare = self.spare.take();
        let current = self.serving.as_ref()?;
        Some(match spare.and_then(|s| Arc::try_unwrap(s).ok()) {
            Some(spare) => (spare, behind.union(changed).cloned().collect()),
            // Still read somewhere: a copy.
            None => (UserIndex::clone(current), changed.clone()),
        })
    }

    /// Serves `next`, made from [`UserIndexPair::take_next`] by applying the changes; the
    /// index served until now becomes the spare, behind by `changed`.
    pub fn serve_updated(&mut self, next: UserIndex, changed: BTreeSet<K>) {
        self.spare = self.serving.replace(Arc::new(next));
        self.spare_behind = changed;
    }

    /// Gives up the spare, when the next Users will be built all over.
    pub fn drop_spare(&mut self) {
        self.spare = None;
        self.spare_behind.clear();
    }

    /// Serves Users built all over; no spare until the next update in place.
    pub fn serve_rebuilt(&mut self, users: UserIndex) {
        self.serving = Some(Arc::new(users));
        self.drop_spare();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Identifier;
    use serde_json::json;

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
    fn users_are_counted_per_namespace_through_inserts_replacements_and_removals() {
        let mut index = UserIndex::default();
        for name in ["a/x", "a/y", "b/x", "plain"] {
            index.insert(KnownUser::new(name, &spec(&[])));
        }
        // Replacing a User by name does not count it twice.
        index.insert(KnownUser::new("a/x", &spec(&[("s", "1")])));
        assert_eq!(
            (index.count_in("a"), index.count_in("b"), index.count_in("")),
            (2, 1, 1)
        );
        index.remove("a/y");
        index.remove("b/x");
        index.remove("b/x");
        assert_eq!((index.count_in("a"), index.count_in("b")), (1, 0));
        assert!(!index.per_namespace.contains_key("b"));
        assert_eq!(index.clone().count_in("a"), 1);
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
        assert!(index.by_name("a").is_none() && index.by_identifier(None, "s", "1").is_none());
        for (name, id) in [("b", "2"), ("c", "3")] {
            assert_eq!(index.by_name(name).unwrap().name(), name);
            assert_eq!(index.by_identifier(None, "s", id).unwrap().name(), name);
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
        assert_eq!(index.by_identifier(None, "kc", "2").unwrap().name(), "bob");
        assert!(index.by_identifier(None, "kc", "3").is_none());
        assert!(index.by_identifier(None, "other", "1").is_none());

        // Replacing ann moves her identifier; the old one no longer finds her.
        assert_eq!(
            index.insert(KnownUser::new("ann", &spec(&[("kc", "9")]))),
            None
        );
        assert_eq!(index.len(), 2);
        assert!(index.by_identifier(None, "kc", "1").is_none());
        assert_eq!(index.by_identifier(None, "kc", "9").unwrap().name(), "ann");
    }

    #[test]
    fn the_first_holder_keeps_a_shared_identifier() {
        let mut index = UserIndex::default();
        index.insert(KnownUser::new("ann", &spec(&[("kc", "1")])));
        assert_eq!(
            index.insert(KnownUser::new("eve", &spec(&[("kc", "1"), ("kc", "1")]))),
            Some("ann".to_owned())
        );
        assert_eq!(index.by_identifier(None, "kc", "1").unwrap().name(), "ann");
        assert_eq!(index.by_name("eve").unwrap().name(), "eve");
    }

    #[test]
    fn system_and_value_do_not_run_together() {
        let mut index = UserIndex::default();
        index.insert(KnownUser::new("ann", &spec(&[("ab", "c")])));
        assert!(index.by_identifier(None, "a", "bc").is_none());
    }

    #[test]
    fn the_pair_updates_the_spare_it_no_longer_serves() {
        let user = |name: &str| KnownUser::new(name, &spec(&[]));
        let keys = |k: &[&str]| k.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
        let mut pair = UserIndexPair::<String>::default();
        assert!(
            pair.take_next(&keys(&["a"])).is_none(),
            "nothing served yet"
        );
        let mut first = UserIndex::default();
        first.insert(user("a"));
        pair.serve_rebuilt(first);

        // No spare yet: a copy of the served index, to take `changed` only.
        let (mut next, catch_up) = pair.take_next(&keys(&["b"])).unwrap();
        assert_eq!((next.len(), catch_up), (1, keys(&["b"])));
        next.insert(user("b"));
        pair.serve_updated(next, keys(&["b"]));
        assert_eq!(pair.serving().unwrap().len(), 2);

        // The index served before is the spare: behind by `b`, and then by `c`.
        let (mut next, catch_up) = pair.take_next(&keys(&["c"])).unwrap();
        assert_eq!((next.len(), catch_up), (1, keys(&["b", "c"])));
        next.insert(user("b"));
        next.insert(user("c"));
        pair.serve_updated(next, keys(&["c"]));

        // A spare still read somewhere is not changed: the served index is copied.
        let reader = pair.spare.clone();
        let (next, catch_up) = pair.take_next(&keys(&["d"])).unwrap();
        assert_eq!((next.len(), catch_up), (3, keys(&["d"])));
        drop(reader);
        pair.drop_spare();
        assert!(pair.spare.is_none() && pair.spare_behind.is_empty());
    }
}
