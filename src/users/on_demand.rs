//! `--users on-demand` (docs/users.md, "Users on demand"): Users that no replica holds in
//! memory, read from where they are kept ([`UserLookup`], the cluster) behind a bounded,
//! expiring cache ([`OnDemand`]).
//!
//! - A subject seen before costs one lookup (what it found last, kept
//!   while every answer it came from is fresh), as a snapshot's index does.
//! - A miss reads only what may exist: a read by name is skipped when the last count of
//!   the cluster's Users ([`super::UserNames`]) has no User of that name, so a first-time
//!   subject costs one read, by identifier; when a User of that name may exist, it is read
//!   first, and by identifier only if it is not the subject's.
//! - Each key (a User by name, or by identifier) is read once however many requests ask
//!   at once: they join one flight, which runs in a task of its own, so that a request
//!   that gives up does not cancel the read the others wait for, and its answer is cached.
//! - An answer of "no such User" is cached too, for a shorter time; a failed read is not,
//!   but its key is not read again for [`LOOKUP_BACKOFF`] (those requests go on without a
//!   User at once rather than pile reads onto a failing API server).
//! - A request waits for a read at most until the time it is given (what the decision
//!   deadline leaves), then goes on without a User.
//!
//! Nothing here knows the cluster: [`UserLookup`] is implemented in `source/cluster/`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::find::{claimable, NameClaims};
use super::limits::UserCounts;
use super::{Found, KnownUser, Subject};
use crate::metrics::Metrics;

/// Reads Users from where they are kept. Futures are `'static` (they own what they need),
/// so that a read runs on in its own task when the request that started it goes.
pub trait UserLookup: Send + Sync + 'static {
    /// The User `name` of `namespace`, if one is there (and is one this replica serves:
    /// valid, within its selector). Named `namespace/name`.
    fn by_name(&self, namespace: &str, name: &str) -> BoxFuture<'static, LookupResult>;

    /// The User of `namespace` found by the identifier `{system, value}`: of the Users
    /// labelled with its hash that hold it, the oldest (as the watch mode keeps the first
    /// holder of an identifier).
    fn by_identifier(
        &self,
        namespace: &str,
        system: &str,
        value: &str,
    ) -> BoxFuture<'static, LookupResult>;
}

/// A User, none, or why the read failed.
pub type LookupResult = Result<Option<KnownUser>, String>;

/// After a read fails, how long its key is not read again: requests that need it go on
/// without a User meanwhile.
pub const LOOKUP_BACKOFF: Duration = Duration::from_secs(1);
/// Keys remembered as failing at once.
const FAILING_KEYS: u64 = 65_536;

/// `--users-cache-entries`, `--users-cache-ttl-secs`, `--users-cache-negative-ttl-secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Answers kept at once (a User, or that there is none), least used first out.
    pub entries: u64,
    /// How long a User read is used: an edit or a deletion is seen within it.
    pub ttl: Duration,
    /// How long "no such User" is believed: a User written by someone else (`kubectl`)
    /// is found within it. Creation asks again before it creates.
    pub negative_ttl: Duration,
}

pub const DEFAULT_CACHE_ENTRIES: u64 = 100_000;
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
pub const DEFAULT_CACHE_NEGATIVE_TTL: Duration = Duration::from_secs(10);

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            entries: DEFAULT_CACHE_ENTRIES,
            ttl: DEFAULT_CACHE_TTL,
            negative_ttl: DEFAULT_CACHE_NEGATIVE_TTL,
        }
    }
}

/// What a read of one key said, and until when it is believed.
#[derive(Clone)]
struct Answer {
    user: Option<KnownUser>,
    until: Instant,
}

/// Each entry lives until its own `until`.
struct Until;

impl moka::Expiry<Box<str>, Answer> for Until {
    fn expire_after_create(&self, _: &Box<str>, value: &Answer, now: Instant) -> Option<Duration> {
        Some(value.until.saturating_duration_since(now))
    }

    /// A User created here replaces the "none" read before: it lives as long as a User.
    fn expire_after_update(
        &self,
        _: &Box<str>,
        value: &Answer,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(now))
    }
}

