//! Step 3 of resolution (docs/users.md, "Resolution"): the [`Plan`] of the User a subject
//! would get, and the [`Creator`] that fetches its data (userinfo, or the token's claims)
//! and stores it, one creation per subject at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::{Map, Value};

use super::limits::{CreationLimits, Limit, RateLimiters};
use super::on_demand::OnDemand;
use super::store::UserStore;
use super::userinfo::{UserinfoClient, UserinfoError};
use super::{user_name, Found, KnownUser, ProviderRef, Resolution, Subject, UserIndex};
use crate::metrics::Metrics;
use crate::resources::{namespace_of, qualified, Identifier, UserSpec, UserinfoSource};

/// Before the one retry of a userinfo call that failed in a way worth retrying.
pub const USERINFO_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Step 3, before anything is fetched: the User that would be created for this token.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub identifier: Identifier,
    pub provider: String,
    pub source: DataSource,
}

/// Where a created User's `data` comes from.
#[derive(Clone, PartialEq)]
pub enum DataSource {
    /// `userinfo-source: userinfo-endpoint`: `GET url` with `Authorization: <scheme> <token>`.
    Userinfo { url: String, scheme: String },
    /// `userinfo-source: id-token`: the validated token's own claims.
    Claims(Map<String, Value>),
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Userinfo { url, .. } => write!(f, "userinfo {url}"),
            DataSource::Claims(_) => f.write_str("the token's claims"),
        }
    }
}

/// Claims about the token rather than the person: freezing them into a User would only
/// record one token's lifetime.
const TOKEN_ONLY_CLAIMS: [&str; 8] = [
    "exp", "iat", "nbf", "jti", "nonce", "at_hash", "c_hash", "active",
];

/// Whether, and how, a User can be created for this subject. `Err` says why not.
pub fn plan(subject: &Subject<'_>) -> Result<Plan, String> {
    let sub = subject
        .sub
        .filter(|s| !s.is_empty())
        .ok_or("the token has no `sub`")?;
    let idp = match subject.provider {
        ProviderRef::Defined(idp) => idp,
        ProviderRef::Unnamed => {
            return Err(format!(
                "TokenIntrospector/{} has no identity_provider",
                subject.introspector
            ))
        }
        ProviderRef::Undefined(name) => {
            return Err(format!("IdentityProvider/{name} is not defined"))
        }
    };
    if !idp.active {
        return Err(format!(
            "IdentityProvider/{} is inactive: it creates no Users",
            idp.name
        ));
    }
    let system = idp
        .spec
        .system
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "IdentityProvider/{} has no `system` to identify Users by",
                idp.name
            )
        })?;
    let source = match idp.spec.userinfo_source {
        Some(UserinfoSource::IdToken) => DataSource::Claims(
            subject
                .claims
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !TOKEN_ONLY_CLAIMS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Some(UserinfoSource::UserinfoEndpoint) | None => DataSource::Userinfo {
            url: idp
                .spec
                .userinfo_endpoint
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    format!(
                        "IdentityProvider/{} has no `userinfo_endpoint` (or set `userinfo-source: id-token`)",
                        idp.name
                    )
                })?,
            scheme: idp
                .spec
                .userinfo_header
                .clone()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "Bearer".to_string()),
        },
    };
    Ok(Plan {
        // Created in the namespace of the TokenIntrospector that accepted the token.
        name: qualified(subject.namespace, &user_name(system, sub)),
        identifier: Identifier {
            system: system.to_string(),
            value: sub.to_string(),
        },
        provider: idp.name.to_string(),
        source,
    })
}

/// `(system, sub)`.
/// `(system, value, namespace)`: one identifier names one User per namespace.
type Key = (String, String, Option<String>);
type Flight = Shared<BoxFuture<'static, Result<KnownUser, CreateError>>>;

#[derive(Debug, Clone)]
enum CreateError {
    Userinfo(String),
    Store(String),
}

/// Creates Users: one creation per `(system, sub)` at a time, a back-off after a failure,
/// within the [`CreationLimits`], and each User created put in the overlay that
/// [`super::UserResolver`] finds it in.
pub(super) struct Creator {
    store: Arc<dyn UserStore>,
    userinfo: UserinfoClient,
    metrics: Arc<Metrics>,
    overlay: Arc<ArcSwap<UserIndex>>,
    retry_after: Duration,
    /// One creation per `(system, sub)` at a time, with the namespace of its User;
    /// concurrent requests join it.
    inflight: Mutex<HashMap<Key, (Box<str>, Flight)>>,
    /// Creations that just failed: requests for that subject go on without a user until
    /// the back-off ends, instead of calling a failing identity provider each time.
    failed: moka::sync::Cache<Key, CreateError>,
    limits: CreationLimits,
    /// `--user-create-rate`, per IdentityProvider.
    rates: RateLimiters,
    /// `--users on-demand`: created Users go into its cache rather than the overlay (no
    /// snapshot will ever hold them), and the caps count what it counts.
    pub(super) on_demand: Option<Arc<OnDemand>>,
}

