//! `portcullis serve`: the wiring, one seam per file.
//!
//! - [`flags`]: what the flags ask for, checked before anything starts;
//! - [`build`]: the authorizer (token verifier, user resolver, decision log) from flags;
//! - [`reload`]: serves what the chosen source (`crate::source`) loaded, or keeps the last
//!   good configuration;
//! - [`health`]: what the server says of its health (gRPC health, `/readyz`), told by the
//!   reload and the drain;
//! - [`servers`]: the gRPC, HTTP and admin listeners, and the admission webhook;
//! - [`shutdown`]: SIGTERM, drain, stop.

mod build;
mod flags;
mod health;
mod reload;
mod servers;
mod shutdown;

use std::sync::Arc;

use anyhow::Context;

use crate::cli::ServeArgs;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let source = flags::check(&args)?;

    let metrics = match args.policy_metrics {
        true => Metrics::new().with_policy_metrics(),
        false => Metrics::new(),
    };
    let metrics = Arc::new(metrics);
    let snapshots = Arc::new(SnapshotStore::default());
    let health = health::Health::new().await;
    let reloader = |authorizer: &Arc<crate::decision::Authorizer>| reload::Reloader {
        snapshots: snapshots.clone(),
        metrics: metrics.clone(),
        authorizer: authorizer.clone(),
        health: health.clone(),
    };

    let (authorizer, _watch) = match source {
        flags::Source::Files(files) => {
            let authorizer =
                build::authorizer(&args, snapshots.clone(), metrics.clone(), None, None)?;
            let (first, watch, loaded) = files.start().context("watching the configuration")?;
            let reloader = reloader(&authorizer);
            reloader.apply(first).await;
            reloader.follow(loaded);
            (authorizer, Some(watch))
        }
        flags::Source::Cluster(settings) => {
            let connecting = "connecting to the Kubernetes API (in-cluster or KUBECONFIG)";
            let config = crate::source::cluster::config().await.context(connecting)?;
            let client = kube::Client::try_from(config.clone()).context(connecting)?;
            let cluster = crate::source::cluster::Cluster::start(
                client,
                settings,
                args.lease_namespace.clone(),
                args.lease_name.clone(),
                metrics.clone(),
            );
            let lookups = crate::source::cluster::lookup_client(config).context(connecting)?;
            let on_demand = cluster.user_lookup(lookups).map(|(lookup, counts)| {
                let cache = args.users.cache();
                tracing::info!(?cache, "Users read on demand (--users on-demand)");
                crate::users::OnDemand::new(lookup, counts, cache, metrics.clone())
            });
            let authorizer = build::authorizer(
                &args,
                snapshots.clone(),
                metrics.clone(),
                Some(cluster.user_store()),
                on_demand,
            )?;
            reloader(&authorizer).follow(cluster.loaded);
            (authorizer, None)
        }
    };

    let shutdown = shutdown::on_signal(health.clone(), args.drain_ms);
    servers::run(&args, authorizer, snapshots, metrics, health, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
