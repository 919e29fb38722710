//! The listeners: gRPC (ext_authz and health), HTTP (probes, metrics, HTTP ext_authz),
//! the optional admin listener (the operator API and the explain page) and the optional
//! admission webhook (HTTPS).

use std::sync::Arc;

use anyhow::{bail, Context};
use futures::TryStreamExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use super::health::Health;
use super::shutdown::Stop;
use crate::cli::ServeArgs;
use crate::decision::Authorizer;
use crate::metrics::Metrics;
use crate::server::admin;
use crate::server::coalesce::Coalescing;
use crate::server::grpc::ExtAuthz;
use crate::server::http::{router, HttpState};
use crate::server::operator::AdminService;
use crate::snapshot::SnapshotStore;

/// Binds the listeners and serves until `stop`.
pub async fn run(
    args: &ServeArgs,
    authorizer: Arc<Authorizer>,
    snapshots: Arc<SnapshotStore>,
    metrics: Arc<Metrics>,
    health: Health,
    stop: Stop,
) -> anyhow::Result<()> {
    let grpc_listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", args.grpc_addr))?;
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", args.http_addr))?;
    tracing::info!(grpc = %args.grpc_addr, http = %args.http_addr, "serving");
    let (webhook_snapshots, webhook_stop) = (snapshots.clone(), stop.clone());

    let per_connection = args.grpc_max_concurrent_per_connection;
    let grpc = tonic::transport::Server::builder()
        // Checks past the limit are refused at once (RESOURCE_EXHAUSTED), never queued.
        .concurrency_limit_per_connection(per_connection as usize)
        .load_shed(true)
        .max_concurrent_streams(per_connection)
        // A peer gone silent is found and its connection closed.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(health.service.clone())
        .add_service(ExtAuthz::new(authorizer.clone()))
        // A listener handed to tonic gets none of its socket settings: without TCP_NODELAY
        // a small answer can wait for the client's delayed ACK (~40 ms on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener)
                .with_nodelay(Some(true))
                .map_ok(Coalescing),
            stop.clone().wait(),
        );
    let http = crate::server::listen::serve(
        http_listener,
        router(HttpState {
            authorizer: authorizer.clone(),
            snapshots,
            metrics,
            draining: health.draining.clone(),
            trust_forwarded: args.http_trust_forwarded,
        }),
        "http",
        stop.clone().wait(),
    );

    let admin = async {
        let (Some(addr), Some(token_file)) = (args.admin_addr, &args.admin_token_file) else {
            return Ok(());
        };
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading --admin-token-file {}", token_file.display()))?;
        if token.trim().len() < 16 {
            bail!("--admin-token-file holds fewer than 16 characters: use a long random token");
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --admin-addr {addr}"))?;
        tracing::info!(admin = %addr, "operator API and explain page enabled");
        // One port, two protocols: the gRPC service over HTTP/2 and the explain page
        // over HTTP/1.1 (or 2), routed by path.
        crate::server::listen::serve(
            listener,
            admin::router(AdminService::new(authorizer, &token)),
            "admin",
            stop.wait(),
        )
        .await;
        Ok(())
    };

    // The admission webhook (--kube): HTTPS, its certificate re-read when it changes.
    let webhook = async {
        let (Some(addr), Some(cert), Some(key)) =
            (args.webhook_addr, &args.tls_cert_file, &args.tls_key_file)
        else {
            return Ok(());
        };
        crate::server::webhook::serve(addr, cert, key, webhook_snapshots, webhook_stop.wait()).await
    };

    tokio::try_join!(
        async { grpc.await.context("gRPC server") },
        async {
            http.await;
            Ok(())
        },
        admin,
        webhook,
    )?;
    Ok(())
}