/// A subject's answer, as [`OnDemand::find`] found it last.
#[derive(Clone)]
struct Resolved {
    user: KnownUser,
    /// Step 1 found it, else step 2: the rest of [`Found`] is the subject's own.
    by_name: bool,
    /// The first expiry of the answers it came from.
    until: Instant,
    /// The count of names it was found under: a later count may name a User that step 1
    /// now finds.
    generation: u64,
}

/// One subject being looked up, as [`OnDemand::find`] passes it on.
#[derive(Clone, Copy)]
struct Asking<'a> {
    key: SubjectParts<'a>,
    /// The count of names it looks under.
    generation: u64,
    namespace: &'a str,
    /// The token's own identifier, `(system, sub)`.
    own: Option<(&'a str, &'a str)>,
    name_claims: NameClaims,
}

/// What decides a subject's User: the namespace, the name step 1 looks for, the token's
/// own identifier `(system, sub)`, and the claiming rule. A request looks its subject up by
/// these parts, without building the key the cache keeps ([`SubjectKey`]); the table
/// compares them in full, so no hash decides who gets which User.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SubjectParts<'a> {
    fields: [Option<&'a [u8]>; 4],
    claims_by_name: bool,
}

impl<'a> SubjectParts<'a> {
    fn of(
        namespace: &'a str,
        name: Option<&'a str>,
        own: Option<(&'a str, &'a str)>,
        name_claims: NameClaims,
    ) -> Self {
        SubjectParts {
            fields: [
                Some(namespace.as_bytes()),
                name.map(str::as_bytes),
                own.map(|(system, _)| system.as_bytes()),
                own.map(|(_, sub)| sub.as_bytes()),
            ],
            claims_by_name: name_claims == NameClaims::Allowed,
        }
    }

    /// The key to keep: each field after its length (`u32::MAX` for none).
    fn key(&self) -> SubjectKey {
        let len = self.fields.iter().flatten().map(|f| f.len()).sum::<usize>();
        let mut bytes = Vec::with_capacity(len + 4 * self.fields.len() + 1);
        for field in self.fields {
            let marker = field.map_or(u32::MAX, |f| u32::try_from(f.len()).unwrap_or(u32::MAX));
            bytes.extend_from_slice(&marker.to_le_bytes());
            bytes.extend_from_slice(field.unwrap_or_default());
        }
        bytes.push(u8::from(self.claims_by_name));
        SubjectKey(bytes.into_boxed_slice())
    }
}

impl std::hash::Hash for SubjectParts<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for field in self.fields {
            match field {
                Some(field) => {
                    state.write_usize(field.len());
                    state.write(field);
                }
                None => state.write_usize(usize::MAX),
            }
        }
        state.write_u8(u8::from(self.claims_by_name));
    }
}

/// [`SubjectParts`] as the cache keeps them, in one block.
#[derive(Clone, PartialEq, Eq)]
struct SubjectKey(Box<[u8]>);

impl SubjectKey {
    fn parts(&self) -> SubjectParts<'_> {
        let mut rest = &self.0[..];
        let mut fields = [None; 4];
        for field in &mut fields {
            let (marker, after) = rest.split_at_checked(4).unwrap_or((&[0; 4], &[]));
            let marker = u32::from_le_bytes(marker.try_into().unwrap_or_default());
            rest = after;
            if marker != u32::MAX {
                let (bytes, after) = rest
                    .split_at_checked(marker as usize)
                    .unwrap_or((rest, &[]));
                *field = Some(bytes);
                rest = after;
            }
        }
        SubjectParts {
            fields,
            claims_by_name: rest.first() == Some(&1),
        }
    }
}

impl std::hash::Hash for SubjectKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl quick_cache::Equivalent<SubjectKey> for SubjectParts<'_> {
    fn equivalent(&self, key: &SubjectKey) -> bool {
        key.parts() == *self
    }
}

/// A read of one key; its answer as the cache keeps it.
type Flight = Shared<BoxFuture<'static, Result<Answer, String>>>;

/// What a request learned of one key without waiting, or the read to wait for.
enum Got {
    Cached(Answer),
    /// A read of it failed a moment ago.
    Failing(String),
    Flight(Flight),
}

/// The User of a subject looked up on demand: found, none, or the lookup failed (an
/// error, or no answer by the time the request could wait).
pub type Looked = Result<Option<(KnownUser, Found)>, LookupFailure>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupFailure {
    pub timed_out: bool,
    pub error: String,
}

