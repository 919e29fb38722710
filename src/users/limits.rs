//! Bounds on creating Users (docs/users.md, "Limits"): a rate per IdentityProvider, a cap
//! per namespace and a cap in all. Past one, the request goes on without a User, as when
//! the identity provider is down.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;

use super::names::UserNames;

/// `--user-create-rate`, `--user-create-burst`, `--max-users-per-namespace`, `--max-users`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreationLimits {
    /// Users created per second, per IdentityProvider, once the burst is spent.
    pub rate: f64,
    /// Users an IdentityProvider may create at once, after a quiet spell.
    pub burst: u32,
    /// Users per namespace (file mode has none: the cap applies to all Users).
    pub max_per_namespace: usize,
    /// Users in all.
    pub max_total: usize,
}

pub const DEFAULT_CREATE_RATE: f64 = 10.0;
pub const DEFAULT_CREATE_BURST: u32 = 100;
pub const DEFAULT_MAX_USERS_PER_NAMESPACE: usize = 10_000;
pub const DEFAULT_MAX_USERS: usize = 100_000;

impl Default for CreationLimits {
    fn default() -> Self {
        CreationLimits {
            rate: DEFAULT_CREATE_RATE,
            burst: DEFAULT_CREATE_BURST,
            max_per_namespace: DEFAULT_MAX_USERS_PER_NAMESPACE,
            max_total: DEFAULT_MAX_USERS,
        }
    }
}

/// Why no User was created although one would have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The IdentityProvider's rate is spent for now.
    Rate,
    /// The namespace holds `--max-users-per-namespace` Users.
    Namespace,
    /// `--max-users` Users in all.
    Total,
    /// `--users on-demand`: the Users have not been counted yet, so the caps cannot be
    /// told (the first count runs at start-up).
    Uncounted,
}

impl Limit {
    /// The `user_events` event that counts it.
    pub fn event(self) -> &'static str {
        match self {
            Limit::Rate => "create_rate_limited",
            Limit::Namespace => "create_capped_namespace",
            Limit::Total => "create_capped_total",
            Limit::Uncounted => "create_uncounted",
        }
    }

    /// Why, for the trace and the log.
    pub fn describe(self, limits: &CreationLimits, provider: &str, namespace: &str) -> String {
        match self {
            Limit::Rate => format!(
                "IdentityProvider/{provider} is creating Users faster than --user-create-rate \
                 ({}/s, burst {}): none created this time",
                limits.rate, limits.burst
            ),
            Limit::Namespace if namespace.is_empty() => format!(
                "{} Users exist (--max-users-per-namespace): none created",
                limits.max_per_namespace
            ),
            Limit::Namespace => format!(
                "namespace {namespace} holds {} Users (--max-users-per-namespace): none created",
                limits.max_per_namespace
            ),
            Limit::Total => format!(
                "{} Users exist (--max-users): none created",
                limits.max_total
            ),
            Limit::Uncounted => "the cluster's Users have not been counted yet \
                 (--users on-demand), so the caps on creation cannot be told: none created"
                .to_string(),
        }
    }
}

/// How many Users exist, per namespace and in all, when no snapshot holds them
/// (`--users on-demand`): the last count of the cluster (a periodic metadata-only list),
/// plus the Users this replica created since that count began.
#[derive(Debug, Default)]
pub struct UserCounts {
    inner: Mutex<Counts>,
    /// Their names, from the same count.
    names: UserNames,
}

#[derive(Debug, Default)]
struct Counts {
    /// `None` until the first count.
    per_namespace: Option<HashMap<Box<str>, usize>>,
    total: usize,
}

impl UserCounts {
    /// A count of the cluster's Users, by namespace. Replaces the last one, and what was
    /// added to it since.
    pub fn counted(&self, per_namespace: HashMap<String, usize>) {
        let total = per_namespace.values().sum();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.per_namespace = Some(
            per_namespace
                .into_iter()
                .map(|(ns, n)| (ns.into_boxed_str(), n))
                .collect(),
        );
        inner.total = total;
    }

    /// A User created in `namespace` since the last count.
    pub fn created(&self, namespace: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Counts {
            per_namespace,
            total,
        } = &mut *inner;
        if let Some(counts) = per_namespace {
            *counts.entry(namespace.into()).or_default() += 1;
            *total += 1;
        }
    }

    /// The names of the Users counted.
    pub fn names(&self) -> &UserNames {
        &self.names
    }

    /// `(Users in all, Users in namespace)`; `None` before the first count.
    pub fn get(&self, namespace: &str) -> Option<(usize, usize)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let counts = inner.per_namespace.as_ref()?;
        Some((inner.total, counts.get(namespace).copied().unwrap_or(0)))
    }
}

/// A token bucket per IdentityProvider, on tokio's clock (so that tests can pause it).
pub(super) struct RateLimiters {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// How many IdentityProviders are remembered at once. A forgotten bucket was full (a full
/// bucket is what a new one is), so forgetting one never lets more through.
const MAX_BUCKETS: usize = 4_096;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiters {
    pub(super) fn new(limits: &CreationLimits) -> Self {
        RateLimiters {
            rate: limits.rate,
            burst: f64::from(limits.burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one creation from `provider`'s bucket; `false` when it is empty.
    pub(super) fn try_take(&self, provider: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(provider) && buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| self.refill(b, now) < self.burst);
            if buckets.len() >= MAX_BUCKETS {
                // Every remembered provider is busy: refuse rather than grow.
                return false;
            }
        }
        let bucket = buckets.entry(provider.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refill(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refill(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.burst)
    }

    #[cfg(test)]
    pub(super) fn remembered(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiters(rate: f64, burst: u32) -> RateLimiters {
        RateLimiters::new(&CreationLimits {
            rate,
            burst,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate_per_provider() {
        let l = limiters(10.0, 100);
        assert_eq!((0..1000).filter(|_| l.try_take("a")).count(), 100);
        // Another provider has its own bucket.
        assert_eq!((0..1000).filter(|_| l.try_take("b")).count(), 100);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!((0..1000).filter(|_| l.try_take("a")).count(), 15);
        // Never more than the burst, however long the quiet spell.
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!((0..1000).filter(|_| l.try_take("a")).count(), 100);
    }

    #[test]
    fn counts_are_the_last_list_plus_the_users_created_since() {
        let counts = UserCounts::default();
        counts.created("a");
        assert_eq!(counts.get("a"), None, "not counted yet");
        counts.counted([("a".to_string(), 2), ("b".to_string(), 3)].into());
        assert_eq!(counts.get("a"), Some((5, 2)));
        counts.created("a");
        counts.created("c");
        assert_eq!(counts.get("a"), Some((7, 3)));
        assert_eq!(counts.get("c"), Some((7, 1)));
        assert_eq!(counts.get("d"), Some((7, 0)));
        // The next count replaces what was added.
        counts.counted([("a".to_string(), 3)].into());
        assert_eq!(counts.get("a"), Some((3, 3)));
    }

    #[tokio::test(start_paused = true)]
    async fn remembers_a_bounded_number_of_providers() {
        let l = limiters(1.0, 1);
        for i in 0..MAX_BUCKETS {
            assert!(l.try_take(&format!("p{i}")));
        }
        // All busy: a new provider waits rather than grow the map.
        assert!(!l.try_take("new"));
        assert_eq!(l.remembered(), MAX_BUCKETS);
        // Once they are full again, they are forgotten to make room.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(l.try_take("new"));
        assert_eq!(l.remembered(), 1);
    }
}
