//! The HTTP port: `/healthz`, `/readyz`, `/metrics`, and Envoy's HTTP flavour of ext_authz
//! (Envoy `http_service`, Istio `envoyExtAuthzHttp`) under [`EXT_AUTHZ_PREFIX`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::decision::{Authorizer, Decision, HttpRequest};
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
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(EXT_AUTHZ_PREFIX, axum::routing::any(ext_authz))
        .route(
            &format!("{EXT_AUTHZ_PREFIX}/{{*path}}"),
            axum::routing::any(ext_authz),
        )
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> Response {
    if state.snapshots.is_ready() {
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
    let request = to_http_request(request.method(), request.uri(), request.headers(), peer);
    let decision = state.authorizer.check(&request).await;
    to_response(&decision)
}

fn to_http_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<String>,
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
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Envoy's client puts the original client in x-forwarded-for when it knows it.
    let remote_addr = header("x-forwarded-for")
        .and_then(|v| v.split(',').next().map(|s| s.trim().to_string()))
        .or(peer);
    HttpRequest {
        method: method.as_str().to_string(),
        scheme: header("x-forwarded-proto").unwrap_or_else(|| "http".into()),
        host: header("host").unwrap_or_default(),
        path,
        headers,
        remote_addr,
        context_extensions: Vec::new(),
    }
}

fn to_response(decision: &Decision) -> Response {
    let status = StatusCode::from_u16(decision.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = if decision.allowed() {
        let mut r = StatusCode::OK.into_response();
        for (name, value) in decision.upstream_headers() {
            if let Ok(v) = HeaderValue::from_str(value) {
                r.headers_mut().insert(name, v);
            }
        }
        let remove = decision.headers_to_remove().join(",");
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
    fn strips_the_prefix_and_keeps_the_query() {
        let h = HeaderMap::new();
        let r = to_http_request(
            &Method::GET,
            &"/ext-authz/fhir/Patient?_count=1".parse().unwrap(),
            &h,
            None,
        );
        assert_eq!(r.path, "/fhir/Patient?_count=1");
        let r = to_http_request(&Method::GET, &"/ext-authz".parse().unwrap(), &h, None);
        assert_eq!(r.path, "/");
        let r = to_http_request(&Method::GET, &"/ext-authz?x=1".parse().unwrap(), &h, None);
        assert_eq!(r.path, "/?x=1");
    }
}
