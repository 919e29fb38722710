//! What the server says of its own health: gRPC health (`grpc.health.v1`) and, through
//! `draining`, `/readyz`. Told by the configuration's reload (whichever file serves it) and
//! by the drain ([`super::shutdown`]); reported by the listeners ([`super::servers`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::server::grpc::ExtAuthz;

/// gRPC health (and, through `draining`, `/readyz`): serving once a configuration is
/// loaded, not serving again from the moment a drain starts.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    pub(super) service: HealthServer<HealthService>,
    pub(super) draining: Arc<AtomicBool>,
}

impl Health {
    /// Not serving, until [`Health::ready`].
    pub async fn new() -> Self {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Health {
            reporter,
            service,
            draining: Arc::default(),
        };
        health.set(ServingStatus::NotServing).await;
        health
    }

    /// A configuration serves: say so, unless draining.
    pub async fn ready(&self) {
        if !self.draining.load(Ordering::Relaxed) {
            self.set(ServingStatus::Serving).await;
        }
    }

    pub async fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.set(ServingStatus::NotServing).await;
    }

    /// The whole server (`""`) and the ext_authz service report the same status:
    /// Kubernetes gRPC probes and Envoy health checks without a service name read `""`.
    async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        self.reporter
            .set_service_status(ExtAuthz::NAME, status)
            .await;
    }
}