/// How long a failed creation is not retried.
const CREATION_BACKOFF: Duration = Duration::from_secs(5);
const FAILED_CREATIONS: u64 = 65_536;

impl Creator {
    pub(super) fn new(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
        overlay: Arc<ArcSwap<UserIndex>>,
        retry_after: Duration,
        limits: CreationLimits,
    ) -> Self {
        Creator {
            rates: RateLimiters::new(&limits),
            limits,
            store,
            userinfo,
            metrics,
            overlay,
            retry_after,
            inflight: Mutex::new(HashMap::new()),
            failed: moka::sync::Cache::builder()
                .max_capacity(FAILED_CREATIONS)
                .time_to_live(CREATION_BACKOFF)
                .build(),
            on_demand: None,
        }
    }

    /// Creates the User of `plan`, or joins the creation under way for its subject. `raw` is
    /// the token as presented, for the userinfo call; `serving` holds the snapshot's Users,
    /// which count towards the caps with those created since and those being created.
    pub(super) async fn resolve(
        self: &Arc<Self>,
        plan: Plan,
        raw: &str,
        serving: &UserIndex,
    ) -> Resolution {
        let key = (
            plan.identifier.system.clone(),
            plan.identifier.value.clone(),
            namespace_of(&plan.name).map(str::to_owned),
        );
        let name = plan.name.clone();
        if let Some(error) = self.failed.get(&key) {
            self.metrics.user_event("creation_backoff");
            return match error {
                CreateError::Userinfo(error) => Resolution::UserinfoFailed { name, error },
                CreateError::Store(error) => Resolution::CreateFailed { name, error },
            };
        }
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&key) {
                Some((_, flight)) => flight.clone(),
                None => {
                    // A flight that just ended put its User in the overlay (or the cache
                    // of Users read on demand) before leaving this map: look again, or
                    // this request would start a second one.
                    let overlay = self.overlay.load();
                    let found = match &self.on_demand {
                        None => overlay
                            .by_identifier(key.2.as_deref(), &key.0, &key.1)
                            .cloned(),
                        Some(on_demand) => on_demand
                            .cached_identifier(key.2.as_deref().unwrap_or_default(), &key.0, &key.1)
                            .flatten(),
                    };
                    if let Some(user) = found {
                        return Resolution::Found(
                            user,
                            Found::ByIdentifier {
                                system: key.0,
                                value: key.1,
                            },
                        );
                    }
                    let namespace = namespace_of(&plan.name).unwrap_or_default();
                    if let Some(limit) = self.limit(&plan, namespace, serving, &overlay, &inflight)
                    {
                        self.metrics.user_event(limit.event());
                        let why = limit.describe(&self.limits, &plan.provider, namespace);
                        tracing::debug!(user = %name, provider = %plan.provider, reason = %why,
                            "User not created; the request goes on without a user");
                        return Resolution::Limited { name, limit, why };
                    }
                    let namespace: Box<str> = namespace.into();
                    // Spawned: a caller that goes away (Envoy gave up) does not cancel
                    // the creation that the others are waiting for.
                    let creator = self.clone();
                    let token = raw.to_string();
                    let task_key = key.clone();
                    let task = tokio::spawn(async move {
                        let result = creator.create(plan, &token).await;
                        if let Err(e) = &result {
                            creator.failed.insert(task_key.clone(), e.clone());
                        }
                        creator
                            .inflight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&task_key);
                        result
                    });
                    let flight = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(CreateError::Store(format!("creation task failed: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, (namespace, flight.clone()));
                    flight
                }
            }
        };
        match flight.await {
            Ok(user) => Resolution::Created(user),
            Err(CreateError::Userinfo(error)) => Resolution::UserinfoFailed { name, error },
            Err(CreateError::Store(error)) => Resolution::CreateFailed { name, error },
        }
    }

    /// The limit that keeps `plan`'s User from being created now, if any: the caps count
    /// the snapshot's Users, those created since and those being created; the rate is
    /// taken last, so that a capped request spends none of it.
    fn limit(
        &self,
        plan: &Plan,
        namespace: &str,
        serving: &UserIndex,
        overlay: &UserIndex,
        inflight: &HashMap<Key, (Box<str>, Flight)>,
    ) -> Option<Limit> {
        // `--users on-demand`: the last count of the cluster and the Users created since.
        let (total, in_namespace) = match &self.on_demand {
            None => (
                serving.len() + overlay.len(),
                serving.count_in(namespace) + overlay.count_in(namespace),
            ),
            Some(on_demand) => match on_demand.counts().get(namespace) {
                Some(counts) => counts,
                None => return Some(Limit::Uncounted),
            },
        };
        if total + inflight.len() >= self.limits.max_total {
            return Some(Limit::Total);
        }
        let pending = inflight
            .values()
            .filter(|(ns, _)| &**ns == namespace)
            .count();
        if in_namespace + pending >= self.limits.max_per_namespace {
            return Some(Limit::Namespace);
        }
        if !self.rates.try_take(&plan.provider) {
            return Some(Limit::Rate);
        }
        None
    }

