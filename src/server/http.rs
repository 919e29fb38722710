//! The HTTP port: `/healthz`, `/readyz`, `/metrics`, and Envoy's HTTP flavour of ext_authz
//! (Envoy `http_service`, Istio `envoyExtAuthzHttp`) under [`EXT_AUTHZ_PREFIX`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use tracing::Instrument;

use super::spans;
use crate::decision::{Authorizer, Decision, HttpRequest, IDENTITY_HEADERS};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;

/// Envoy's `http_service.path_prefix` must be this: `/ext-authz/fhir/Patient` asks about
/// `GET /fhir/Patient`. The prefix keeps authorised paths apart from `/healthz` and friends.
pub const EXT_AUTHZ_PREFIX: &str = "/ext-authz";

/// Tells Envoy's HTTP ext_authz client which upstream request headers to drop.
const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

#[derive(Clone)]
pub struct HttpState {
    pub authorizer: Arc<Authorizer>,
    pub snapshots: Arc<SnapshotStore>,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: `/readyz` fails so that traffic moves away before the server stops.
    pub draining: Arc<AtomicBool>,
    /// `--http-trust-forwarded`: whether `X-Forwarded-For` / `X-Forwarded-Proto` are
    /// Envoy's (the edge, `use_remote_address: true`) rather than the client's.
    pub trust_forwarded: bool,
}

/// Whose `X-Forwarded-For` / `X-Forwarded-Proto` the HTTP flavour receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forwarded {
    /// Envoy's own (`--http-trust-forwarded`): the edge appended the peer and set the scheme.
    Trusted,
    /// Perhaps the client's, passed on: ignored. `remote-addr` is absent (the connection's
    /// peer is Envoy, not the client) and `scheme` is `http`.
    Ignored,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(EXT_AUTHZ_PREFIX, axum::routing::any(ext_authz))
        // A request for `/` arrives as `/ext-authz/`, which the wildcard below (one or
        // more characters) does not match.
        .route(
            &format!("{EXT_AUTHZ_PREFIX}/"),
            axum::routing::any(ext_authz),
        )
        .route(
            &format!("{EXT_AUTHZ_PREFIX}/{{*path}}"),
            axum::routing::any(ext_authz),
        )
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if state.snapshots.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no configuration loaded").into_response()
    }
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn ext_authz(State(state): State<HttpState>, request: Request<Body>) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let forwarded = if state.trust_forwarded {
        Forwarded::Trusted
    } else {
        Forwarded::Ignored
    };
    let request = to_http_request(
        request.method(),
        request.uri(),
        request.headers(),
        peer,
        forwarded,
    );
    let span = spans::decision_span(&request);
    let decision = state
        .authorizer
        .check(&request)
        .instrument(span.clone())
        .await;
    spans::record(&span, &decision);
    to_response(&decision)
}

fn to_http_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<String>,
    forwarded: Forwarded,
) -> HttpRequest {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = path_and_query
        .strip_prefix(EXT_AUTHZ_PREFIX)
        .filter(|p| p.is_empty() || p.starts_with('/') || p.starts_with('?'))
        .unwrap_or(path_and_query);
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), super::header_text(v.as_bytes())))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (remote_addr, scheme) = match forwarded {
        // The rightmost x-forwarded-for entry is the one the nearest proxy (Envoy)
        // appended; entries to its left are whatever the client chose to send.
        Forwarded::Trusted => (
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next().map(|s| s.trim().to_string()))
                .filter(|s| !s.is_empty())
                .or(peer),
            header("x-forwarded-proto"),
        ),
        Forwarded::Ignored => (None, None),
    };
    HttpRequest {
        method: method.as_str().to_string(),
        scheme: scheme.unwrap_or_else(|| "http".into()),
        host: header("host").unwrap_or_default(),
        path,
        headers,
        remote_addr,
        context_extensions: Vec::new(),
        // Envoy's HTTP flavour sends no route context nor peer identity: only the root's
        // resources apply (docs/tenancy.md points tenants to the gRPC flavour).
        namespace: None,
    }
}

