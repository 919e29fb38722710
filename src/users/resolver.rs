//! [`UserResolver`]: steps 1–4 of resolution, with creation of Users on first sight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::Value;

use super::resolve::{find_existing, plan, DataSource, Found, NameClaims, Plan, Resolution};
use super::store::UserStore;
use super::userinfo::{UserinfoClient, UserinfoError};
use super::{KnownUser, UserIndex};
use crate::metrics::Metrics;
use crate::resources::UserSpec;
use crate::snapshot::Snapshot;
use crate::token::ValidToken;

/// Before the one retry of a userinfo call that failed in a way worth retrying.
pub const USERINFO_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Finds the User behind a token, and creates it when `--create-users` is on.
pub struct UserResolver {
    /// Users created since the serving snapshot was built, consulted after it.
    overlay: Arc<ArcSwap<UserIndex>>,
    creation: Creation,
    name_claims: NameClaims,
}

enum Creation {
    Off,
    /// `explain --create-users`: report what would be created, create nothing.
    DryRun,
    On(Arc<Creator>),
}

impl Default for UserResolver {
    fn default() -> Self {
        Self::off()
    }
}

impl UserResolver {
    /// Resolution by name and identifier only.
    pub fn off() -> Self {
        UserResolver {
            overlay: Default::default(),
            creation: Creation::Off,
            name_claims: NameClaims::default(),
        }
    }

    /// Like [`UserResolver::off`], but a trace says which User would be created.
    pub fn dry_run() -> Self {
        UserResolver {
            creation: Creation::DryRun,
            ..Self::off()
        }
    }

    /// Creates Users in `store`, with data from userinfo fetched by `userinfo`.
    pub fn creating(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::creating_with_retry(store, userinfo, metrics, USERINFO_RETRY_AFTER)
    }

    pub fn creating_with_retry(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
        retry_after: Duration,
    ) -> Self {
        let overlay: Arc<ArcSwap<UserIndex>> = Default::default();
        UserResolver {
            creation: Creation::On(Arc::new(Creator {
                store,
                userinfo,
                metrics,
                overlay: overlay.clone(),
                retry_after,
                inflight: Mutex::new(HashMap::new()),
                failed: moka::sync::Cache::builder()
                    .max_capacity(FAILED_CREATIONS)
                    .time_to_live(CREATION_BACKOFF)
                    .build(),
            })),
            overlay,
            name_claims: NameClaims::default(),
        }
    }

    /// Whether Users without identifiers may be claimed by name (see [`NameClaims`]).
    pub fn with_name_claims(mut self, name_claims: NameClaims) -> Self {
        self.name_claims = name_claims;
        self
    }

    /// Resolve the user of a validated token. `raw` is the token as presented, for the
    /// userinfo call. With `dry_run` (explain) nothing is fetched or created.
    pub async fn resolve(
        &self,
        snapshot: &Snapshot,
        token: &ValidToken,
        raw: &str,
        dry_run: bool,
    ) -> Resolution {
        let overlay = self.overlay.load();
        if let Some((user, found)) =
            find_existing(snapshot, Some(&overlay), token, self.name_claims)
        {
            return Resolution::Found(user, found);
        }
        drop(overlay);
        let creator = match &self.creation {
            Creation::Off => {
                return Resolution::None(
                    "no User by name (box_user or sub) or by identifier; user creation is off"
                        .into(),
                )
            }
            Creation::DryRun => None,
            Creation::On(creator) => Some(creator),
        };
        let plan = match plan(snapshot, token) {
            Ok(plan) => plan,
            Err(why) => {
                return Resolution::None(
                    format!(
                        "no User by name (box_user or sub) or by identifier; none created: {why}"
                    )
                    .into(),
                )
            }
        };
        match creator {
            // Boxed: the creation's future (a userinfo call, a write) is large, and a
            // request that finds its User should not carry, and move, room for it.
            Some(creator) if !dry_run => Box::pin(creator.resolve(plan, raw)).await,
            _ => Resolution::WouldCreate(plan),
        }
    }

    /// A new snapshot is serving: created Users it now holds leave the overlay, so that a
    /// User file deleted later is gone after the next reload.
    pub fn snapshot_changed(&self, snapshot: &Snapshot) {
        self.overlay.rcu(|current| {
            let mut next = UserIndex::default();
            for user in current.users() {
                if snapshot.users.by_name(user.name()).is_none() {
                    next.insert(user.clone());
                }
            }
            next
        });
    }

    /// Users created and not yet in a snapshot.
    pub fn overlay_len(&self) -> usize {
        self.overlay.load().len()
    }
}

type Key = (String, String);
type Flight = Shared<BoxFuture<'static, Result<KnownUser, CreateError>>>;

#[derive(Debug, Clone)]
enum CreateError {
    Userinfo(String),
    Store(String),
}

struct Creator {
    store: Arc<dyn UserStore>,
    userinfo: UserinfoClient,
    metrics: Arc<Metrics>,
    overlay: Arc<ArcSwap<UserIndex>>,
    retry_after: Duration,
    /// One creation per `(system, sub)` at a time; concurrent requests join it.
    inflight: Mutex<HashMap<Key, Flight>>,
    /// Creations that just failed: requests for that subject go on without a user until
    /// the back-off ends, instead of calling a failing identity provider each time.
    failed: moka::sync::Cache<Key, CreateError>,
}

/// How long a failed creation is not retried.
const CREATION_BACKOFF: Duration = Duration::from_secs(5);
const FAILED_CREATIONS: u64 = 65_536;

impl Creator {
    async fn resolve(self: &Arc<Self>, plan: Plan, raw: &str) -> Resolution {
        let key = (
            plan.identifier.system.clone(),
            plan.identifier.value.clone(),
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
                Some(flight) => flight.clone(),
                None => {
                    // A flight that just ended put its User in the overlay before leaving
                    // this map: look again, or this request would start a second one.
                    if let Some(user) = self.overlay.load().by_identifier(&key.0, &key.1) {
                        return Resolution::Found(
                            user.clone(),
                            Found::ByIdentifier {
                                system: key.0,
                                value: key.1,
                            },
                        );
                    }
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
                    inflight.insert(key, flight.clone());
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
        // Stored already (by another replica, or before a restart whose snapshot lacks
        // it): no userinfo call.
        match self.store.get(&plan.name).await {
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
        self.overlay.rcu(|current| {
            let mut next = UserIndex::clone(current);
            next.insert(user.clone());
            next
        });
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
