//! The authorizer that `serve` runs, built from its flags.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::decision::{Authorizer, DecisionLog};
use crate::metrics::Metrics;
use crate::outbound::IdpClient;
use crate::snapshot::SnapshotStore;
use crate::token::{TokenSettings, TokenVerifier};
use crate::users::{FileUserStore, UserResolver, UserinfoClient};

pub fn authorizer(
    args: &ServeArgs,
    snapshots: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Authorizer>> {
    // One client for every call to an identity provider: JWKS, discovery, introspection,
    // userinfo.
    let idp = IdpClient::new(Duration::from_millis(args.idp_timeout_ms));
    let users = match (&args.users_dir, args.create_users) {
        (Some(dir), true) => {
            let store = FileUserStore::new(dir)
                .with_context(|| format!("opening --users-dir {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "creating Users on first sight");
            UserResolver::creating(
                Arc::new(store),
                UserinfoClient::new(idp.clone()),
                metrics.clone(),
            )
        }
        _ => UserResolver::off(),
    }
    .with_name_claims(crate::cli::name_claims(args.claim_users_by_name));
    let tokens = TokenVerifier::with_client(
        TokenSettings {
            max_token_bytes: args.max_token_bytes,
            jwks_max_stale: Duration::from_secs(args.jwks_max_stale_secs),
            ..TokenSettings::default()
        },
        idp,
        metrics.clone(),
    );
    Ok(Arc::new(Authorizer {
        snapshots,
        tokens,
        metrics,
        log: DecisionLog::new(args.decision_log_allow_sample),
        deadline: Duration::from_millis(args.decision_timeout_ms),
        users,
    }))
}