/// Users read on demand, cached. Shared by the resolver and the creation of Users (which
/// puts what it creates in the cache, and reads the caps from [`OnDemand::counts`]).
pub struct OnDemand {
    lookup: Arc<dyn UserLookup>,
    settings: CacheSettings,
    /// By [`SubjectParts`]: the User a subject found, while the answers it came from last.
    /// quick_cache, not moka: this lookup is the whole cost of a known subject, and
    /// quick_cache's is a sharded table's (an expired entry is passed over on the way).
    subjects: quick_cache::sync::Cache<SubjectKey, Resolved>,
    /// By [`name_key`] or [`identifier_key`]: the User, or `None` for none.
    cache: moka::sync::Cache<Box<str>, Answer>,
    flights: Mutex<HashMap<Box<str>, Flight>>,
    /// Keys whose last read failed, and why.
    failing: moka::sync::Cache<Box<str>, String>,
    counts: Arc<UserCounts>,
    metrics: Arc<Metrics>,
}

impl OnDemand {
    /// Users read through `lookup`; `counts` is kept by whoever counts them (the cluster's
    /// periodic list).
    pub fn new(
        lookup: Arc<dyn UserLookup>,
        counts: Arc<UserCounts>,
        settings: CacheSettings,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(OnDemand {
            lookup,
            settings,
            subjects: quick_cache::sync::Cache::new(
                usize::try_from(settings.entries).unwrap_or(usize::MAX),
            ),
            cache: moka::sync::Cache::builder()
                .max_capacity(settings.entries)
                .expire_after(Until)
                .build(),
            flights: Mutex::new(HashMap::new()),
            failing: moka::sync::Cache::builder()
                .max_capacity(FAILING_KEYS)
                .time_to_live(LOOKUP_BACKOFF)
                .build(),
            counts,
            metrics,
        })
    }

    /// How many Users there are, for the caps on creation.
    pub fn counts(&self) -> &UserCounts {
        &self.counts
    }

    /// Steps 1 and 2 of resolution on Users read on demand, waiting for reads at most
    /// until `until`: a User by name (`box_user`, else `sub`), then by identifier, in the
    /// namespace of the introspector that accepted the token. Decides as
    /// [`super::find`] does on an index holding every User.
    pub async fn find(
        self: &Arc<Self>,
        subject: &Subject<'_>,
        name_claims: NameClaims,
        until: tokio::time::Instant,
    ) -> Looked {
        // Only from the cluster, where every token has a namespace.
        let Some(namespace) = subject.namespace else {
            return Ok(None);
        };
        let own = subject.system().zip(subject.sub);
        // The usual answer, at the cost of one lookup: what this subject found last.
        let key = SubjectParts::of(namespace, subject.name, own, name_claims);
        let generation = self.counts.names().generation();
        if let Some(hit) = self.subjects.get(&key) {
            if hit.generation == generation && hit.until > Instant::now() {
                let how = match (hit.by_name, subject.name, own) {
                    (true, Some(name), _) => Some(Found::ByName(qualified(namespace, name))),
                    (false, _, Some((system, value))) => Some(Found::ByIdentifier {
                        system: system.to_string(),
                        value: value.to_string(),
                    }),
                    // Not so: the key holds the parts that found it.
                    _ => None,
                };
                if let Some(how) = how {
                    return Ok(Some((hit.user, how)));
                }
            }
        }
        let names_known = subject
            .name
            .and_then(|name| self.counts.names().may_exist(namespace, name));
        let by_name = subject.name.map(|name| {
            let got = if names_known == Some(false) {
                // No User of that name at the last count, nor created here since.
                Got::Cached(Answer {
                    user: None,
                    until: Instant::now() + self.settings.ttl,
                })
            } else {
                self.get(name_key(namespace, name), || {
                    self.lookup.by_name(namespace, name)
                })
            };
            (name, got)
        });
        let by_identifier = |this: &Arc<Self>| match own {
            Some((system, value)) => this.get(identifier_key(namespace, system, value), || {
                this.lookup.by_identifier(namespace, system, value)
            }),
            None => Got::Cached(Answer {
                user: None,
                until: Instant::now() + this.settings.ttl,
            }),
        };
        // Step 2 is looked up at once unless step 1 has its answer cached, or will read a
        // name that a User is known to have: that User is usually the subject's, so it is
        // read first, alone. Otherwise both are read at once, one round trip of waiting.
        let name_first = match &by_name {
            Some((_, Got::Cached(answer))) => answer
                .user
                .as_ref()
                .is_some_and(|user| claimable(user, own, name_claims)),
            Some((_, Got::Flight(_))) => names_known == Some(true),
            _ => false,
        };
        let identifier = (!name_first).then(|| by_identifier(self));
        let asking = Asking {
            key,
            generation,
            namespace,
            own,
            name_claims,
        };
        let ready = |got: &Got| !matches!(got, Got::Flight(_));
        if by_name.as_ref().is_none_or(|(_, got)| ready(got))
            && identifier.as_ref().is_none_or(ready)
        {
            // Everything cached (or failing): no waiting.
            let name = match by_name {
                Some((name, got)) => Some((name, settled(got)?)),
                None => None,
            };
            let identifier = identifier.map(settled).transpose()?;
            return Ok(self.decide(asking, name, identifier));
        }
        let wait = async move {
            let name = match by_name {
                Some((name, got)) => Some((name, answer(got).await?)),
                None => None,
            };
            let identifier = match identifier {
                Some(got) => got,
                None => match self.decide(asking, name.clone(), None) {
                    Some(found) => return Ok(Some(found)),
                    None => by_identifier(self),
                },
            };
            let identifier = answer(identifier).await?;
            Ok(self.decide(asking, name, Some(identifier)))
        };
        match tokio::time::timeout_at(until, Box::pin(wait)).await {
            Ok(looked) => looked,
            Err(_) => {
                self.metrics.user_event("lookup_timeout");
                Err(LookupFailure {
                    timed_out: true,
                    error: "no answer from the API server within the decision deadline; \
                            the read goes on for the next request"
                        .into(),
                })
            }
        }
    }

