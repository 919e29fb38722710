//! Fuzz body `check_request`: bytes decoded as Envoy's `CheckRequest` (protobuf) as the gRPC
//! edge decodes it (`server::grpc::wire`, only the fields read), converted as the gRPC edge
//! converts it (`server::grpc::to_http_request`), its request context
//! built, then a whole decision made on it against a small fixed snapshot and answered as
//! the gRPC edge answers (`server::grpc::answer`), read back as Envoy reads it.
//!
//! Input: the protobuf bytes (not a `CheckRequest`: nothing to do). The seeds carry tokens
//! signed with the fixed secret below, so mutations reach the users and policies.
//! Properties: what envoy-types' full `CheckRequest` decodes, the edge decodes too, to the
//! same method, path, scheme, host, remote address, headers and context extensions; no
//! panic, in the conversion or the decision (a panic in the decision is
//! caught and denied by the authorizer, so its `internal_error` is checked for too); the
//! context never holds a credential of the request; the answer is well formed (an allow is
//! an OK response whose headers Envoy can set, a denial carries 401/403/503, a JSON body
//! and, for a 401, a valid `WWW-Authenticate`); `explain` decides as `check` does, and its
//! trace carries no credential.

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::google::rpc;
use portcullis::decision::{context, Authorizer, DecisionLog, HttpRequest, Outcome};
use portcullis::metrics::Metrics;
use portcullis::outbound::IdpClient;
use portcullis::policy::Context;
use portcullis::resources::is_credential_header;
use portcullis::server::grpc::answer::to_check_response;
use portcullis::server::grpc::{to_http_request, wire};
use portcullis::snapshot::{Snapshot, SnapshotStore};
use portcullis::token::{TokenSettings, TokenVerifier};
use portcullis::users::UserResolver;
use prost::Message;
use serde_json::json;

pub const ISS: &str = "https://hmac.fuzz.example";
pub const SECRET: &str = "fuzz-hmac-secret";

/// The fixed configuration, as a JSON file's text.
pub fn config() -> String {
    json!([
        {"resourceType": "TokenIntrospector", "id": "hmac", "type": "jwt",
         "jwt": {"iss": ISS, "secret": SECRET},
         "claimToHeaders": [{"header": "x-tenant", "claim": "tenant"},
                            {"header": "x-roles", "claim": "realm_access.roles"}]},
        {"resourceType": "User", "id": "basic", "data": {"roles": ["reader"]}},
        {"resourceType": "User", "id": "root", "inactive": true},
        {"resourceType": "AccessPolicy", "id": "public", "engine": "matcho",
         "matcho": {"uri": "#^/public(/|$)", "request-method": {"$enum": ["get", "head"]}}},
        {"resourceType": "AccessPolicy", "id": "fhir-reader", "engine": "json-schema",
         "schema": {"required": ["jwt", "uri"],
                    "properties": {"jwt": {"required": ["iss"], "properties": {"iss": {"constant": ISS}}},
                                   "uri": {"type": "string", "pattern": "^/fhir/"}}}},
        {"resourceType": "AccessPolicy", "id": "admin", "engine": "matcho",
         "matcho": {"headers": {"x-role": "admin"}, "jwt": {"roles": {"$contains": "admin"}},
                    "params": {"_tenant": ".jwt.tenant"}}},
        {"resourceType": "AccessPolicy", "id": "basic-only", "engine": "complex",
         "or": [{"engine": "matcho", "matcho": {"request-method": "post", "user": {"data": {"roles": {"$contains": "writer"}}}}},
                {"engine": "matcho", "matcho": {"context-extensions": {"route": "basic"}}}],
         "link": [{"reference": "User/basic"}]}
    ])
    .to_string()
}

struct Setup {
    snapshot: Snapshot,
    http: IdpClient,
    metrics: Arc<Metrics>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut compiler = portcullis::snapshot::Compiler::default();
        portcullis::resources::for_each_document(
            std::path::Path::new("check-request-fuzz.json"),
            &config(),
            |item| compiler.push(item),
        );
        Setup {
            snapshot: compiler.finish().expect("the fixed configuration compiles"),
            http: IdpClient::new(std::time::Duration::from_millis(100)),
            metrics: Arc::new(Metrics::new()),
        }
    })
}

/// An authorizer of its own (fresh caches: the answer depends on this input alone).
fn authorizer() -> Authorizer {
    let setup = setup();
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(setup.snapshot.clone());
    Authorizer {
        snapshots,
        tokens: TokenVerifier::with_client(
            TokenSettings::default(),
            setup.http.clone(),
            setup.metrics.clone(),
        ),
        metrics: setup.metrics.clone(),
        log: DecisionLog::new(0),
        users: UserResolver::off(),
        deadline: portcullis::decision::DEFAULT_DEADLINE,
        shadow: false,
    }
}

/// The credentials of `request` that no context, trace or error may hold: what follows the
/// scheme of an `Authorization` header, the whole of other credential headers. Short ones,
/// and those that the rest of the request holds anyway, are left out.
fn credentials(request: &HttpRequest) -> Vec<String> {
    let mut without = request.clone();
    without.headers.retain(|(k, _)| !is_credential_header(k));
    let rest = context::build(&without, None, None).to_string();
    request
        .headers
        .iter()
        .filter(|(k, _)| is_credential_header(k))
        .map(|(k, v)| match (k.as_str(), v.split_once(' ')) {
            ("authorization" | "proxy-authorization", Some((_, secret))) => secret,
            _ => v.as_str(),
        })
        .filter(|s| s.len() >= 12)
        .map(|s| {
            // As JSON text writes it, quotes left off.
            let quoted = serde_json::to_string(s).expect("JSON");
            quoted[1..quoted.len() - 1].to_string()
        })
        .filter(|s| !rest.contains(s.as_str()))
        .collect()
}

