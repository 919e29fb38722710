//! `--users on-demand` at scale: `cargo bench --bench users_on_demand`.
//!
//! `serve --kube --users on-demand` (the release binary) against the in-repo fake API server
//! holding 1,000,000 labelled Users, beside `serve --kube --users watch` against another
//! fake holding 100,000 (what the watch mode is sized for; a million would be the watch
//! mode's memory problem, not this bench's). Prints
//!
//! - resident memory at ready, and of the on-demand replica after decisions over many
//!   distinct Users (more than its cache holds): flat, bounded by the cache;
//! - the time of a decision whose User is cached, both modes, in interleaved rounds; and
//!   the lookup alone, in process: a cached `OnDemand::find` against `users::find` in an
//!   index of the watch mode's size;
//! - per miss, the API calls the fake API server saw, by kind, and none for a repeat.
//!
//! Figures go to BENCHMARKS.md. Sizes: `USERS_BENCH_USERS` (on-demand, default 1,000,000),
//! `USERS_BENCH_WATCH_USERS` (default 100,000), `USERS_BENCH_DISTINCT` (distinct Users
//! decided for the memory figure, default 150,000), `USERS_BENCH_ROUNDS` (of the cached
//! decision, default 20); `USERS_BENCH_CACHE_ENTRIES` is passed as `--users-cache-entries`
//! (portcullis's default, 100,000, when unset). Under `cargo test` (no `--bench`) it
//! runs with a few hundred of each, as a test that it works.

#[path = "common/cluster.rs"]
mod cluster_common;
#[path = "../tests/support/fake_apiserver/mod.rs"]
#[allow(dead_code)]
mod fake_apiserver;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use portcullis::metrics::Metrics;
use portcullis::resources::{IdentityProviderSpec, UserSpec};
use portcullis::users::{
    find, identifier_label, CacheSettings, KnownUser, LookupResult, NameClaims, OnDemand, Provider,
    ProviderRef, Subject, UserCounts, UserIndex, UserLookup, IDENTIFIER_LABEL,
};
use serde_json::{json, Value};

use cluster_common::*;
use fake_apiserver::{FakeApiServer, RecordedRequest};

/// Requests in flight while deciding for many distinct Users.
const CONCURRENCY: usize = 32;