    /// Step 1 (a claimable User by name), else step 2 (the User by identifier, when it
    /// was looked up); what is found is kept for the subject.
    fn decide(
        &self,
        asking: Asking<'_>,
        by_name: Option<(&str, Answer)>,
        by_identifier: Option<Answer>,
    ) -> Option<(KnownUser, Found)> {
        let Asking {
            key,
            generation,
            namespace,
            own,
            name_claims,
        } = asking;
        let mut until = None;
        if let Some((name, answer)) = by_name {
            if let Some(user) = answer.user {
                if claimable(&user, own, name_claims) {
                    let how = Found::ByName(qualified(namespace, name));
                    return Some(self.keep(key, generation, user, how, answer.until));
                }
            }
            until = Some(answer.until);
        }
        let (system, value) = own?;
        let by_identifier = by_identifier?;
        // The read returns a User that holds the identifier; checked again all the same, as
        // the index checks what it finds.
        let user = by_identifier
            .user
            .filter(|user| user.has_identifier(system, value))?;
        let how = Found::ByIdentifier {
            system: system.to_string(),
            value: value.to_string(),
        };
        let until = until.map_or(by_identifier.until, |u| u.min(by_identifier.until));
        Some(self.keep(key, generation, user, how, until))
    }

    /// Keeps what a subject found, and hands it out.
    fn keep(
        &self,
        key: SubjectParts<'_>,
        generation: u64,
        user: KnownUser,
        how: Found,
        until: Instant,
    ) -> (KnownUser, Found) {
        let resolved = Resolved {
            user: user.clone(),
            by_name: matches!(how, Found::ByName(_)),
            until,
            generation,
        };
        self.subjects.insert(key.key(), resolved);
        (user, how)
    }

    /// The User of `{system, value}` in `namespace` as the cache holds it, without a read:
    /// `Some(None)` when it is known that there is none.
    pub fn cached_identifier(
        &self,
        namespace: &str,
        system: &str,
        value: &str,
    ) -> Option<Option<KnownUser>> {
        self.cache
            .get(identifier_key(namespace, system, value).as_str())
            .map(|answer| answer.user)
    }

    /// Reads the User of `{system, value}` in `namespace` anew, past the cache (creation
    /// asks before it creates: "none" in the cache may be older than another replica's
    /// creation), and caches the answer.
    pub async fn read_identifier(
        &self,
        namespace: &str,
        system: &str,
        value: &str,
    ) -> LookupResult {
        self.metrics.user_event("lookup_call");
        let found = self.lookup.by_identifier(namespace, system, value).await?;
        self.cache.insert(
            identifier_key(namespace, system, value).into_boxed_str(),
            self.answer(found.clone()),
        );
        Ok(found)
    }

