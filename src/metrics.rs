//! Prometheus metrics, registered once and shared. A leaf: it takes plain values
//! (outcomes, reasons, counts, durations), never the pipeline's types.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `--policy-metrics`: one series per policy, result and dry-run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    /// The policy's name in the snapshot: `namespace/name` from the cluster, the plain name
    /// from a file.
    policy: String,
    result: &'static str,
    dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabels {
    lane: &'static str,
}

tokio::task_local! {
    /// Set while an explanation runs ([`Metrics::explaining`]).
    static EXPLAINING: ();
}

/// The token events that one request makes by being checked, as opposed to the calls to
/// an identity provider it may cause. An explanation does not count them: it is not
/// traffic.
const REQUEST_TOKEN_EVENTS: [&str; 3] = [
    "verified_cache_hit",
    "verified_cache_miss",
    "refused_cache_hit",
];

fn explaining_now() -> bool {
    EXPLAINING.try_with(|_| ()).is_ok()
}

pub struct Metrics {
    registry: Registry,
    /// Explanations given (`portcullis_explains_total`), which no request series counts.
    explains: Counter,
    decisions: Family<DecisionLabels, Counter>,
    /// `decisions{outcome="allow",reason="allowed"}`, the one nearly every request counts,
    /// held so that counting it hashes no labels and takes no lock.
    allowed: Counter,
    /// `tokens{event="verified_cache_hit"}` ([`Metrics::token_cache_hit`]), counted by
    /// nearly every request, held likewise.
    cache_hits: Counter,
    check_seconds: Histogram,
    reloads: Family<ResultLabels, Counter>,
    config_ok: Gauge,
    config_loaded_at: Gauge<f64, AtomicU64>,
    resources: Gauge,
    warnings: Gauge,
    user_files_skipped: Gauge,
    resources_refused: Gauge,
    resources_compiled: Counter,
    tokens: Family<EventLabels, Counter>,
    users: Family<EventLabels, Counter>,
    users_counted: Gauge,
    users_counted_at: Gauge<f64, AtomicU64>,
    status_writes: Family<ResultLabels, Counter>,
    watch_errors: Family<KindLabels, Counter>,
    shadow_mode: Gauge,
    shadow_allowed: Family<ReasonLabels, Counter>,
    costly_policies: Family<LaneLabels, Counter>,
    /// Registered by [`Metrics::with_policy_metrics`] only (`--policy-metrics`).
    policy_evaluations: Option<Family<PolicyLabels, Counter>>,
}

/// Counts the policies evaluated on the request path ([`Metrics::policy_evaluations`]).
#[derive(Clone, Copy)]
pub struct PolicyEvaluations<'m>(&'m Family<PolicyLabels, Counter>);