/// As an earlier run left it: `Ready=True`, so that no replica has a status to write.
fn served(mut obj: Value) -> Value {
    obj["status"] = json!({
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Accepted",
            "message": "serving", "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1}]});
    obj
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    served(json!({"apiVersion": API, "kind": kind,
                  "metadata": {"name": name, "namespace": NS}, "spec": spec}))
}

fn sub(i: usize) -> String {
    format!("sub-{i}")
}

fn user_name(i: usize) -> String {
    format!("user-{i:07}")
}

/// User `i`: identifier `{SYSTEM, sub-i}`, labelled as a created User is.
fn user(i: usize) -> Value {
    let (name, sub) = (user_name(i), sub(i));
    let mut obj = object(
        "User",
        &name,
        json!({"identifier": [{"system": SYSTEM, "value": sub}],
               "data": {"name": name, "roles": ["reader"]}, "email": format!("{name}@example.com")}),
    );
    obj["metadata"]["labels"] = json!({ IDENTIFIER_LABEL: identifier_label(SYSTEM, &sub) });
    obj
}

/// A fake API server holding one introspector, provider and policy, and `users` Users.
async fn cluster(users: usize) -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    fake.preload([
        object(
            "IdentityProvider",
            "kc",
            json!({"system": SYSTEM, "userinfo-source": "id-token"}),
        ),
        object(
            "TokenIntrospector",
            "auth",
            json!({"type": "jwt", "jwt": {"iss": ISS, "secret": SECRET},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        ),
        object(
            "AccessPolicy",
            "readers",
            json!({"engine": "matcho", "matcho": {"request-method": "get",
                   "user": {"data": {"roles": ["reader"]}}}}),
        ),
    ]);
    // In batches, so that the store's lock is not held for the whole million.
    let mut next = 0;
    while next < users {
        let end = (next + 10_000).min(users);
        fake.preload((next..end).map(user));
        next = end;
    }
    fake
}

struct Serve {
    child: Child,
    http: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `serve --kube --users <mode>` against `fake`; returns once it is ready, and the
    /// time that took.
    async fn start(fake: &FakeApiServer, mode: &str) -> (Serve, Duration) {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = fake.kubeconfig(dir.path());
        let http_port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--kube", "--decision-log-allow-sample", "0"])
            .args(["--users", mode])
            // One count at start (timed below), none during the measurements.
            .args(["--users-count-interval-secs", "3600"])
            .args(
                std::env::var("USERS_BENCH_CACHE_ENTRIES")
                    .map(|n| vec!["--users-cache-entries".to_string(), n])
                    .unwrap_or_default(),
            )
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", NS)
            .env("POD_NAME", format!("bench-{mode}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let serve = Serve {
            child,
            http: format!("http://127.0.0.1:{http_port}"),
            client: reqwest::Client::new(),
            _dir: dir,
        };
        let ready = time_until(Duration::from_secs(600), || async {
            let r = serve
                .client
                .get(format!("{}/readyz", serve.http))
                .send()
                .await;
            r.is_ok_and(|r| r.status() == 200)
        })
        .await;
        (serve, ready)
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// A GET decision with `token`: the status and the User it found.
    async fn decide(&self, token: &str) -> (u16, Option<String>) {
        let response = self
            .client
            .get(format!("{}/ext-authz/fhir/Patient", self.http))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let user = response
            .headers()
            .get("x-portcullis-user")
            .map(|v| v.to_str().unwrap().to_string());
        (response.status().as_u16(), user)
    }

    /// A decision for User `i`, which must be allowed as that User.
    async fn decide_found(&self, i: usize) {
        let (status, user) = self.decide(&token(&sub(i))).await;
        let want = format!("{NS}/{}", user_name(i));
        if (status, user.as_deref()) != (200, Some(want.as_str())) {
            // Why, as the replica counted it.
            let mut events = Vec::new();
            for event in ["lookup_call", "lookup_timeout", "lookup_error"] {
                events.push(format!(
                    "{event} {:?}",
                    self.metric(&event_metric(event)).await
                ));
            }
            panic!(
                "sub-{i}: {status} {user:?}, not 200 {want}; {}",
                events.join(", ")
            );
        }
    }

    /// A gauge of `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }
}

/// The metric of one `user_events` event.
fn event_metric(event: &str) -> String {
    format!("portcullis_user_events_total{{event=\"{event}\"}}")
}

/// What a batch of requests to the fake API server was.
#[derive(Default, Debug)]
struct Calls {
    by_name: usize,
    by_label: usize,
    status_writes: usize,
    other: usize,
}

impl Calls {
    fn of(requests: &[RecordedRequest]) -> Calls {
        let mut calls = Calls::default();
        for r in requests {
            let users = r.method == "GET" && r.path().ends_with("/users");
            if users && r.query("fieldSelector").is_some() {
                calls.by_name += 1;
            } else if users
                && r.query("labelSelector")
                    .is_some_and(|l| l.starts_with(&format!("{IDENTIFIER_LABEL}=")))
            {
                calls.by_label += 1;
            } else if r.path().ends_with("/status") {
                calls.status_writes += 1;
            } else {
                calls.other += 1;
            }
        }
        calls
    }

    fn reads(&self) -> usize {
        self.by_name + self.by_label
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Median and minimum.
fn spread(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

/// Users read from a map: the cached lookup of the on-demand mode, without a cluster.
struct MapLookup(Arc<std::collections::HashMap<(String, String), KnownUser>>);

impl UserLookup for MapLookup {
    fn by_name(&self, _: &str, _: &str) -> BoxFuture<'static, LookupResult> {
        Box::pin(async { Ok(None) })
    }

    fn by_identifier(
        &self,
        _: &str,
        system: &str,
        value: &str,
    ) -> BoxFuture<'static, LookupResult> {
        let found = self.0.get(&(system.into(), value.into())).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// The lookup alone, in process: a cached `OnDemand::find` against `users::find` in an
/// index of `indexed` Users (the watch mode's), over `subjects` subjects; ns per lookup,
/// best of a few rounds each.
async fn lookup_alone(indexed: usize, subjects: usize, rounds: usize) -> (f64, f64) {
    let spec = |i: usize| -> UserSpec {
        serde_json::from_value(json!({"identifier": [{"system": SYSTEM, "value": sub(i)}],
            "data": {"name": user_name(i), "roles": ["reader"]}}))
        .unwrap()
    };
    let known = |i: usize| KnownUser::new(&format!("{NS}/{}", user_name(i)), &spec(i));
    let mut index = UserIndex::with_capacity(indexed);
    let mut map = std::collections::HashMap::new();
    for i in 0..indexed {
        assert!(index.insert(known(i)).is_none());
        if i < subjects {
            map.insert((SYSTEM.to_string(), sub(i)), known(i));
        }
    }
    let on_demand = OnDemand::new(
        Arc::new(MapLookup(Arc::new(map))),
        Arc::new(UserCounts::default()),
        CacheSettings::default(),
        Arc::new(Metrics::new()),
    );
    let provider: IdentityProviderSpec = serde_json::from_value(json!({"system": SYSTEM})).unwrap();
    let claims = json!({});
    let subs: Vec<String> = (0..subjects).map(sub).collect();
    let subject = |sub| subject(sub, &provider, &claims);
    {
        let until = tokio::time::Instant::now() + Duration::from_secs(3600);
        // Warm: each subject read once, and cached.
        for s in &subs {
            let found = on_demand
                .find(&subject(s), NameClaims::Allowed, until)
                .await;
            assert!(matches!(found, Ok(Some(_))), "{s}");
        }
        let (mut on_demand_best, mut watch_best) = (f64::MAX, f64::MAX);
        for _ in 0..rounds {
            let start = Instant::now();
            for s in &subs {
                let found = on_demand
                    .find(&subject(s), NameClaims::Allowed, until)
                    .await;
                std::hint::black_box(found.unwrap().unwrap());
            }
            on_demand_best = on_demand_best.min(start.elapsed().as_secs_f64() * 1e9);
            let start = Instant::now();
            for s in &subs {
                let found = find(&index, None, &subject(s), NameClaims::Allowed);
                std::hint::black_box(found.unwrap());
            }
            watch_best = watch_best.min(start.elapsed().as_secs_f64() * 1e9);
        }
        (
            on_demand_best / subjects as f64,
            watch_best / subjects as f64,
        )
    }
}

/// A token's subject `sub` (no `box_user`: `sub` is also the name step 1 looks for).
fn subject<'a>(sub: &'a str, provider: &'a IdentityProviderSpec, claims: &'a Value) -> Subject<'a> {
    Subject {
        name: Some(sub),
        sub: Some(sub),
        introspector: "bench/auth",
        namespace: Some(NS),
        provider: ProviderRef::Defined(Provider {
            name: "bench/kc",
            spec: provider,
            active: true,
        }),
        claims,
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let Some(full) = full_run("users_on_demand") else {
        return;
    };
    let scale = |n: usize, small: usize| if full { n } else { small };
    let users = size("USERS_BENCH_USERS", scale(1_000_000, 300));
    let watch_users = size("USERS_BENCH_WATCH_USERS", scale(100_000, 300));
    let distinct = size("USERS_BENCH_DISTINCT", scale(150_000, 100));
    // Cached Users for the timing (in both clusters), decisions per round, rounds.
    let hot = scale(1_000, 20).min(users).min(watch_users);
    let rounds = size("USERS_BENCH_ROUNDS", scale(20, 2));
    let misses = scale(500, 10);
    assert!(
        hot + misses + distinct <= users,
        "USERS_BENCH_USERS too small"
    );

    let loading = Instant::now();
    let on_demand_fake = cluster(users).await;
    let watch_fake = cluster(watch_users).await;
    println!(
        "users on demand: {users} Users in one fake API server, {watch_users} in another \
         (loaded in {:.1} s)",
        loading.elapsed().as_secs_f64()
    );

    let (watch, watch_ready) = Serve::start(&watch_fake, "watch").await;
    let (on_demand, on_demand_ready) = Serve::start(&on_demand_fake, "on-demand").await;
    let counted = time_until(Duration::from_secs(600), || async {
        on_demand.metric("portcullis_users_counted").await == Some(users as f64)
    })
    .await;
    println!("                                  on-demand ({users})  watch ({watch_users})");
    println!(
        "  time to ready                   {:>10.2} s        {:>8.2} s",
        on_demand_ready.as_secs_f64(),
        watch_ready.as_secs_f64()
    );
    println!(
        "  resident memory when ready      {:>10.0} MiB      {:>8.0} MiB",
        on_demand.rss_mib(),
        watch.rss_mib()
    );
    println!(
        "  on-demand: first count of the Users (metadata-only list, pages of 500) done {:.1} s after ready; {:.0} MiB then",
        counted.as_secs_f64(),
        on_demand.rss_mib()
    );

    // A miss: one subject at a time, what the fake saw.
    on_demand_fake.clear_requests();
    let mut miss_times = Vec::new();
    for i in hot..hot + misses {
        let start = Instant::now();
        on_demand.decide_found(i).await;
        miss_times.push(us(start.elapsed()));
    }
    let calls = Calls::of(&on_demand_fake.requests());
    on_demand_fake.clear_requests();
    for i in hot..hot + misses {
        on_demand.decide_found(i).await;
    }
    let again = Calls::of(&on_demand_fake.requests());
    let (median, _) = spread(miss_times);
    println!(
        "  a miss ({misses} Users, one at a time): {:.2} API calls each ({:.2} by name, {:.2} by \
         label, concurrent), {} status writes, {} other; median {median:.0} µs a decision; \
         the same Users again: {} calls",
        calls.reads() as f64 / misses as f64,
        calls.by_name as f64 / misses as f64,
        calls.by_label as f64 / misses as f64,
        calls.status_writes,
        calls.other,
        again.reads(),
    );
    let (status, user) = on_demand.decide(&token("nobody")).await;
    assert_eq!((status, user), (403, None), "no such User");

    // A cached User: interleaved rounds over the same `hot` Users, both modes.
    let tokens: Vec<String> = (0..hot).map(|i| token(&sub(i))).collect();
    for i in 0..hot {
        on_demand.decide_found(i).await;
        watch.decide_found(i).await;
    }
    on_demand_fake.clear_requests();
    let timed = Instant::now();
    let (mut on_demand_rounds, mut watch_rounds) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut pair = [
            (&on_demand, &mut on_demand_rounds),
            (&watch, &mut watch_rounds),
        ];
        // Each goes first every other round.
        pair.rotate_left(round % 2);
        for (serve, samples) in pair {
            let start = Instant::now();
            for t in &tokens {
                assert_eq!(serve.decide(t).await.0, 200);
            }
            samples.push(us(start.elapsed()) / hot as f64);
        }
    }
    let ((od_median, od_min), (w_median, w_min)) = (spread(on_demand_rounds), spread(watch_rounds));
    let during = Calls::of(&on_demand_fake.requests());
    println!(
        "  a decision, User cached (HTTP, one at a time, {hot} Users × {rounds} rounds): \
         on-demand median {od_median:.1} µs (min {od_min:.1}), watch median {w_median:.1} µs \
         (min {w_min:.1}): on-demand/watch {:.2}; API calls meanwhile ({:.1} s): {} by name, \
         {} by label",
        od_median / w_median,
        timed.elapsed().as_secs_f64(),
        during.by_name,
        during.by_label,
    );
    let (od_ns, w_ns) = lookup_alone(watch_users, hot, rounds).await;
    println!(
        "  the lookup alone, in process ({hot} subjects): on-demand cached {od_ns:.0} ns, \
         watch (index of {watch_users}) {w_ns:.0} ns"
    );

    // Memory over many distinct Users: every one a miss, more than the cache holds. The
    // same tokens go to the watch replica (which finds those it holds): both hold a
    // verified-token cache, which distinct tokens fill as well.
    on_demand_fake.clear_requests();
    let first = hot + misses;
    let checkpoints = 5;
    let step = distinct.div_ceil(checkpoints);
    let mut rss = vec![(on_demand.rss_mib(), watch.rss_mib())];
    let mut without_user = 0;
    let mut spent = Duration::ZERO;
    for c in 0..checkpoints {
        let from = first + c * step;
        let to = (from + step).min(first + distinct);
        let started = Instant::now();
        let decided: Vec<(usize, (u16, Option<String>))> = futures::stream::iter(from..to)
            .map(|i| {
                let serve = &on_demand;
                async move { (i, serve.decide(&token(&sub(i))).await) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        spent += started.elapsed();
        for (i, (status, user)) in decided {
            match user {
                // Past the deadline, or a failed read: the request went on without a User.
                None => without_user += 1,
                Some(user) => {
                    assert_eq!((status, user), (200, format!("{NS}/{}", user_name(i))));
                }
            }
        }
        futures::stream::iter(from..to)
            .map(|i| {
                let serve = &watch;
                async move { serve.decide(&token(&sub(i))).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        rss.push((on_demand.rss_mib(), watch.rss_mib()));
    }
    let calls = Calls::of(&on_demand_fake.requests());
    let event = event_metric;
    let (timeouts, errors) = (
        on_demand
            .metric(&event("lookup_timeout"))
            .await
            .unwrap_or(0.0),
        on_demand
            .metric(&event("lookup_error"))
            .await
            .unwrap_or(0.0),
    );
    let series = |pick: fn(&(f64, f64)) -> f64| -> String {
        let figures: Vec<String> = rss.iter().map(|r| format!("{:.0}", pick(r))).collect();
        figures.join(" → ")
    };
    println!(
        "  resident memory (MiB) over {distinct} distinct Users, {CONCURRENCY} at a time, \
         every {step}:"
    );
    println!("    on-demand  {}", series(|r| r.0));
    println!("    watch      {} (the same tokens)", series(|r| r.1));
    println!(
        "    on-demand: {:.0} decisions/s, {:.2} API calls a decision, {} status writes; \
         {without_user} decided without their User ({timeouts} lookups past the deadline, \
         {errors} failed)",
        distinct as f64 / spent.as_secs_f64(),
        calls.reads() as f64 / distinct as f64,
        calls.status_writes,
    );
}
