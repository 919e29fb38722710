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
use tokio::time::Instant;

use super::API_TIMEOUT;

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
///
/// Each call is cut at [`API_TIMEOUT`], and while this replica holds the Lease, at its
/// renew deadline: the Lease's duration less one renewal period after the last renewal
/// began (10 s by default, like client-go's). A replica that cannot renew by then (the
/// API server down, failing or hung) says it no longer holds it, so that it stops writing
/// before another may take over; it takes the Lease back when the API server answers
/// again and no other replica has it.
pub async fn run(client: Client, settings: LeaseSettings, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let renew_deadline = settings
        .duration
        .saturating_sub(settings.renew_every)
        .max(settings.renew_every.min(settings.duration));
    // Until when this replica may act as the holder, when it holds the Lease.
    let mut held_until: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let mut deadline = started + API_TIMEOUT;
        if let Some(until) = held_until {
            deadline = deadline.min(until);
        }
        let outcome = tokio::time::timeout_at(deadline, try_hold(&api, &settings)).await;
        let holds = match outcome {
            Ok(Ok(true)) => {
                held_until = Some(started + renew_deadline);
                true
            }
            Ok(Ok(false)) => {
                held_until = None;
                false
            }
            Ok(Err(e)) => still_held(&mut held_until, &settings, &e.to_string()),
            Err(_) => still_held(
                &mut held_until,
                &settings,
                &format!("no answer within {:?}", deadline - started),
            ),
        };
        leader.send_if_modified(|was| {
            if *was != holds {
                tracing::info!(holds, lease = %settings.name, "status writer lease");
            }
            std::mem::replace(was, holds) != holds
        });
        // The next try: one period on, or the renew deadline if it comes first.
        let mut next = Instant::now() + settings.renew_every;
        if let Some(until) = held_until {
            next = next.min(until);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = leader.closed() => return,
        }
    }
}

/// After a failed try: whether this replica still holds the Lease (its renew deadline
/// has not passed).
fn still_held(held_until: &mut Option<Instant>, settings: &LeaseSettings, error: &str) -> bool {
    let holds = held_until.is_some_and(|until| Instant::now() < until);
    if !holds {
        *held_until = None;
    }
    tracing::warn!(error = %error, lease = %settings.name, holds, "lease unavailable");
    holds
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

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};
    use tower_test::mock;

    use super::*;

    fn respond(send: mock::SendResponse<Response<Body>>, code: u16, body: Value) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"})
    }

    /// Answers the GET that finds no Lease and the POST that creates it.
    async fn grant(api: &mut mock::Handle<Request<Body>, Response<Body>>) {
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(request.method(), "GET");
        respond(send, 404, not_found());
        let (request, send) = api.next_request().await.unwrap();
        assert_eq!(request.method(), "POST");
        let lease = request.into_body().collect_bytes().await.unwrap();
        let lease: Value = serde_json::from_slice(&lease).unwrap();
        respond(send, 201, lease);
    }

    /// A renewal the API server never answers is cut at the renew deadline: the replica
    /// says it no longer holds the Lease before the Lease lapses for the others, and holds
    /// it again once the API server answers.
    #[tokio::test(start_paused = true)]
    async fn a_hung_renewal_gives_the_lease_up_in_time_and_it_is_taken_back() {
        let (service, mut api) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "portcullis");
        let settings = LeaseSettings::new("portcullis".into(), "replica-1".into());
        let lasts = settings.duration;
        let (leader_tx, mut leader) = watch::channel(false);
        let task = tokio::spawn(run(client, settings, leader_tx));

        let asked = Instant::now();
        grant(&mut api).await;
        leader.wait_for(|holds| *holds).await.unwrap();

        // The next renewal hangs.
        let (request, hung) = api.next_request().await.unwrap();
        assert_eq!(request.method(), "GET");
        leader.wait_for(|holds| !*holds).await.unwrap();
        let released = Instant::now() - asked;
        assert!(released < lasts, "given up after {released:?}");

        // The API server answers again.
        drop(hung);
        grant(&mut api).await;
        leader.wait_for(|holds| *holds).await.unwrap();
        task.abort();
    }
}
