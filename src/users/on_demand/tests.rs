//! The cache of Users read on demand, on plain data: a lookup in memory that counts its
//! reads and can be held, or made to fail.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::resources::namespace_of;
use crate::resources::{Identifier, IdentityProviderSpec, UserSpec, UserinfoSource};
use crate::users::{
    find, CreationLimits, Limit, Provider, ProviderRef, Resolution, StoreError, UserIndex,
    UserResolver, UserStore, UserinfoClient,
};

/// Users as the cluster would hold them: `(user, creationTimestamp)`.
#[derive(Default)]
struct Memory {
    users: Mutex<Vec<(KnownUser, i64)>>,
    reads: AtomicUsize,
    fail: AtomicBool,
    /// Reads wait while it says `true`.
    held: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
}

struct Lookup(Arc<Memory>);

impl Memory {
    fn add(&self, name: &str, ids: &[(&str, &str)], created: i64) {
        self.users
            .lock()
            .unwrap()
            .push((KnownUser::new(name, &spec(ids)), created));
    }

    fn remove(&self, name: &str) {
        self.users.lock().unwrap().retain(|(u, _)| u.name() != name);
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Holds every read until the returned sender says `false`.
    fn hold(&self) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(true);
        *self.held.lock().unwrap() = Some(rx);
        tx
    }

    fn read(
        self: &Arc<Self>,
        pick: impl FnOnce(&[(KnownUser, i64)]) -> Option<KnownUser> + Send + 'static,
    ) -> BoxFuture<'static, LookupResult> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let memory = self.clone();
        let held = self.held.lock().unwrap().clone();
        Box::pin(async move {
            if let Some(mut held) = held {
                let _ = held.wait_for(|held| !held).await;
            }
            if memory.fail.load(Ordering::SeqCst) {
                return Err("the API server is down".to_string());
            }
            Ok(pick(&memory.users.lock().unwrap()))
        })
    }
}

impl UserLookup for Lookup {
    fn by_name(&self, namespace: &str, name: &str) -> BoxFuture<'static, LookupResult> {
        let wanted = format!("{namespace}/{name}");
        self.0.read(move |users| {
            users
                .iter()
                .find(|(u, _)| u.name() == wanted)
                .map(|(u, _)| u.clone())
        })
    }

    fn by_identifier(
        &self,
        namespace: &str,
        system: &str,
        value: &str,
    ) -> BoxFuture<'static, LookupResult> {
        let (namespace, system, value) =
            (namespace.to_string(), system.to_string(), value.to_string());
        self.0.read(move |users| {
            users
                .iter()
                .filter(|(u, _)| namespace_of(u.name()) == Some(&namespace))
                .filter(|(u, _)| u.has_identifier(&system, &value))
                .min_by_key(|(u, created)| (*created, u.name().to_string()))
                .map(|(u, _)| u.clone())
        })
    }
}

