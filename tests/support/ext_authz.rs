//! Asking portcullis directly, the way Envoy does: `envoy.service.auth.v3.Authorization/
//! Check` over gRPC, and the HTTP flavour (`/ext-authz<path>` on `--http-addr`); and
//! reading any HTTP answer (from portcullis or through Envoy).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap as ProtoHeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use reqwest::StatusCode;
use tonic::transport::Channel;

use super::portcullis::Portcullis;
use super::tokens::bearer;
use super::upstream::Echoed;

/// The host every check asks about.
const HOST: &str = "api.example.com";

/// What Envoy would make of one `Check` answer.
#[derive(Debug)]
pub struct Checked {
    pub allowed: bool,
    /// 200 for an allow, else the denial's HTTP status.
    pub status: u16,
    /// Headers set on the upstream request (allow) or on the denial.
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Checked {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A `CheckRequest` as Envoy builds it, with these headers besides the pseudo-headers.
/// In `header_map` (Envoy's `encode_raw_headers`, where a name may repeat) when
/// `raw_header_map`, else in the `headers` map (where it may not).
pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    raw_header_map: bool,
) -> CheckRequest {
    let mut all: Vec<(String, String)> = vec![
        (":authority".into(), HOST.into()),
        (":method".into(), method.into()),
        (":path".into(), path.into()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut http = HttpRequest {
        method: method.into(),
        path: path.into(),
        host: HOST.into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    if raw_header_map {
        http.header_map = Some(ProtoHeaderMap {
            headers: all
                .into_iter()
                .map(|(key, value)| HeaderValue {
                    key,
                    raw_value: value.into_bytes(),
                    ..Default::default()
                })
                .collect(),
        });
    } else {
        let map: HashMap<String, String> = all.iter().cloned().collect();
        assert_eq!(
            map.len(),
            all.len(),
            "a header name repeats: use header_map"
        );
        http.headers = map;
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Sends one `Check`; panics on a gRPC error or an answer Envoy could not use.
pub async fn send(client: &mut AuthorizationClient<Channel>, request: CheckRequest) -> Checked {
    let response = client
        .check(request)
        .await
        .unwrap_or_else(|e| panic!("ext_authz Check: {e}"))
        .into_inner();
    let allowed = response.status.as_ref().map_or(-1, |s| s.code) == 0;
    let header_map = |hs: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption]| {
        hs.iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect::<HashMap<_, _>>()
    };
    match response.http_response {
        Some(HttpResponse::OkResponse(ok)) if allowed => Checked {
            allowed,
            status: 200,
            headers: header_map(&ok.headers),
            body: String::new(),
        },
        Some(HttpResponse::DeniedResponse(denied)) if !allowed => Checked {
            allowed,
            status: denied.status.map_or(403, |s| s.code as u16),
            headers: header_map(&denied.headers),
            body: denied.body,
        },
        other => panic!("inconsistent CheckResponse: status {allowed}, {other:?}"),
    }
}

/// `method path`, with `Authorization: Bearer <token>` when a token is given.
pub async fn check(
    client: &mut AuthorizationClient<Channel>,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Checked {
    let authorization = token.map(bearer);
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .collect();
    send(client, check_request(method, path, &headers, false)).await
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.expect("read the body"),
        }
    }

    /// A header's (first) value, lossily.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The request as the echo upstream saw it (only for answers that came from it).
    pub fn echoed(&self) -> Echoed {
        assert_eq!(self.status, StatusCode::OK, "not from upstream: {self:#?}");
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("upstream body is not the echo JSON ({e}): {}", self.body))
    }

    /// A denial with `status` and a JSON body; a 401 carries the RFC 6750 challenge,
    /// `error="invalid_token"` when a token was given.
    pub fn assert_denial(&self, what: &str, status: StatusCode, token_given: bool) {
        assert_eq!(self.status, status, "{what}: {self:#?}");
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("{what}: 401 without www-authenticate: {self:#?}"));
            assert!(
                challenge.starts_with("Bearer"),
                "{what}: www-authenticate {challenge:?} does not start with Bearer"
            );
            if token_given {
                assert!(
                    challenge.contains(r#"error="invalid_token""#),
                    "{what}: www-authenticate {challenge:?} lacks error=\"invalid_token\""
                );
            }
        }
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: deny content-type {content_type:?}, want application/json: {self:#?}"
        );
        serde_json::from_str::<serde_json::Value>(&self.body)
            .unwrap_or_else(|e| panic!("{what}: deny body is not JSON ({e}): {:?}", self.body));
    }
}

/// `GET url` with these headers (a name may repeat), read whole.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = super::http_client().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    Answer::read(response).await
}

/// `GET /ext-authz<path>` on portcullis's HTTP port with these headers (a name may
/// repeat): the HTTP flavour of ext_authz, no Envoy needed.
pub async fn http_check(p: &Portcullis, path: &str, headers: &[(&str, &str)]) -> Answer {
    get(&p.http_url(&format!("/ext-authz{path}")), headers).await
}

/// One `Check` of `GET path` over a new connection to `p` (see [`check`]).
pub async fn check_once(p: &Portcullis, path: &str, token: Option<&str>) -> Checked {
    check(&mut p.ext_authz_client().await, "GET", path, token).await
}

/// The status of [`http_check`] of `GET /fhir/Patient` with this bearer token.
pub async fn http_status(p: &Portcullis, token: &str) -> u16 {
    http_check(p, "/fhir/Patient", &[("authorization", &bearer(token))])
        .await
        .status
        .as_u16()
}
