//! Who is calling: the one home of a User (docs/users.md).
//!
//! This module owns a User's data ([`KnownUser`], and its one conversion each way to the
//! `User` object), the index of Users ([`UserIndex`], the one way into it, [`admit`], and
//! the pair of indexes the cluster changes in place), the Users created since the serving
//! snapshot (the overlay), and the stores created Users are written to ([`UserStore`]:
//! files or the cluster). Its two verbs, on plain input ([`Subject`]):
//!
//! - [`UserResolver::find`]: steps 1–2, a User by name, then by identifier;
//! - [`UserResolver::create`]: step 3, the User created on first sight (plan, userinfo,
//!   store), one creation per subject however many requests ask at once.
//!
//! With `--users on-demand` ([`OnDemand`]) no snapshot holds the Users: after the snapshot
//! and the overlay, [`UserResolver::look_up`] reads them from where they are kept (a
//! [`UserLookup`]: the cluster) behind a bounded, expiring cache.
//!
//! It knows nothing of snapshots, tokens or the cluster: the decision pipeline turns its
//! snapshot and token into a [`Subject`], and the cluster's writer task serves the cluster
//! store's [`CreateUser`] requests.

mod create;
mod find;
mod index;
mod limits;
mod names;
mod naming;
mod on_demand;
mod store;
mod subject;
mod user;
mod userinfo;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;

pub use create::{plan, DataSource, Plan, USERINFO_RETRY_AFTER};
pub use find::{find, Found, NameClaims};
pub use index::{admit, admit_known, Refused, UserIndex, UserIndexPair};
pub use limits::{
    CreationLimits, Limit, UserCounts, DEFAULT_CREATE_BURST, DEFAULT_CREATE_RATE,
    DEFAULT_MAX_USERS, DEFAULT_MAX_USERS_PER_NAMESPACE,
};
pub use names::{NameList, UserNames};
pub use naming::{
    identifier_label, is_valid_name, user_name, LabelCheck, IDENTIFIER_LABEL, MAX_NAME_LEN,
};
pub use on_demand::{
    CacheSettings, Looked, LookupFailure, LookupResult, OnDemand, UserLookup,
    DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_NEGATIVE_TTL, DEFAULT_CACHE_TTL, LOOKUP_BACKOFF,
};
pub use store::{
    manifest, ClusterUserStore, CreateUser, FileUserStore, StoreError, UserStore, MANAGED_BY_LABEL,
    PROVIDER_LABEL,
};
pub use subject::{Provider, ProviderRef, Subject};
pub use user::{KnownUser, MAX_USER_BYTES};
pub use userinfo::{UserinfoClient, UserinfoError, MAX_USERINFO_BYTES, USERINFO_TIMEOUT};

use create::Creator;

/// What resolution came to.
#[derive(Debug, Clone)]
pub enum Resolution {
    Found(KnownUser, Found),
    /// Created now (or by a concurrent request for the same subject).
    Created(KnownUser),
    /// `explain`: creation would run, but explain never creates.
    WouldCreate(Plan),
    /// The userinfo call failed: no `user` this time.
    UserinfoFailed {
        name: String,
        error: String,
    },
    /// The store failed, or holds another user under this name: no `user` this time.
    CreateFailed {
        name: String,
        error: String,
    },
    /// A limit on creation (rate, namespace cap, total cap) was reached: no `user` this
    /// time, as when the provider is down.
    Limited {
        name: String,
        limit: Limit,
        why: String,
    },
    /// `--users on-demand`: reading the User failed, or took longer than the decision
    /// could wait: no `user` this time.
    LookupFailed(LookupFailure),
    /// No User, and none to create: why.
    None(Cow<'static, str>),
}

impl Resolution {
    pub fn user(&self) -> Option<&KnownUser> {
        match self {
            Resolution::Found(u, _) | Resolution::Created(u) => Some(u),
            _ => None,
        }
    }
}

/// Finds the User behind a token, and creates it when `--create-users` is on.
pub struct UserResolver {
    /// Users created since the serving snapshot was built, consulted after it.
    overlay: Arc<ArcSwap<UserIndex>>,
    creation: Creation,
    name_claims: NameClaims,
    /// `--users on-demand`: where Users the snapshot does not hold are read.
    on_demand: Option<Arc<OnDemand>>,
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
            on_demand: None,
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