    async fn create(&self, plan: Plan, token: &str) -> Result<KnownUser, CreateError> {
        let name = plan.name.clone();
        let fail = |event: &'static str, error: CreateError| {
            self.metrics.user_event(event);
            let message = match &error {
                CreateError::Userinfo(m) | CreateError::Store(m) => m.as_str(),
            };
            tracing::warn!(user = %name, provider = %plan.provider, error = %message,
                "User not created; the request goes on without a user");
            error
        };
        // `--users on-demand`: "no such User" in the cache may be older than another
        // replica's creation of it. Read anew: found, no userinfo call.
        if let (Some(on_demand), Some(namespace)) = (&self.on_demand, namespace_of(&plan.name)) {
            let id = &plan.identifier;
            match on_demand
                .read_identifier(namespace, &id.system, &id.value)
                .await
            {
                Ok(Some(existing)) => {
                    let user = self
                        .accept(existing, &plan)
                        .map_err(|e| fail("create_error", e))?;
                    self.metrics.user_event("found_in_store");
                    return Ok(user);
                }
                Ok(None) => {}
                Err(e) => return Err(fail("create_error", CreateError::Store(e))),
            }
        }
        // A file stored already (by another replica, or before a restart whose snapshot
        // lacks it): no userinfo call.
        if let Some(files) = self.store.files() {
            match files.get(&plan.name).await {
                Ok(Some(existing)) => {
                    let user = self
                        .accept(existing, &plan)
                        .map_err(|e| fail("create_error", e))?;
                    self.metrics.user_event("found_in_store");
                    return Ok(user);
                }
                Ok(None) => {}
                Err(e) => return Err(fail("create_error", CreateError::Store(e.to_string()))),
            }
        }
        let data = match &plan.source {
            DataSource::Claims(claims) => claims.clone(),
            DataSource::Userinfo { url, scheme } => self
                .userinfo(url, scheme, token, &plan.identifier.value)
                .await
                .map_err(|e| fail("userinfo_error", CreateError::Userinfo(e.to_string())))?,
        };
        let user = KnownUser::new(
            &plan.name,
            &UserSpec {
                data: Some(Value::Object(data)),
                identifier: vec![plan.identifier.clone()],
                ..Default::default()
            },
        );
        let stored = self
            .store
            .create(user, &plan.provider)
            .await
            .map_err(|e| fail("create_error", CreateError::Store(e.to_string())))?;
        let user = self
            .accept(stored, &plan)
            .map_err(|e| fail("create_error", e))?;
        self.metrics.user_event("created");
        if let Some(on_demand) = &self.on_demand {
            // Counted until the next count of the cluster holds it.
            on_demand
                .counts()
                .created(namespace_of(user.name()).unwrap_or_default());
        }
        tracing::info!(user = %user.name(), provider = %plan.provider,
            system = %plan.identifier.system, store = %self.store.describe(), "User created");
        Ok(user)
    }

    /// The stored User must be the one meant: an object by that name that lacks this
    /// identifier belongs to someone else, and is never handed to this caller.
    fn accept(&self, user: KnownUser, plan: &Plan) -> Result<KnownUser, CreateError> {
        if !user.has_identifier(&plan.identifier.system, &plan.identifier.value) {
            return Err(CreateError::Store(format!(
                "User/{} exists without identifier {{system: {}, value: <sub>}}: refusing to use it",
                user.name(),
                plan.identifier.system
            )));
        }
        match &self.on_demand {
            Some(on_demand) => on_demand.remember(&user),
            None => {
                self.overlay.rcu(|current| {
                    let mut next = UserIndex::clone(current);
                    next.insert(user.clone());
                    next
                });
            }
        }
        Ok(user)
    }

    /// One try, and one more after a short pause when the failure may pass.
    async fn userinfo(
        &self,
        url: &str,
        scheme: &str,
        token: &str,
        sub: &str,
    ) -> Result<serde_json::Map<String, Value>, UserinfoError> {
        self.metrics.user_event("userinfo_call");
        match self.userinfo.fetch(url, scheme, token, sub).await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "userinfo failed; retrying once");
                tokio::time::sleep(self.retry_after).await;
                self.metrics.user_event("userinfo_call");
                self.userinfo.fetch(url, scheme, token, sub).await
            }
            result => result,
        }
    }
}