fn spec(ids: &[(&str, &str)]) -> UserSpec {
    UserSpec {
        data: Some(json!({"roles": ["reader"]})),
        identifier: ids
            .iter()
            .map(|(system, value)| Identifier {
                system: system.to_string(),
                value: value.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn on_demand(settings: CacheSettings) -> (Arc<OnDemand>, Arc<Memory>, Arc<Metrics>) {
    let memory = Arc::new(Memory::default());
    let metrics = Arc::new(Metrics::new());
    let od = OnDemand::new(
        Arc::new(Lookup(memory.clone())),
        Arc::default(),
        settings,
        metrics.clone(),
    );
    (od, memory, metrics)
}

fn provider() -> IdentityProviderSpec {
    IdentityProviderSpec {
        system: Some("kc".into()),
        userinfo_source: Some(UserinfoSource::IdToken),
        ..Default::default()
    }
}

/// The subject of a token of `sub` (and `box_user`) accepted in namespace `team`.
fn subject<'a>(
    provider: &'a IdentityProviderSpec,
    claims: &'a Value,
    box_user: Option<&'a str>,
    sub: &'a str,
) -> Subject<'a> {
    Subject {
        name: box_user.or(Some(sub)),
        sub: Some(sub),
        introspector: "team/auth",
        namespace: Some("team"),
        provider: ProviderRef::Defined(Provider {
            name: "team/kc",
            spec: provider,
            active: true,
        }),
        claims,
    }
}

fn later(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

async fn find_sub(od: &Arc<OnDemand>, sub: &str) -> Looked {
    let (p, claims) = (provider(), json!({"sub": sub}));
    od.find(
        &subject(&p, &claims, None, sub),
        NameClaims::Allowed,
        later(5_000),
    )
    .await
}

fn found_name(looked: &Looked) -> Option<&str> {
    looked.as_ref().ok()?.as_ref().map(|(u, _)| u.name())
}

fn counter(metrics: &Metrics, event: &str) -> u64 {
    let needle = format!("portcullis_user_events_total{{event=\"{event}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|n| n.parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_miss_is_one_read_per_key_and_then_hits_read_nothing() {
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    let looked = find_sub(&od, "ann").await;
    assert_eq!(found_name(&looked), Some("team/keycloak-ann"));
    assert!(matches!(
        looked.unwrap().unwrap().1,
        Found::ByIdentifier { .. }
    ));
    // One read by name (`ann` names no User) and one by identifier.
    assert_eq!(memory.reads(), 2);
    for _ in 0..100 {
        assert_eq!(
            found_name(&find_sub(&od, "ann").await),
            Some("team/keycloak-ann")
        );
    }
    assert_eq!(memory.reads(), 2);
    assert_eq!(counter(&metrics, "lookup_call"), 2);

    // A User found by name is one read, and needs no read by identifier after.
    memory.add("team/bob", &[("kc", "bob")], 1);
    let looked = find_sub(&od, "bob").await;
    assert_eq!(found_name(&looked), Some("team/bob"));
    assert_eq!(looked.unwrap().unwrap().1, Found::ByName("team/bob".into()));
    assert_eq!(memory.reads(), 4, "both keys are read at once on a miss");
    find_sub(&od, "bob").await.unwrap().unwrap();
    assert_eq!(memory.reads(), 4);
    assert_eq!(od.cached(), 4);
}

/// What the periodic count of the cluster's Users does to the names: lists them all.
fn count_names(od: &OnDemand, memory: &Memory) {
    let names = od.counts().names();
    let mut list = names.listing();
    for (user, _) in memory.users.lock().unwrap().iter() {
        let (namespace, name) = user.name().split_once('/').unwrap();
        list.add(namespace, name);
    }
    names.listed(list);
}

#[tokio::test]
async fn with_the_names_counted_a_miss_is_one_read() {
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    memory.add("team/bob", &[("kc", "bob")], 2);
    memory.add("team/carol", &[("gh", "carol")], 3);
    count_names(&od, &memory);

    // `ann` names no User: only the identifier is read.
    let looked = find_sub(&od, "ann").await;
    assert_eq!(found_name(&looked), Some("team/keycloak-ann"));
    assert_eq!(memory.reads(), 1);
    // `bob` names one, which is bob's: read by name alone.
    let looked = find_sub(&od, "bob").await;
    assert_eq!(looked.unwrap().unwrap().1, Found::ByName("team/bob".into()));
    assert_eq!(memory.reads(), 2);
    // `carol` names someone else's User: by name, then by identifier (none).
    assert_eq!(find_sub(&od, "carol").await, Ok(None));
    assert_eq!(memory.reads(), 4);
    // Nobody: one read, by identifier.
    assert_eq!(find_sub(&od, "nobody").await, Ok(None));
    assert_eq!(memory.reads(), 5);
    assert_eq!(counter(&metrics, "lookup_call"), 5);

    // Known subjects read nothing, also once a new count replaces what they relied on.
    for round in 0..2 {
        for _ in 0..10 {
            assert!(found_name(&find_sub(&od, "ann").await).is_some());
            assert!(found_name(&find_sub(&od, "bob").await).is_some());
        }
        assert_eq!(memory.reads(), 5, "round {round}");
        count_names(&od, &memory);
    }

    // Written with `kubectl` since the count: found by name from the next count on.
    memory.add("team/dan", &[], 4);
    assert_eq!(find_sub(&od, "dan").await, Ok(None));
    count_names(&od, &memory);
    let looked = find_sub(&od, "dan").await;
    assert_eq!(looked.unwrap().unwrap().1, Found::ByName("team/dan".into()));

    // A count that fails leaves the names unknown: both keys are read again.
    od.counts().names().unknown();
    let reads = memory.reads();
    assert_eq!(find_sub(&od, "erin").await, Ok(None));
    assert_eq!(memory.reads(), reads + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_read() {
    let (od, memory, _) = on_demand(CacheSettings::default());
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    let open = memory.hold();
    let asking: Vec<_> = (0..50)
        .map(|_| {
            let od = od.clone();
            tokio::spawn(async move { find_sub(&od, "ann").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    open.send(false).unwrap();
    for asked in asking {
        assert_eq!(found_name(&asked.await.unwrap()), Some("team/keycloak-ann"));
    }
    assert_eq!(memory.reads(), 2);
}

#[tokio::test]
async fn none_is_believed_for_the_shorter_ttl_and_a_user_for_the_longer() {
    let (od, memory, _) = on_demand(CacheSettings {
        entries: 1_000,
        ttl: Duration::from_millis(600),
        negative_ttl: Duration::from_millis(150),
    });
    assert_eq!(find_sub(&od, "ann").await, Ok(None));
    assert_eq!(memory.reads(), 2);
    // Written by someone else meanwhile: not seen until "none" expires.
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    assert_eq!(find_sub(&od, "ann").await, Ok(None));
    assert_eq!(memory.reads(), 2);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(found_name(&find_sub(&od, "ann").await).is_some());
    assert_eq!(memory.reads(), 4);
    // Deleted: still found until the User's own TTL ends.
    memory.remove("team/keycloak-ann");
    tokio::time::sleep(Duration::from_millis(250)).await;
    // (The name's "none" expired and is read again; the User is still cached.)
    assert!(found_name(&find_sub(&od, "ann").await).is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(find_sub(&od, "ann").await, Ok(None));
}

#[tokio::test]
async fn a_read_past_the_deadline_goes_on_without_a_user_and_serves_the_next_request() {
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    let open = memory.hold();
    let (p, claims) = (provider(), json!({}));
    let started = Instant::now();
    let looked = od
        .find(
            &subject(&p, &claims, None, "ann"),
            NameClaims::Allowed,
            later(100),
        )
        .await;
    let waited = started.elapsed();
    assert!(matches!(&looked, Err(f) if f.timed_out), "{looked:?}");
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_millis(500));
    assert_eq!(counter(&metrics, "lookup_timeout"), 1);
    // The read goes on without the request, and its answer is cached.
    open.send(false).unwrap();
    for _ in 0..100 {
        if od.cached_identifier("team", "kc", "ann").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        found_name(&find_sub(&od, "ann").await),
        Some("team/keycloak-ann")
    );
    assert_eq!(memory.reads(), 2);
}

#[tokio::test]
async fn a_failed_read_is_not_repeated_for_a_second() {
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    memory.add("team/keycloak-ann", &[("kc", "ann")], 1);
    memory.fail.store(true, Ordering::SeqCst);
    let looked = find_sub(&od, "ann").await;
    assert!(matches!(&looked, Err(f) if !f.timed_out && f.error.contains("down")));
    assert_eq!(memory.reads(), 2);
    // Failing: the next request goes on at once, without a read.
    let started = Instant::now();
    assert!(find_sub(&od, "ann").await.is_err());
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(memory.reads(), 2);
    assert_eq!(counter(&metrics, "lookup_error"), 2);
    memory.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(LOOKUP_BACKOFF + Duration::from_millis(100)).await;
    assert!(found_name(&find_sub(&od, "ann").await).is_some());
    assert_eq!(memory.reads(), 4);
}

/// On the same Users, the lookup on demand decides as the index of the watch mode does,
/// for every subject of a corpus, both ways of claiming by name.
#[tokio::test]
async fn decides_as_the_index_holding_every_user() {
    let mut index = UserIndex::default();
    let users: &[(&str, &[(&str, &str)])] = &[
        ("team/keycloak-ann", &[("kc", "ann")]),
        ("team/bob", &[("kc", "bob")]),
        ("team/shared", &[]),
        ("team/carol", &[("kc", "carol-sub"), ("gh", "carol")]),
        ("team/dave", &[("gh", "dave")]),
        ("other/eve", &[("kc", "eve")]),
        ("other/team-only", &[]),
    ];
    for (name, ids) in users {
        index.insert(KnownUser::new(name, &spec(ids)));
    }
    let p = provider();
    let mut compared = 0;
    // With the names unknown (both keys read at once), then counted (a read by name only
    // where a User has the name), on fresh caches.
    for counted in [false, true] {
        let (od, memory, _) = on_demand(CacheSettings::default());
        for (i, (name, ids)) in users.iter().enumerate() {
            memory.add(name, ids, i as i64);
        }
        if counted {
            count_names(&od, &memory);
        }
        for name_claims in [NameClaims::Allowed, NameClaims::IdentifiedOnly] {
            for sub in [
                "ann",
                "bob",
                "shared",
                "carol",
                "carol-sub",
                "dave",
                "eve",
                "nobody",
            ] {
                for box_user in [
                    None,
                    Some("shared"),
                    Some("bob"),
                    Some("carol"),
                    Some("team-only"),
                ] {
                    let claims = json!({"sub": sub});
                    let subject = subject(&p, &claims, box_user, sub);
                    let watch = find(&index, None, &subject, name_claims);
                    let looked = od.find(&subject, name_claims, later(5_000)).await.unwrap();
                    assert_eq!(
                        looked.as_ref().map(|(u, f)| (u.name(), f)),
                        watch.as_ref().map(|(u, f)| (u.name(), f)),
                        "sub {sub}, box_user {box_user:?}, {name_claims:?}, counted {counted}"
                    );
                    // Again, as the subject's own answer.
                    let again = od.find(&subject, name_claims, later(5_000)).await.unwrap();
                    assert_eq!(again, looked);
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 160);
}

#[tokio::test]
async fn of_two_users_holding_one_identifier_the_older_is_found() {
    let (od, memory, _) = on_demand(CacheSettings::default());
    memory.add("team/younger", &[("kc", "ann")], 20);
    memory.add("team/older", &[("kc", "ann")], 10);
    assert_eq!(found_name(&find_sub(&od, "ann").await), Some("team/older"));
}

/// A store that keeps nothing, counting what it is asked to create.
struct Counting(AtomicUsize);

impl UserStore for Counting {
    fn create(
        &self,
        user: KnownUser,
        _provider: &str,
    ) -> BoxFuture<'_, Result<KnownUser, StoreError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Ok(user) })
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// Creation on demand: held until the Users are counted, within the caps counted by the
/// cluster, asking the cluster once more before it creates, and what it creates is found
/// from the cache, never from the overlay (no snapshot would ever take it out).
#[tokio::test]
async fn creation_counts_the_cluster_and_caches_what_it_creates() {
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    let store = Arc::new(Counting(AtomicUsize::new(0)));
    let resolver = UserResolver::creating_with_limits(
        store.clone(),
        UserinfoClient::new(crate::outbound::IdpClient::new(Duration::from_secs(2))),
        metrics.clone(),
        CreationLimits {
            max_per_namespace: 2,
            ..Default::default()
        },
    )
    .with_on_demand(od.clone());
    let p = provider();
    let claims = json!({"sub": "new"});
    let new = subject(&p, &claims, None, "new");
    let serving = UserIndex::default();
    let r = resolver.create(&serving, &new, "raw", false).await;
    assert!(
        matches!(
            r,
            Resolution::Limited {
                limit: Limit::Uncounted,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(counter(&metrics, "create_uncounted"), 1);

    od.counts()
        .counted([("team".to_string(), 1), ("other".to_string(), 5)].into());
    let reads = memory.reads();
    let r = resolver.create(&serving, &new, "raw", false).await;
    let Resolution::Created(user) = r else {
        panic!("{r:?}")
    };
    assert_eq!(user.name(), "team/kc-new");
    // It asked the cluster first (another replica may have created it).
    assert_eq!(memory.reads(), reads + 1);
    assert_eq!(store.0.load(Ordering::SeqCst), 1);
    assert_eq!(resolver.overlay_len(), 0);
    let reads = memory.reads();
    let again = resolver
        .look_up(&new, later(1_000))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.0.name(), "team/kc-new");
    assert_eq!(
        memory.reads(),
        reads + 1,
        "only the name is read: the User is cached"
    );

    // The namespace now holds 2: capped.
    let claims = json!({"sub": "newer"});
    let newer = subject(&p, &claims, None, "newer");
    let r = resolver.create(&serving, &newer, "raw", false).await;
    assert!(
        matches!(
            r,
            Resolution::Limited {
                limit: Limit::Namespace,
                ..
            }
        ),
        "{r:?}"
    );

    // Created by another replica: found when asked again, no second User.
    od.counts().counted([("team".to_string(), 0)].into());
    memory.add("team/kc-elsewhere", &[("kc", "elsewhere")], 1);
    let claims = json!({"sub": "elsewhere"});
    let elsewhere = subject(&p, &claims, None, "elsewhere");
    let r = resolver.create(&serving, &elsewhere, "raw", false).await;
    assert!(
        matches!(&r, Resolution::Created(u) if u.name() == "team/kc-elsewhere"),
        "{r:?}"
    );
    assert_eq!(store.0.load(Ordering::SeqCst), 1);
    assert_eq!(counter(&metrics, "found_in_store"), 1);
}

/// Through the decision pipeline: a read that the API server does not answer holds the
/// decision at most the deadline less the tenth left for the policies, then the request
/// goes on without a User (allowed here by a policy on the issuer), and the trace says why.
#[tokio::test]
async fn a_decision_waits_for_a_read_at_most_its_deadline_then_goes_on_without_a_user() {
    use crate::decision::{Authorizer, DecisionLog, HttpRequest};
    use crate::snapshot::SnapshotStore;
    use crate::token::TokenVerifier;

    let text = "apiVersion: portcullis.dev/v1alpha1\nkind: TokenIntrospector\n\
        metadata: {name: auth, namespace: team}\n\
        spec: {type: jwt, jwt: {iss: 'https://iss', secret: s3cret}, identity_provider: {reference: IdentityProvider/kc}}\n---\n\
        apiVersion: portcullis.dev/v1alpha1\nkind: IdentityProvider\nmetadata: {name: kc, namespace: team}\n\
        spec: {system: kc}\n---\n\
        apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: issuer, namespace: team}\n\
        spec: {engine: matcho, matcho: {jwt: {iss: 'https://iss'}}}\n";
    let (resources, errors) =
        crate::resources::parse_documents(std::path::Path::new("t.yaml"), text);
    assert!(errors.is_empty(), "{errors:?}");
    let snapshots = Arc::new(SnapshotStore::default());
    let mut compiler = crate::snapshot::Compiler::default().scoped(Some("team".into()));
    resources.into_iter().for_each(|r| compiler.push(Ok(r)));
    snapshots.store(compiler.finish().unwrap());
    let (od, memory, metrics) = on_demand(CacheSettings::default());
    memory.add("team/kc-ann", &[("kc", "ann")], 1);
    let authorizer = Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: metrics.clone(),
        log: DecisionLog::new(0),
        deadline: Duration::from_millis(300),
        users: UserResolver::off().with_on_demand(od),
        shadow: false,
    };
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"iss": "https://iss", "sub": "ann", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret").unwrap(),
    )
    .unwrap();
    let request = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: vec![("authorization".into(), format!("Bearer {jwt}"))],
        ..Default::default()
    };

    let open = memory.hold();
    let started = Instant::now();
    let decision = authorizer.check(&request).await;
    let took = started.elapsed();
    assert!(decision.allowed(), "{decision:?}");
    assert_eq!(decision.user, None);
    assert!(
        took >= Duration::from_millis(270) && took < Duration::from_millis(300),
        "{took:?}"
    );
    let (_, trace) = authorizer.explain(&request).await;
    assert_eq!(trace.user.unwrap().result, "lookup-failed");

    // Answered since: the next decision has its User, without another read.
    open.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let decision = authorizer.check(&request).await;
    assert_eq!(decision.user.as_deref(), Some("team/kc-ann"));
    assert_eq!(memory.reads(), 2);
    assert_eq!(counter(&metrics, "lookup_timeout"), 2);
}

/// A subject's kept key gives back its parts, and no two subjects share one: not parts
/// that run together, not a missing part and an empty one.
#[test]
fn a_subject_key_holds_its_parts_and_no_other_subjects() {
    use quick_cache::Equivalent;
    use std::hash::BuildHasher;

    let subjects = [
        SubjectParts::of("ab", Some("c"), Some(("kc", "c")), NameClaims::Allowed),
        SubjectParts::of("a", Some("bc"), Some(("kc", "c")), NameClaims::Allowed),
        SubjectParts::of(
            "ab",
            Some("c"),
            Some(("kc", "c")),
            NameClaims::IdentifiedOnly,
        ),
        SubjectParts::of("ab", Some("c"), Some(("k", "cc")), NameClaims::Allowed),
        SubjectParts::of("ab", None, Some(("kc", "c")), NameClaims::Allowed),
        SubjectParts::of("ab", Some(""), Some(("kc", "c")), NameClaims::Allowed),
        SubjectParts::of("ab", Some("c"), None, NameClaims::Allowed),
        SubjectParts::of("ab", Some("c"), Some(("", "")), NameClaims::Allowed),
    ];
    let hasher = std::hash::RandomState::new();
    for (i, a) in subjects.iter().enumerate() {
        let key = a.key();
        assert!(key.parts() == *a, "{i}");
        assert!(a.equivalent(&key));
        // The table finds a kept key from the parts a request holds.
        assert_eq!(hasher.hash_one(a), hasher.hash_one(&key), "{i}");
        for (j, b) in subjects.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(!b.equivalent(&key), "{j} taken for {i}");
        }
    }
}
