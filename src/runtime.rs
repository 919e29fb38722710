//! `portcullis serve`: all the wiring, in one place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::serve::ListenerExt;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::cli::ServeArgs;
use crate::decision::{Authorizer, DecisionLog};
use crate::metrics::Metrics;
use crate::outbound::IdpClient;
use crate::server::admin::{AdminServer, AdminService};
use crate::server::grpc::ExtAuthz;
use crate::server::http::{router, HttpState};
use crate::snapshot::{Compiler, SnapshotStore};
use crate::source::files;
use crate::token::{TokenSettings, TokenVerifier};
use crate::users::{FileUserStore, UserResolver, UserinfoClient};

/// How long a burst of file events must be quiet before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.kube {
        bail!("--kube: the Kubernetes source is not part of this build yet; use --config");
    }
    if !args.namespaces.is_empty() {
        bail!("--namespace selects what --kube watches, and --kube is not part of this build yet");
    }
    if args.config.is_empty() {
        bail!("no configuration: pass --config PATH (a file or directory), or --kube");
    }
    if args.create_users && args.users_dir.is_none() {
        bail!("--create-users in file mode needs --users-dir DIR, where created Users are kept");
    }
    let config = config_paths(&args)?;

    let metrics = Arc::new(Metrics::new());
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
    let snapshots = Arc::new(SnapshotStore::default());
    let authorizer = Arc::new(Authorizer {
        snapshots: snapshots.clone(),
        tokens: TokenVerifier::with_client(
            TokenSettings {
                max_token_bytes: args.max_token_bytes,
                jwks_max_stale: Duration::from_secs(args.jwks_max_stale_secs),
                ..TokenSettings::default()
            },
            idp,
            metrics.clone(),
        ),
        metrics: metrics.clone(),
        log: DecisionLog::new(args.decision_log_allow_sample),
        deadline: std::time::Duration::from_millis(args.decision_timeout_ms),
        users,
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, false).await;

    reload(&config, &snapshots, &metrics, &authorizer.users);
    if snapshots.is_ready() {
        set_health(&health, true).await;
    }
    let (_watcher, mut changes) =
        // Not the users dir: each created User would otherwise reload everything. Created
        // Users are served from the resolver's overlay and read back at the next reload.
        files::watch(&args.config, RELOAD_SETTLE).context("watching the configuration")?;
    let draining = Arc::new(AtomicBool::new(false));
    {
        let snapshots = snapshots.clone();
        let metrics = metrics.clone();
        let health = health.clone();
        let authorizer = authorizer.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                // Reading and compiling is blocking work: keep it off the request threads.
                let loaded = tokio::task::block_in_place(|| {
                    reload(&config, &snapshots, &metrics, &authorizer.users)
                });
                if loaded && !draining.load(Ordering::Relaxed) {
                    set_health(&health, true).await;
                }
            }
        });
    }

    let grpc_listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", args.grpc_addr))?;
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", args.http_addr))?;
    tracing::info!(grpc = %args.grpc_addr, http = %args.http_addr, "serving");

    // On SIGTERM: report not ready and not serving first, keep answering for the drain
    // period while Envoy and the Service stop sending here, then stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let health = health.clone();
        let draining = draining.clone();
        let drain = Duration::from_millis(args.drain_ms);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!(
                drain_ms = drain.as_millis() as u64,
                "shutting down: not ready, draining"
            );
            draining.store(true, Ordering::Relaxed);
            set_health(&health, false).await;
            tokio::time::sleep(drain).await;
            let _ = stop_tx.send(true);
        });
    }
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(ExtAuthz::new(authorizer.clone())))
        // A listener handed to tonic gets none of its socket settings: without TCP_NODELAY
        // a small answer can wait for the client's delayed ACK (~40 ms on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            stopped(),
        );
    let http = axum::serve(
        http_listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        }),
        router(HttpState {
            authorizer: authorizer.clone(),
            snapshots: snapshots.clone(),
            metrics: metrics.clone(),
            draining: draining.clone(),
        })
        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(stopped());

    let admin = async {
        let (Some(addr), Some(token_file)) = (args.admin_addr, &args.admin_token_file) else {
            return Ok(());
        };
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading --admin-token-file {}", token_file.display()))?;
        if token.trim().len() < 16 {
            bail!("--admin-token-file holds fewer than 16 characters: use a long random token");
        }
        tracing::info!(admin = %addr, "operator API enabled");
        tonic::transport::Server::builder()
            .add_service(AdminServer::new(AdminService::new(
                authorizer.clone(),
                &token,
            )))
            .serve_with_shutdown(addr, stopped())
            .await
            .with_context(|| format!("serving --admin-addr {addr}"))
    };

    tokio::try_join!(
        async { grpc.await.context("gRPC server") },
        async { http.await.context("HTTP server") },
        admin,
    )?;
    tracing::info!("stopped");
    Ok(())
}

/// What file mode reads: the `--config` paths, then the directory of created Users.
struct ConfigPaths {
    config: Vec<PathBuf>,
    /// `--users-dir`, canonical: read after the rest, and leniently, even when it sits
    /// inside a `--config` directory.
    users_dir: Option<PathBuf>,
}

fn config_paths(args: &ServeArgs) -> anyhow::Result<ConfigPaths> {
    let users_dir = match &args.users_dir {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --users-dir {}", dir.display()))?;
            Some(
                dir.canonicalize()
                    .with_context(|| format!("reading --users-dir {}", dir.display()))?,
            )
        }
    };
    Ok(ConfigPaths {
        config: args.config.clone(),
        users_dir,
    })
}

/// Load and compile the files; swap the snapshot only if everything compiled.
/// Returns whether a new snapshot is serving.
fn reload(
    paths: &ConfigPaths,
    snapshots: &SnapshotStore,
    metrics: &Metrics,
    users: &UserResolver,
) -> bool {
    let mut compiler = Compiler::default();
    let except = paths.users_dir.as_deref();
    let mut count = files::load_each_except(&paths.config, except, |item| compiler.push(item));
    if let Some(dir) = &paths.users_dir {
        count += files::load_each(std::slice::from_ref(dir), |item| {
            compiler.push_created_user(item)
        });
    }
    match compiler.finish() {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                tracing::warn!(warning = %w, "configuration warning");
            }
            for s in &snapshot.skipped {
                tracing::error!(error = %s, "created User file skipped; fix or remove it");
            }
            tracing::info!(summary = %snapshot.summary(), "configuration loaded");
            metrics.config_loaded(true, count, snapshot.warnings.len());
            metrics.user_files_skipped(snapshot.skipped.len());
            snapshots.store(snapshot);
            if let Some(serving) = snapshots.load() {
                users.snapshot_changed(&serving);
            }
            true
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!(error = %e, "configuration error");
            }
            let serving = if snapshots.is_ready() {
                "the last good configuration keeps serving"
            } else {
                "not ready: no good configuration yet"
            };
            tracing::error!(errors = errors.len(), "configuration rejected; {serving}");
            metrics.config_loaded(false, 0, 0);
            false
        }
    }
}

/// The whole server (`""`) and the ext_authz service report the same status: Kubernetes
/// gRPC probes and Envoy health checks without a service name read `""`.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    if serving {
        health.set_serving::<AuthorizationServer<ExtAuthz>>().await;
    } else {
        health
            .set_not_serving::<AuthorizationServer<ExtAuthz>>()
            .await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
