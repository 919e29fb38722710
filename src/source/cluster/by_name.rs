//! [`ByName`]: values found by `namespace/name`, for the 100,000 Users of the cluster
//! index. Each value gives its own name back ([`Named`]), so that no name is held twice:
//! a User's is in its text already. A `BTreeMap<ObjectKey, _>` held each key's two strings
//! again, in nodes a third empty.

use std::hash::{BuildHasher, Hasher, RandomState};

use hashbrown::HashTable;

/// A value that knows its name, `namespace/name`.
pub trait Named {
    fn name(&self) -> &str;
}

/// `(namespace, name)` of a `namespace/name`; `("", name)` without a `/`.
pub fn split(qualified: &str) -> (&str, &str) {
    qualified.rsplit_once('/').unwrap_or(("", qualified))
}

/// Values by name, in a `Vec` (a removal moves the last value into the hole) with a table
/// of positions.
pub struct ByName<V> {
    values: Vec<V>,
    table: HashTable<u32>,
    hasher: RandomState,
}

impl<V> Default for ByName<V> {
    fn default() -> Self {
        ByName {
            values: Vec::new(),
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

fn position(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 4 billion objects")
}

impl<V: Named> ByName<V> {
    /// The one hash of a name, from its parts as a lookup has them.
    fn hash(hasher: &RandomState, namespace: &str, name: &str) -> u64 {
        let mut h = hasher.build_hasher();
        h.write(namespace.as_bytes());
        h.write_u8(b'/');
        h.write(name.as_bytes());
        h.finish()
    }

    fn hash_of(hasher: &RandomState, value: &V) -> u64 {
        let (namespace, name) = split(value.name());
        Self::hash(hasher, namespace, name)
    }

    fn find(&self, namespace: &str, name: &str) -> Option<usize> {
        let hash = Self::hash(&self.hasher, namespace, name);
        let values = &self.values;
        self.table
            .find(hash, |&p| {
                split(values[p as usize].name()) == (namespace, name)
            })
            .map(|&p| p as usize)
    }

    pub fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut V> {
        let at = self.find(namespace, name)?;
        Some(&mut self.values[at])
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.find(namespace, name).is_some()
    }

    /// Adds a value whose name is not there yet (see [`ByName::get_mut`]).
    pub fn insert_new(&mut self, value: V) {
        debug_assert!({
            let (namespace, name) = split(value.name());
            !self.contains(namespace, name)
        });
        let Self {
            values,
            table,
            hasher,
        } = self;
        let hash = Self::hash_of(hasher, &value);
        let at = position(values.len());
        values.push(value);
        table.insert_unique(hash, at, |&p| Self::hash_of(hasher, &values[p as usize]));
    }

    /// Takes a value out; the last one moves into its place.
    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<V> {
        let at = self.find(namespace, name)?;
        Some(self.remove_at(at))
    }

    fn remove_at(&mut self, at: usize) -> V {
        let Self {
            values,
            table,
            hasher,
        } = self;
        let hash = Self::hash_of(hasher, &values[at]);
        if let Ok(entry) = table.find_entry(hash, |&p| p as usize == at) {
            entry.remove();
        }
        let last = values.len() - 1;
        let removed = values.swap_remove(at);
        if at != last {
            let hash = Self::hash_of(hasher, &values[at]);
            if let Some(p) = table.find_mut(hash, |&p| p as usize == last) {
                *p = position(at);
            }
        }
        removed
    }

    /// Keeps the values `keep` says, handing each other one to `removed`.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool, mut removed: impl FnMut(V)) {
        let mut at = 0;
        while at < self.values.len() {
            if keep(&self.values[at]) {
                at += 1;
            } else {
                // The last value moves here: look at this place again.
                removed(self.remove_at(at));
            }
        }
    }

    /// Room for `more` values, so that a list of many does not grow the `Vec` by doubling
    /// (each doubling leaves the copy before it behind).
    pub fn reserve(&mut self, more: usize) {
        let Self {
            values,
            table,
            hasher,
        } = self;
        values.reserve_exact(more);
        table.reserve(more, |&p| Self::hash_of(hasher, &values[p as usize]));
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> &[V] {
        &self.values
    }

    /// Every value, to change in place: not its name.
    pub fn values_mut(&mut self) -> &mut [V] {
        &mut self.values
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(String, u32);

    impl Named for Item {
        fn name(&self) -> &str {
            &self.0
        }
    }

    fn names(by: &ByName<Item>) -> Vec<&str> {
        let mut names: Vec<&str> = by.values().iter().map(|v| v.0.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn finds_changes_and_removes_by_namespace_and_name() {
        let mut by = ByName::default();
        by.reserve(3);
        for (n, name) in ["a/x", "a/y", "b/x", "plain"].into_iter().enumerate() {
            by.insert_new(Item(name.into(), n as u32));
        }
        assert!(by.contains("a", "x") && by.contains("b", "x") && by.contains("", "plain"));
        assert!(!by.contains("a", "b/x") && !by.contains("a/b", "x") && !by.contains("b", "y"));
        by.get_mut("b", "x").unwrap().1 = 9;
        assert_eq!(by.remove("a", "x"), Some(Item("a/x".into(), 0)));
        assert_eq!(by.remove("a", "x"), None);
        // The value moved into the hole is still found.
        assert_eq!(by.get_mut("b", "x").map(|v| v.1), Some(9));
        assert_eq!(names(&by), ["a/y", "b/x", "plain"]);
        by.insert_new(Item("a/x".into(), 7));
        assert_eq!(by.len(), 4);
        assert_eq!(by.get_mut("a", "x").map(|v| v.1), Some(7));
    }

    #[test]
    fn retain_hands_over_what_it_drops_and_keeps_the_rest_findable() {
        let mut by = ByName::default();
        for i in 0..100u32 {
            by.insert_new(Item(format!("ns-{}/item-{i}", i % 3), i));
        }
        let mut dropped = Vec::new();
        by.retain(|v| v.1 % 3 != 0 && v.1 % 7 != 0, |v| dropped.push(v.1));
        dropped.sort();
        let expected: Vec<u32> = (0..100).filter(|i| i % 3 == 0 || i % 7 == 0).collect();
        assert_eq!(dropped, expected);
        for i in 0..100u32 {
            let found = by.get_mut(&format!("ns-{}", i % 3), &format!("item-{i}"));
            assert_eq!(found.map(|v| v.1), (!expected.contains(&i)).then_some(i));
        }
        assert_eq!(by.len(), 100 - expected.len());
    }
}
