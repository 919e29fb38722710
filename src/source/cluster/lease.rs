//! One status writer among the replicas: a `coordination.k8s.io` Lease. The holder renews
//! it; another replica takes it over once it has gone unrenewed for its whole duration.
//! Writes race through `resourceVersion`: of two replicas taking an expired Lease, the
//! API server lets one through and answers the other `409 Conflict`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica, as the Lease names its holder.
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

/// The Lease's name unless `--lease-name` says otherwise.
pub const DEFAULT_NAME: &str = "portcullis-status-writer";

impl LeaseSettings {
    pub fn new(namespace: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name: DEFAULT_NAME.into(),
            identity,
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// Holds or waits for the Lease, and says on `leader` whether this replica holds it.
pub async fn run(client: Client, settings: LeaseSettings, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    loop {
        let holds = match try_hold(&api, &settings).await {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!(error = %e, lease = %settings.name, "lease unavailable");
                false
            }
        };
        leader.send_if_modified(|was| {
            if *was != holds {
                tracing::info!(holds, lease = %settings.name, "status writer lease");
            }
            std::mem::replace(was, holds) != holds
        });
        tokio::select! {
            _ = tokio::time::sleep(settings.renew_every) => {}
            _ = leader.closed() => return,
        }
    }
}

/// Takes or renews the Lease when free, expired or ours. `Ok(false)`: another holds it.
async fn try_hold(api: &Api<Lease>, s: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration = i32::try_from(s.duration.as_secs()).unwrap_or(i32::MAX);
    let params = PostParams::default();
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return created_or_lost(api.create(&params, &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let ours = spec.holder_identity.as_deref() == Some(s.identity.as_str());
    let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap_or(now);
    let lasts = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration).max(0) as u64);
    let expired = now.duration_since(renewed).unsigned_abs() > lasts && now > renewed;
    if !ours && !expired && spec.holder_identity.is_some() {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(s.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration);
    created_or_lost(api.replace(&s.name, &params, &lease).await)
}

fn created_or_lost(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        // Another replica wrote first.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