fn header_value_ok(value: &str) -> bool {
    http::HeaderValue::from_str(value).is_ok()
}

/// What envoy-types reads, in the edge's terms: header names lower-cased, pairs sorted.
fn as_envoy_types_reads(check: CheckRequest) -> HttpRequest {
    let attributes = check.attributes.unwrap_or_default();
    let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
    let mut headers: Vec<(String, String)> = http
        .headers
        .into_iter()
        .chain(http.header_map.into_iter().flat_map(|m| {
            m.headers.into_iter().map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8_lossy(&h.raw_value).into_owned()
                };
                (h.key, value)
            })
        }))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    headers.sort();
    let mut context_extensions: Vec<_> = attributes.context_extensions.into_iter().collect();
    context_extensions.sort();
    let principal = attributes.destination.map(|d| d.principal);
    let namespace =
        portcullis::decision::request_namespace(&context_extensions, principal.as_deref())
            .map(str::to_owned);
    HttpRequest {
        method: http.method,
        scheme: http.scheme,
        host: http.host,
        path: http.path,
        headers,
        remote_addr: attributes
            .source
            .and_then(|p| p.address)
            .and_then(|a| match a.address {
                Some(address::Address::SocketAddress(s)) => Some(s.address),
                _ => None,
            }),
        context_extensions,
        namespace,
    }
}

pub fn run(data: &[u8]) {
    let full = CheckRequest::decode(data).ok();
    let Ok(check) = wire::CheckRequest::decode(data) else {
        assert!(full.is_none(), "envoy-types decodes what the edge refuses");
        return;
    };
    let request = to_http_request(check);
    if let Some(full) = full {
        let mut ours = request.clone();
        ours.headers.sort();
        ours.context_extensions.sort();
        let theirs = as_envoy_types_reads(full);
        if theirs.host.is_empty() {
            // The edge falls back to the `:authority` or `host` header.
            ours.host.clear();
        }
        assert_eq!(ours, theirs, "the edge reads otherwise than envoy-types");
    }
    for (name, _) in &request.headers {
        assert_eq!(
            *name,
            name.to_ascii_lowercase(),
            "a header name not lower-cased"
        );
    }
    let _ = request.credential();
    let _ = request.split_path();
    let secrets = credentials(&request);
    let whole = context::build(&request, None, None);
    // What policies read key by key is what explain and json-schema see whole.
    let lazy = context::RequestContext::new(&request, None, None);
    for key in context::KEYS {
        assert_eq!(lazy.get(key), whole.get(key), "context key {key}");
    }
    let ctx = whole.to_string();
    for secret in &secrets {
        assert!(
            !ctx.contains(secret.as_str()),
            "the context holds a credential"
        );
    }

    let authorizer = authorizer();
    let decision = common::block_on(authorizer.check(&request));
    assert_ne!(decision.reason, "internal_error", "the decision panicked");
    // As Envoy reads the answer.
    let response = CheckResponse::decode(&to_check_response(decision.clone()).encode_to_vec()[..])
        .expect("envoy-types decodes the answer");
    let code = response.status.as_ref().expect("a status").code;
    match response.http_response.as_ref().expect("an HTTP response") {
        HttpResponse::OkResponse(ok) => {
            assert!(decision.allowed());
            assert_eq!(code, rpc::Code::Ok as i32);
            for h in &ok.headers {
                let h = h.header.as_ref().expect("a header");
                assert!(
                    http::HeaderName::from_bytes(h.key.as_bytes()).is_ok(),
                    "an upstream header name Envoy cannot set: {:?}",
                    h.key
                );
                assert!(
                    header_value_ok(&h.value),
                    "an upstream header value Envoy cannot set: {:?}",
                    h.value
                );
            }
        }
        HttpResponse::DeniedResponse(denied) => {
            assert!(!decision.allowed());
            assert_ne!(code, rpc::Code::Ok as i32);
            let status = denied.status.as_ref().expect("an HTTP status").code;
            assert!(
                matches!(status, 401 | 403 | 503),
                "denied with HTTP {status}"
            );
            let body: serde_json::Value =
                serde_json::from_str(&denied.body).expect("a denial's body is JSON");
            assert!(body["error"].is_string());
            for h in &denied.headers {
                let h = h.header.as_ref().expect("a header");
                assert!(
                    header_value_ok(&h.value),
                    "a denial header value: {:?}",
                    h.value
                );
            }
            let challenge = denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .any(|h| h.key == "www-authenticate");
            assert_eq!(challenge, status == 401, "WWW-Authenticate iff 401");
            for secret in &secrets {
                assert!(
                    !denied.body.contains(secret.as_str()),
                    "a denial quotes a credential"
                );
            }
        }
        #[allow(unreachable_patterns)]
        _ => panic!("neither an OK nor a denied response"),
    }
    if decision.outcome == Outcome::Allow {
        assert!(decision.policy.is_some(), "allowed by no policy");
    }

    let (explained, trace) = common::block_on(authorizer.explain(&request));
    assert_eq!(
        (explained.outcome, explained.reason),
        (decision.outcome, decision.reason),
        "explain decides otherwise than check"
    );
    let trace = serde_json::to_string(&trace).expect("a trace serialises");
    for secret in &secrets {
        assert!(
            !trace.contains(secret.as_str()),
            "a trace holds a credential"
        );
    }
}
