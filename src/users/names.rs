//! The names of the cluster's Users at the last count (`--users on-demand`), so that a
//! request whose `box_user` or `sub` names no User skips the read by name: a first-time
//! subject costs one API call, by identifier, and a subject in steady use none.
//!
//! Kept as 32-bit keyed hashes of `namespace/name`, sorted: 4 bytes a User, 4 MB for a
//! million. A hash that two names share (about one chance in 4,000 per absent name at a
//! million Users) only costs a read by name that finds nothing; a name is never taken for
//! absent while it was counted. Names created by this replica since the count are added
//! as it creates them; other replicas' and `kubectl`'s are seen from the next count
//! (`--users-count-interval-secs`).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Names added since a count, remembered at most (past it, names are unknown until the
/// next count, and reads by name resume).
const MAX_SINCE: usize = 100_000;

#[derive(Debug, Default)]
pub struct UserNames {
    /// `None` until a count lists them, and after a count fails.
    inner: RwLock<Option<Names>>,
    hasher: RandomState,
    /// Bumped by each count: an answer that relied on a name being absent is believed
    /// until then.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Names {
    counted: Box<[u32]>,
    since: HashSet<u32>,
    /// Those added before the count began: one created while a count lists may be missing
    /// from it.
    before: HashSet<u32>,
}

/// The names of one count as it lists them.
pub struct NameList {
    hashes: Vec<u32>,
    hasher: RandomState,
}

impl NameList {
    pub fn add(&mut self, namespace: &str, name: &str) {
        self.hashes.push(hash(&self.hasher, namespace, name));
    }
}

fn hash(hasher: &RandomState, namespace: &str, name: &str) -> u32 {
    // A `(&str, &str)` hashes each part with its end marked: no two pairs run together.
    hasher.hash_one((namespace, name)) as u32
}

impl UserNames {
    /// An empty list for a count to fill.
    pub fn listing(&self) -> NameList {
        NameList {
            hashes: Vec::new(),
            hasher: self.hasher.clone(),
        }
    }

    /// A count's names replace the last count's, and those added since.
    pub fn listed(&self, list: NameList) {
        let mut hashes = list.hashes;
        hashes.sort_unstable();
        hashes.dedup();
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let before = inner.take().map(|last| last.since).unwrap_or_default();
        *inner = Some(Names {
            counted: hashes.into_boxed_slice(),
            since: HashSet::new(),
            before,
        });
        drop(inner);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A count failed: names are unknown, and read again, until one succeeds.
    pub fn unknown(&self) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A User this replica created (or adopted) since the last count.
    pub fn created(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = inner.as_mut() {
            if names.since.len() < MAX_SINCE {
                names.since.insert(hash(&self.hasher, namespace, name));
            } else {
                *inner = None;
            }
        }
    }

    /// Whether a User named `name` may be in `namespace`: `Some(false)` when the last
    /// count did not see it, nor was it created here since; `None` when names are not
    /// known (before the first count, after a failed one).
    pub fn may_exist(&self, namespace: &str, name: &str) -> Option<bool> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let names = inner.as_ref()?;
        let h = hash(&self.hasher, namespace, name);
        Some(
            names.counted.binary_search(&h).is_ok()
                || names.since.contains(&h)
                || names.before.contains(&h),
        )
    }

    /// Which count the names come from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_or_created_name_may_exist_and_no_other() {
        let names = UserNames::default();
        assert_eq!(names.may_exist("team", "ann"), None, "not counted yet");
        names.created("team", "ann");
        assert_eq!(names.may_exist("team", "ann"), None);
        let g = names.generation();
        let mut list = names.listing();
        for i in 0..10_000 {
            list.add("team", &format!("user-{i}"));
        }
        list.add("other", "ann");
        names.listed(list);
        assert!(names.generation() > g);
        assert_eq!(names.may_exist("team", "user-9999"), Some(true));
        assert_eq!(names.may_exist("other", "ann"), Some(true));
        // Another namespace's User, or parts that would run together, are not this one.
        assert_eq!(names.may_exist("team", "ann"), Some(false));
        assert_eq!(names.may_exist("teamu", "ser-1"), Some(false));
        names.created("team", "ann");
        assert_eq!(names.may_exist("team", "ann"), Some(true));
        // The next count may have begun before it was created: it is kept through that
        // count, and the one after replaces it; a failed one forgets the names.
        names.listed(names.listing());
        assert_eq!(names.may_exist("team", "ann"), Some(true));
        names.listed(names.listing());
        assert_eq!(names.may_exist("team", "ann"), Some(false));
        names.unknown();
        assert_eq!(names.may_exist("team", "ann"), None);
    }

    #[test]
    fn few_absent_names_are_taken_for_present() {
        let names = UserNames::default();
        let mut list = names.listing();
        for i in 0..100_000 {
            list.add("team", &format!("user-{i}"));
        }
        names.listed(list);
        let present = (0..100_000)
            .filter(|i| names.may_exist("team", &format!("absent-{i}")) == Some(true))
            .count();
        // 100,000 names in 2^32: about 2 in 100,000 absent names share a hash.
        assert!(present < 20, "{present}");
    }
}