impl PolicyEvaluations<'_> {
    /// One evaluation of `policy` (its qualified name): `result` is `allow`, `deny` or
    /// `error`; `dry_run`, whether the policy is dry-run (its `result` is then what it
    /// would have done).
    pub fn count(&self, policy: &str, result: &'static str, dry_run: bool) {
        self.0
            .get_or_create(&PolicyLabels {
                policy: policy.to_owned(),
                result,
                dry_run: if dry_run { "true" } else { "false" },
            })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Authorization decisions by outcome and reason",
            decisions.clone(),
        );
        let check_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 20));
        registry.register(
            "check_duration_seconds",
            "Time to decide one request",
            check_seconds.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads by result (ok, error)",
            reloads.clone(),
        );
        let config_ok = Gauge::default();
        registry.register(
            "config_last_load_ok",
            "1 when the newest configuration compiled; 0 when the last good one is still serving after an error",
            config_ok.clone(),
        );
        let config_loaded_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_last_load_timestamp_seconds",
            "Unix time the serving configuration was built; its age is time() minus this",
            config_loaded_at.clone(),
        );
        let resources = Gauge::default();
        registry.register(
            "config_resources",
            "Resources in the serving snapshot",
            resources.clone(),
        );
        let warnings = Gauge::default();
        registry.register(
            "config_warnings",
            "Warnings of the serving configuration (e.g. a policy that allows every request)",
            warnings.clone(),
        );
        let user_files_skipped = Gauge::default();
        registry.register(
            "user_files_skipped",
            "Files of created Users (--users-dir) passed over at the last load: corrupt, misnamed, duplicate",
            user_files_skipped.clone(),
        );
        let resources_refused = Gauge::default();
        registry.register(
            "resources_refused",
            "Kubernetes objects refused at the last build (status Ready=False); an earlier good version of each may serve",
            resources_refused.clone(),
        );
        let resources_compiled = Counter::default();
        registry.register(
            "config_resources_compiled",
            "Resources (of the kinds but User) compiled by configuration rebuilds: a team's change compiles only its namespace's",
            resources_compiled.clone(),
        );
        let tokens = Family::<EventLabels, Counter>::default();
        registry.register(
            "token_events",
            "Token cache and fetch events (jwks_fetch, introspection_call, cache_hit, ...)",
            tokens.clone(),
        );
        let users = Family::<EventLabels, Counter>::default();
        registry.register(
            "user_events",
            "User resolution events (created, userinfo_error, ...)",
            users.clone(),
        );
        let users_counted = Gauge::default();
        registry.register(
            "users_counted",
            "Users in the cluster at the last count (--users on-demand), for --max-users and --max-users-per-namespace",
            users_counted.clone(),
        );
        let users_counted_at = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "users_counted_timestamp_seconds",
            "Unix time of the last count of the Users (--users on-demand); 0 before the first, when no User is created",
            users_counted_at.clone(),
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "status_writes",
            "Kubernetes status writes by result (ok, gone, error); only the Lease holder writes",
            status_writes.clone(),
        );
        let watch_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "kube_watch_errors",
            "Failed Kubernetes list or watch calls by kind (each is retried; the last view keeps serving)",
            watch_errors.clone(),
        );
        let shadow_mode = Gauge::default();
        registry.register(
            "shadow_mode",
            "1 when serve runs with --shadow: every request is answered allow, denials are only counted and logged",
            shadow_mode.clone(),
        );
        let shadow_allowed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "shadow_allowed",
            "Denials answered allow by --shadow, by the denial's reason (also counted in decisions with their real outcome)",
            shadow_allowed.clone(),
        );
        let costly_policies = Family::<LaneLabels, Counter>::default();
        registry.register(
            "policy_costly_evaluations",
            "AccessPolicies too costly to evaluate on an async worker for this request: lane=pool, evaluated on the bounded pool; lane=refused, over the ceiling and not evaluated",
            costly_policies.clone(),
        );
        let explains = Counter::default();
        registry.register(
            "explains",
            "Explanations (admin listener: operator API and explain page); not decisions, and not in any request series",
            explains.clone(),
        );
        let allowed = decisions
            .get_or_create(&DecisionLabels {
                outcome: "allow",
                reason: "allowed",
            })
            .clone();
        let cache_hits = tokens
            .get_or_create(&EventLabels {
                event: "verified_cache_hit",
            })
            .clone();
        Metrics {
            registry,
            explains,
            allowed,
            cache_hits,
            decisions,
            check_seconds,
            reloads,
            config_ok,
            config_loaded_at,
            resources,
            warnings,
            user_files_skipped,
            resources_refused,
            resources_compiled,
            tokens,
            users,
            users_counted,
            users_counted_at,
            status_writes,
            watch_errors,
            shadow_mode,
            shadow_allowed,
            costly_policies,
            policy_evaluations: None,
        }
    }

    /// `--policy-metrics`: also `portcullis_policy_evaluations_total{policy, result,
    /// dry_run}`, one series per policy evaluated and result. Off by default: a series per
    /// policy, and one label lookup per policy evaluated.
    pub fn with_policy_metrics(mut self) -> Self {
        let family = Family::<PolicyLabels, Counter>::default();
        self.registry.register(
            "policy_evaluations",
            "AccessPolicies evaluated on the request path (--policy-metrics), by policy, result (allow, deny) and dry_run",
            family.clone(),
        );
        self.policy_evaluations = Some(family);
        self
    }

    /// Where the request path counts each policy it evaluates; `None` unless
    /// [`Metrics::with_policy_metrics`].
    #[inline]
    pub fn policy_evaluations(&self) -> Option<PolicyEvaluations<'_>> {
        self.policy_evaluations.as_ref().map(PolicyEvaluations)
    }

    /// Whether `serve --shadow` is on.
    pub fn shadow_mode(&self, on: bool) {
        self.shadow_mode.set(on as i64);
    }

    /// Policies evaluated off the async workers (`pool`), or not at all (`refused`).
    pub fn costly_policies(&self, lane: &'static str, n: u64) {
        self.costly_policies
            .get_or_create(&LaneLabels { lane })
            .inc_by(n);
    }

    /// A denial, of this reason, answered allow by `serve --shadow`.
    pub fn shadow_allowed(&self, reason: &'static str) {
        self.shadow_allowed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One decision: allowed or not, its reason word, how long it took.
    pub fn observe_decision(&self, allowed: bool, reason: &'static str, elapsed: Duration) {
        let outcome = if allowed { "allow" } else { "deny" };
        if allowed && reason == "allowed" {
            self.allowed.inc();
        } else {
            self.decisions
                .get_or_create(&DecisionLabels { outcome, reason })
                .inc();
        }
        self.check_seconds.observe(elapsed.as_secs_f64());
    }

    /// A load's result: on success, the serving configuration's resource and warning counts.
    pub fn config_loaded(&self, ok: bool, resources: usize, warnings: usize) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.config_ok.set(ok as i64);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            self.config_loaded_at.set(now.as_secs_f64());
            self.resources.set(resources as i64);
            self.warnings.set(warnings as i64);
        }
    }

    pub fn user_files_skipped(&self, files: usize) {
        self.user_files_skipped.set(files as i64);
    }

    pub fn resources_refused(&self, objects: usize) {
        self.resources_refused.set(objects as i64);
    }

    /// One configuration rebuild compiled this many resources.
    pub fn resources_compiled(&self, resources: usize) {
        self.resources_compiled.inc_by(resources as u64);
    }

    /// Runs `explanation` as one explanation: counted in `portcullis_explains_total`, and
    /// the request token events it makes ([`REQUEST_TOKEN_EVENTS`]) are not counted, so
    /// that traffic dashboards do not move when an operator explains a request. Its calls to
    /// identity providers are counted as any: they are load on the provider.
    pub async fn explaining<F: Future>(&self, explanation: F) -> F::Output {
        self.explains.inc();
        EXPLAINING.scope((), explanation).await
    }

    /// `token_event("verified_cache_hit")`, without the label lookup.
    pub fn token_cache_hit(&self) {
        if !explaining_now() {
            self.cache_hits.inc();
        }
    }

    pub fn token_event(&self, event: &'static str) {
        if REQUEST_TOKEN_EVENTS.contains(&event) && explaining_now() {
            return;
        }
        self.tokens.get_or_create(&EventLabels { event }).inc();
    }

    pub fn user_event(&self, event: &'static str) {
        self.users.get_or_create(&EventLabels { event }).inc();
    }

    /// `--users on-demand`: the cluster held `users` Users at the count that just ended.
    pub fn users_counted(&self, users: usize) {
        self.users_counted.set(users as i64);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.users_counted_at.set(now.as_secs_f64());
    }

    /// One status write to the API server: `ok`, `gone` (the object was deleted) or `error`.
    pub fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A list or watch of `kind` (one of the four, or `Secret`) failed.
    pub fn watch_error(&self, kind: &'static str) {
        self.watch_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