fn to_response(decision: &Decision) -> Response {
    // Envoy's HTTP ext_authz client takes any 5xx for a failure of the authorizer, which
    // `failure_mode_allow` (Istio `failOpen`) turns into an allow. "Cannot decide" is
    // therefore a 403 here; the body still says `temporarily_unavailable`.
    let status = match decision.http_status() {
        s if s >= 500 => StatusCode::FORBIDDEN,
        s => StatusCode::from_u16(s).unwrap_or(StatusCode::FORBIDDEN),
    };
    let mut response = if decision.allowed() {
        let mut r = StatusCode::OK.into_response();
        for (name, value) in decision.upstream_headers() {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
                r.headers_mut().insert(k, v);
            }
        }
        // Whatever was not set, even a value that could not be a header, is removed.
        let claims = decision.claim_headers.as_deref().unwrap_or_default();
        let remove = IDENTITY_HEADERS
            .into_iter()
            .chain(claims.iter().map(|h| &**h))
            .filter(|h| !r.headers().contains_key(*h))
            .collect::<Vec<_>>()
            .join(",");
        if !remove.is_empty() {
            r.headers_mut().insert(
                HEADERS_TO_REMOVE,
                HeaderValue::from_str(&remove).expect("ascii"),
            );
        }
        r
    } else {
        let mut r = (status, decision.body()).into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(challenge) = decision.www_authenticate() {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, v);
            }
        }
        r
    };
    *response.status_mut() = if decision.allowed() {
        StatusCode::OK
    } else {
        status
    };
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_decide_is_a_403_that_envoy_will_not_fail_open() {
        let decision = Decision {
            outcome: crate::decision::Outcome::Unavailable,
            reason: "deadline_exceeded",
            message: "slow".into(),
            token_given: true,
            policy: None,
            user: None,
            subject: None,
            issuer: None,
            forwarded: Vec::new(),
            claim_headers: None,
            dry_run_allows: Vec::new(),
            shadow: false,
        };
        let response = to_response(&decision);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(HEADERS_TO_REMOVE).is_none());
    }

    fn forwarded(xff: &'static str, proto: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static(xff));
        h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
        h
    }

    fn translate(headers: &HeaderMap, forwarded: Forwarded) -> HttpRequest {
        to_http_request(
            &Method::GET,
            &"/ext-authz/x".parse().unwrap(),
            headers,
            Some("127.0.0.1".into()),
            forwarded,
        )
    }

    #[test]
    fn trusted_the_remote_address_is_the_one_envoy_appended() {
        let r = translate(&forwarded("6.6.6.6, 10.0.0.7", "https"), Forwarded::Trusted);
        assert_eq!(r.remote_addr.as_deref(), Some("10.0.0.7"));
        assert_eq!(r.scheme, "https");
        let r = translate(&HeaderMap::new(), Forwarded::Trusted);
        assert_eq!(r.remote_addr.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.scheme, "http");
    }

    /// Without `--http-trust-forwarded`, a client's copies never reach the context: the
    /// address is absent (the peer is Envoy, not the client) and the scheme is `http`.
    #[test]
    fn untrusted_forwarded_headers_are_ignored() {
        for headers in [forwarded("10.9.9.9", "https"), HeaderMap::new()] {
            let r = translate(&headers, Forwarded::Ignored);
            assert_eq!(r.remote_addr, None);
            assert_eq!(r.scheme, "http");
            // Still a header like any other, for a policy that means to test it.
            assert_eq!(
                r.headers
                    .iter()
                    .any(|(k, v)| k == "x-forwarded-for" && v == "10.9.9.9"),
                !headers.is_empty()
            );
        }
    }

    #[test]
    fn strips_the_prefix_and_keeps_the_query() {
        let h = HeaderMap::new();
        let r = to_http_request(
            &Method::GET,
            &"/ext-authz/fhir/Patient?_count=1".parse().unwrap(),
            &h,
            None,
            Forwarded::Ignored,
        );
        assert_eq!(r.path, "/fhir/Patient?_count=1");
        let r = to_http_request(
            &Method::GET,
            &"/ext-authz".parse().unwrap(),
            &h,
            None,
            Forwarded::Ignored,
        );
        assert_eq!(r.path, "/");
        let r = to_http_request(
            &Method::GET,
            &"/ext-authz?x=1".parse().unwrap(),
            &h,
            None,
            Forwarded::Ignored,
        );
        assert_eq!(r.path, "/?x=1");
        let r = to_http_request(
            &Method::GET,
            &"/ext-authz/?x=1".parse().unwrap(),
            &h,
            None,
            Forwarded::Ignored,
        );
        assert_eq!(r.path, "/?x=1");
    }

    /// Envoy asks about `/` as `/ext-authz/` (its path prefix, then the request path).
    #[tokio::test]
    async fn the_root_path_is_routed_to_ext_authz() {
        use tower::ServiceExt;
        let state = HttpState {
            authorizer: Arc::new(crate::decision::Authorizer {
                snapshots: Arc::new(SnapshotStore::default()),
                tokens: Default::default(),
                metrics: Arc::new(Metrics::new()),
                log: crate::decision::DecisionLog::new(0),
                users: Default::default(),
                deadline: crate::decision::DEFAULT_DEADLINE,
                shadow: false,
            }),
            snapshots: Arc::new(SnapshotStore::default()),
            metrics: Arc::new(Metrics::new()),
            draining: Default::default(),
            trust_forwarded: false,
        };
        for uri in [
            "/ext-authz/",
            "/ext-authz/?a=1",
            "/ext-authz",
            "/ext-authz/x?a=1",
        ] {
            let response = router(state.clone())
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            // No configuration loaded: the authorizer's own "cannot decide", not a 404.
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri}");
        }
    }
}
