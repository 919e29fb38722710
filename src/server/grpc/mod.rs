//! Envoy's `envoy.service.auth.v3.Authorization/Check`, translated to and from plain data.

pub mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use envoy_types::pb::google::rpc;
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use tracing::Instrument;

use super::trace;
use crate::decision::{Authorizer, Decision, HttpRequest, Outcome};

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
        let span = trace::decision_span(&request);
        let decision = self
            .authorizer
            .check_within(&request, budget)
            .instrument(span.clone())
            .await;
        trace::record(&span, &decision);
        Ok(Response::new(to_check_response(&decision)))
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
                String::from_utf8_lossy(&h.raw_value).into_owned()
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
    HttpRequest {
        method: http.method,
        scheme: http.scheme,
        host,
        path: http.path,
        headers,
        remote_addr,
        context_extensions: wire::map_entries(attributes.context_extensions).collect(),
    }
}

/// Envoy sends names in lower case already: lowered in place, no copy.
fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

pub fn to_check_response(decision: &Decision) -> CheckResponse {
    let header = |key: &str, value: &str| HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        // Replaces a client-sent copy of the same header.
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    };
    if decision.allowed() {
        return CheckResponse {
            status: Some(rpc::Status {
                code: rpc::Code::Ok as i32,
                ..Default::default()
            }),
            dynamic_metadata: Some(metadata(decision)),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: decision
                    .upstream_headers()
                    .into_iter()
                    .map(|(k, v)| header(k, v))
                    .collect(),
                headers_to_remove: decision
                    .headers_to_remove()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            })),
        };
    }
    let code = match decision.outcome {
        Outcome::Unauthenticated => rpc::Code::Unauthenticated,
        Outcome::Unavailable => rpc::Code::Unavailable,
        _ => rpc::Code::PermissionDenied,
    };
    let mut headers = vec![header("content-type", "application/json")];
    if let Some(challenge) = decision.www_authenticate() {
        headers.push(header("www-authenticate", &challenge));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: code as i32,
            message: decision.reason.to_string(),
            ..Default::default()
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: decision.http_status() as i32,
            }),
            headers,
            body: decision.body(),
        })),
        ..Default::default()
    }
}

/// Envoy dynamic metadata (namespace `envoy.filters.http.ext_authz`) on allow, for access
/// logs and rate limits: `user`, `subject`, `issuer`, `policy`, those that are set.
fn metadata(decision: &Decision) -> Struct {
    let fields = [
        ("user", &decision.user),
        ("subject", &decision.subject),
        ("issuer", &decision.issuer),
        ("policy", &decision.policy),
    ]
    .into_iter()
    .filter_map(|(key, value)| {
        let value = Value {
            kind: Some(Kind::StringValue(value.clone()?)),
        };
        Some((key.to_string(), value))
    })
    .collect();
    Struct { fields }
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

    #[test]
    fn an_allow_carries_dynamic_metadata_and_forwarded_claims() {
        let decision = Decision {
            outcome: Outcome::Allow,
            reason: "allowed",
            message: "allowed".into(),
            token_given: true,
            policy: Some("p".into()),
            user: None,
            subject: Some("ann".into()),
            issuer: Some("https://a".into()),
            forwarded: vec![("x-tenant".into(), "acme".into())],
            claim_headers: Some(vec!["x-tenant".into(), "x-org".into()].into()),
        };
        let response = to_check_response(&decision);
        let metadata = response.dynamic_metadata.unwrap().fields;
        let text = |k: &str| match &metadata[k].kind {
            Some(Kind::StringValue(s)) => s.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(
            (text("policy"), text("subject")),
            ("p".into(), "ann".into())
        );
        assert!(!metadata.contains_key("user"));
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("not an OK response")
        };
        let headers: Vec<(String, String)> = ok
            .headers
            .iter()
            .map(|h| {
                let h = h.header.as_ref().unwrap();
                (h.key.clone(), h.value.clone())
            })
            .collect();
        assert!(headers.contains(&("x-tenant".into(), "acme".into())));
        assert_eq!(ok.headers_to_remove, ["x-portcullis-user", "x-org"]);
    }
}
