//! Envoy's `envoy.service.auth.v3.Authorization/Check`, translated to and from plain data.

pub mod answer;
pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use tracing::Instrument;

use self::answer::{to_check_response, CheckResponse};
use super::spans;
use crate::decision::{request_namespace, Authorizer, HttpRequest};

/// The `envoy.service.auth.v3.Authorization` service. envoy-types generates one too; this
/// one decodes the request as [`wire::CheckRequest`], which reads only what a decision
/// needs.
#[derive(Clone)]
pub struct ExtAuthz {
    authorizer: Arc<Authorizer>,
}

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

impl ExtAuthz {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        ExtAuthz { authorizer }
    }

    async fn check(
        self,
        request: Request<wire::CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let budget = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            // Answer a little before Envoy gives up, so that the denial is ours.
            .map(|t| t - t / 10);
        let request = to_http_request(request.into_inner());
        let span = spans::decision_span(&request);
        let decision = self
            .authorizer
            .check_within(&request, budget)
            .instrument(span.clone())
            .await;
        spans::record(&span, &decision);
        Ok(Response::new(to_check_response(decision)))
    }
}

impl NamedService for ExtAuthz {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl UnaryService<wire::CheckRequest> for ExtAuthz {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<wire::CheckRequest>) -> Self::Future {
        Box::pin(self.clone().check(request))
    }
}

impl<B> Service<http::Request<B>> for ExtAuthz
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CHECK_PATH {
            let status = Status::unimplemented(format!("no method {}", request.uri().path()));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let service = self.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<CheckResponse, wire::CheckRequest>::default());
            Ok(grpc.unary(service, request).await)
        })
    }
}

/// gRPC's `grpc-timeout` header: an integer of at most 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Envoy sends headers either as the `headers` map or, with `encode_raw_headers`, as
/// `header_map` with raw bytes; both are read.
pub fn to_http_request(check: wire::CheckRequest) -> HttpRequest {
    let attributes = check.attributes.unwrap_or_default();
    let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
    let mut headers: Vec<(String, String)> = wire::map_entries(http.headers)
        .map(|(k, v)| (lowercase(k), v))
        .collect();
    if let Some(map) = http.header_map {
        headers.extend(map.headers.into_iter().map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value
            } else {
                super::header_text(&h.raw_value)
            };
            (lowercase(h.key), value)
        }));
    }
    let remote_addr = attributes
        .source
        .and_then(|peer| peer.address)
        .and_then(|a| a.kind)
        .and_then(|kind| match kind {
            wire::Kind::SocketAddress(s) => Some(s.address),
            _ => None,
        });
    let host = if http.host.is_empty() {
        headers
            .iter()
            .find(|(k, _)| k == ":authority" || k == "host")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    } else {
        http.host
    };
    let context_extensions: Vec<_> = wire::map_entries(attributes.context_extensions).collect();
    let principal = attributes.destination.map(|d| d.principal);
    let namespace = request_namespace(&context_extensions, principal.as_deref()).map(str::to_owned);
    HttpRequest {
        method: http.method,
        scheme: http.scheme,
        host,
        path: http.path,
        headers,
        remote_addr,
        context_extensions,
        namespace,
    }
}

/// Envoy sends names in lower case already: lowered in place, no copy.
fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn another_method_of_the_service_is_unimplemented() {
        use tower::ServiceExt;
        let service = ExtAuthz::new(Arc::new(Authorizer {
            snapshots: Default::default(),
            tokens: Default::default(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            log: crate::decision::DecisionLog::new(0),
            users: Default::default(),
            deadline: crate::decision::DEFAULT_DEADLINE,
            shadow: false,
        }));
        let request = http::Request::post("/envoy.service.auth.v3.Authorization/Other")
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "12");
    }

    #[test]
    fn reads_grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_grpc_timeout("999999u"),
            Some(Duration::from_micros(999_999))
        );
        for bad in ["", "m", "123456789m", "12x", "-1m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