    /// A User just created (or adopted): found by its identifiers from now on, without a
    /// read.
    pub fn remember(&self, user: &KnownUser) {
        let (namespace, name) = user.name().split_once('/').unwrap_or(("", user.name()));
        self.counts.names().created(namespace, name);
        for (system, value) in user.identifiers() {
            let key = identifier_key(namespace, system, value).into_boxed_str();
            self.cache.insert(key, self.answer(Some(user.clone())));
        }
    }

    /// What a read said, believed for the TTL of its kind: a User, or none.
    fn answer(&self, user: Option<KnownUser>) -> Answer {
        let ttl = match user {
            Some(_) => self.settings.ttl,
            None => self.settings.negative_ttl,
        };
        Answer {
            user,
            until: Instant::now() + ttl,
        }
    }

    /// Answers cached now (expired ones may linger until the cache tidies up).
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// The cached answer for `key`, or the flight that reads it (joined, or started now).
    fn get(
        self: &Arc<Self>,
        key: String,
        read: impl FnOnce() -> BoxFuture<'static, LookupResult>,
    ) -> Got {
        if let Some(cached) = self.cache.get(key.as_str()) {
            return Got::Cached(cached);
        }
        if let Some(error) = self.failing.get(key.as_str()) {
            return Got::Failing(error);
        }
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flight) = flights.get(key.as_str()) {
            return Got::Flight(flight.clone());
        }
        // A flight that just ended cached its answer before leaving the map: look again,
        // or this request would read a second time.
        if let Some(cached) = self.cache.get(key.as_str()) {
            return Got::Cached(cached);
        }
        if let Some(error) = self.failing.get(key.as_str()) {
            return Got::Failing(error);
        }
        self.metrics.user_event("lookup_call");
        let key: Box<str> = key.into_boxed_str();
        let read = read();
        let this = self.clone();
        let task_key = key.clone();
        // Spawned: a request that gives up does not cancel the read the others wait for,
        // and the answer is cached for the next one.
        let task = tokio::spawn(async move {
            let result = read.await.map(|found| this.answer(found));
            match &result {
                Ok(answer) => this.cache.insert(task_key.clone(), answer.clone()),
                Err(error) => {
                    this.metrics.user_event("lookup_error");
                    tracing::warn!(error = %error, "reading a User failed; requests that need it go on without a User for a second");
                    this.failing.insert(task_key.clone(), error.clone());
                }
            }
            this.flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task_key);
            result
        });
        let flight = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the read of a User failed: {e}")))
        }
        .boxed()
        .shared();
        flights.insert(key, flight.clone());
        Got::Flight(flight)
    }
}

/// The answer of a key that is not waited for.
fn settled(got: Got) -> Result<Answer, LookupFailure> {
    match got {
        Got::Cached(answer) => Ok(answer),
        Got::Failing(error) => Err(LookupFailure {
            timed_out: false,
            error,
        }),
        Got::Flight(_) => unreachable!("only settled answers are taken without waiting"),
    }
}

async fn answer(got: Got) -> Result<Answer, LookupFailure> {
    match got {
        Got::Flight(flight) => flight.await.map_err(|error| LookupFailure {
            timed_out: false,
            error,
        }),
        got => settled(got),
    }
}

fn qualified(namespace: &str, name: &str) -> String {
    crate::resources::qualified(Some(namespace), name)
}

/// The cache key of a User by name; lengths first, so that no two keys run together.
fn name_key(namespace: &str, name: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + name.len() + 8);
    key.push('n');
    push_field(&mut key, namespace);
    key.push_str(name);
    key
}

/// The cache key of a User by identifier.
fn identifier_key(namespace: &str, system: &str, value: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + system.len() + value.len() + 12);
    key.push('i');
    push_field(&mut key, namespace);
    push_field(&mut key, system);
    key.push_str(value);
    key
}

fn push_field(key: &mut String, field: &str) {
    use std::fmt::Write;
    let _ = write!(key, "{}:", field.len());
    key.push_str(field);
}

#[cfg(test)]
mod tests;
