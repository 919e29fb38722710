//! The authorizer that `serve` runs, built from its flags.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::decision::{Authorizer, DecisionLog};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use crate::token::{TokenSettings, TokenVerifier};
use crate::users::{FileUserStore, OnDemand, UserResolver, UserStore, UserinfoClient};

/// `cluster_users`: where created Users go in kube mode; `on_demand`: where Users are read
/// with `--users on-demand`.
pub fn authorizer(
    args: &ServeArgs,
    snapshots: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    cluster_users: Option<Arc<dyn UserStore>>,
    on_demand: Option<Arc<OnDemand>>,
) -> anyhow::Result<Arc<Authorizer>> {
    // One client for every call to an identity provider: JWKS, discovery, introspection,
    // userinfo.
    let idp = args
        .trust
        .idp_client(Duration::from_millis(args.idp_timeout_ms))?
        .allowing_hosts(&args.outbound_allow_hosts);
    if !args.trust.ca_files.is_empty() {
        tracing::info!(ca_files = ?args.trust.ca_files, "identity providers' HTTPS also trusts these CA files");
    }
    let store: Option<Arc<dyn UserStore>> = match (&args.users_dir, cluster_users) {
        _ if !args.create_users => None,
        (_, Some(store)) => Some(store),
        (Some(dir), None) => {
            Some(Arc::new(FileUserStore::new(dir).with_context(|| {
                format!("opening --users-dir {}", dir.display())
            })?))
        }
        (None, None) => None,
    };
    let users = match store {
        Some(store) => {
            let limits = args.creation_limits();
            tracing::info!(store = %store.describe(), ?limits, "creating Users on first sight");
            UserResolver::creating_with_limits(
                store,
                UserinfoClient::new(idp.clone()),
                metrics.clone(),
                limits,
            )
        }
        None => UserResolver::off(),
    }
    .with_name_claims(crate::cli::name_claims(args.claim_users_by_name));
    let users = match on_demand {
        Some(on_demand) => users.with_on_demand(on_demand),
        None => users,
    };
    let tokens = TokenVerifier::with_client(
        TokenSettings {
            max_token_bytes: args.max_token_bytes,
            max_concurrent_introspections: args.max_concurrent_introspections as usize,
            jwks_max_stale: Duration::from_secs(args.jwks_max_stale_secs),
            ..TokenSettings::default()
        },
        idp,
        metrics.clone(),
    );
    metrics.shadow_mode(args.shadow);
    if args.shadow {
        tracing::warn!(
            "shadow mode: every request is allowed; denials are only counted \
             (portcullis_shadow_allowed_total) and logged (shadow=true)"
        );
    }
    Ok(Arc::new(Authorizer {
        snapshots,
        tokens,
        metrics,
        log: DecisionLog::new(args.decision_log_allow_sample),
        deadline: Duration::from_millis(args.decision_timeout_ms),
        users,
        shadow: args.shadow,
    }))
}