    /// Like [`UserResolver::creating`], within these limits rather than the defaults.
    pub fn creating_with_limits(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
        limits: CreationLimits,
    ) -> Self {
        Self::creating_with(store, userinfo, metrics, USERINFO_RETRY_AFTER, limits)
    }

    pub fn creating_with_retry(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
        retry_after: Duration,
    ) -> Self {
        Self::creating_with(
            store,
            userinfo,
            metrics,
            retry_after,
            CreationLimits::default(),
        )
    }

    fn creating_with(
        store: Arc<dyn UserStore>,
        userinfo: UserinfoClient,
        metrics: Arc<Metrics>,
        retry_after: Duration,
        limits: CreationLimits,
    ) -> Self {
        let overlay: Arc<ArcSwap<UserIndex>> = Default::default();
        let creator = Creator::new(
            store,
            userinfo,
            metrics,
            overlay.clone(),
            retry_after,
            limits,
        );
        UserResolver {
            creation: Creation::On(Arc::new(creator)),
            overlay,
            name_claims: NameClaims::default(),
            on_demand: None,
        }
    }

    /// `--users on-demand`: Users that neither the snapshot nor the overlay holds are read
    /// through `on_demand` ([`UserResolver::look_up`]); Users created go into its cache,
    /// and the caps on creation count what it counts.
    pub fn with_on_demand(mut self, on_demand: Arc<OnDemand>) -> Self {
        if let Creation::On(creator) = &mut self.creation {
            Arc::get_mut(creator)
                .expect("the creator is not shared before the resolver is built")
                .on_demand = Some(on_demand.clone());
        }
        self.on_demand = Some(on_demand);
        self
    }

    /// Users are read on demand (`--users on-demand`).
    pub fn on_demand(&self) -> Option<&Arc<OnDemand>> {
        self.on_demand.as_ref()
    }

    /// Whether Users without identifiers may be claimed by name (see [`NameClaims`]).
    pub fn with_name_claims(mut self, name_claims: NameClaims) -> Self {
        self.name_claims = name_claims;
        self
    }

    /// Steps 1 and 2: the existing User of `subject`, in `serving` (the snapshot's Users)
    /// and then among the Users created since.
    pub fn find(&self, serving: &UserIndex, subject: &Subject<'_>) -> Option<(KnownUser, Found)> {
        find(
            serving,
            Some(&self.overlay.load()),
            subject,
            self.name_claims,
        )
    }

    /// Steps 1 and 2 again, on the Users read on demand, once [`UserResolver::find`] found
    /// nothing; waits for a read at most until `until`. `None` without `--users on-demand`.
    pub async fn look_up(
        &self,
        subject: &Subject<'_>,
        until: tokio::time::Instant,
    ) -> Option<on_demand::Looked> {
        let on_demand = self.on_demand.as_ref()?;
        Some(on_demand.find(subject, self.name_claims, until).await)
    }

    /// Step 3, once [`UserResolver::find`] found nothing: the User created for `subject`.
    /// `raw` is the token as presented, for the userinfo call; `serving` holds the
    /// snapshot's Users, counted against the caps on creation. With `dry_run` (explain)
    /// nothing is fetched or created.
    pub async fn create(
        &self,
        serving: &UserIndex,
        subject: &Subject<'_>,
        raw: &str,
        dry_run: bool,
    ) -> Resolution {
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
        let plan = match plan(subject) {
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
            Some(creator) if !dry_run => Box::pin(creator.resolve(plan, raw, serving)).await,
            _ => Resolution::WouldCreate(plan),
        }
    }

    /// A new snapshot serves `serving`: created Users it now holds leave the overlay, so
    /// that a User file deleted later is gone after the next reload.
    pub fn index_changed(&self, serving: &UserIndex) {
        self.overlay.rcu(|current| {
            let mut next = UserIndex::default();
            for user in current.users() {
                if serving.by_name(user.name()).is_none() {
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
