//! What the benches share: the RS256 key, a token signed with it, an authorizer on a
//! configuration text, and the requests Envoy sends.
#![allow(dead_code)] // each bench uses some of these

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use portcullis::decision::{Authorizer, DecisionLog, HttpRequest};
use portcullis::metrics::Metrics;
use portcullis::resources::{parse_documents, Resource};
use portcullis::snapshot::{compile, SnapshotStore};
use portcullis::token::TokenVerifier;

pub const PRIVATE: &str = include_str!("../keys/rs256.key.pem");
pub const PUBLIC: &str = include_str!("../keys/rs256.pub.pem");
pub const ISS: &str = "https://bench.example.com";

pub fn resources(text: &str) -> Vec<Resource> {
    let (resources, errors) = parse_documents(Path::new("bench.yaml"), text);
    assert!(errors.is_empty(), "{errors:?}");
    resources
}

pub fn introspector() -> String {
    let pem: String = PUBLIC.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "resourceType: TokenIntrospector\nid: bench\ntype: jwt\njwt:\n  iss: {ISS}\n  keys:\n  - kty: RSA\n    alg: RS256\n    format: PEM\n    pub: |\n{pem}"
    )
}

/// The token's introspector and one matcho policy on its issuer.
pub fn issuer_policy() -> String {
    format!(
        "{}---\nresourceType: AccessPolicy\nid: issuer\nengine: matcho\nmatcho: {{jwt: {{iss: {ISS}}}}}\n",
        introspector()
    )
}

pub fn authorizer(text: &str) -> Authorizer {
    authorizer_logging(text, 0)
}

pub fn authorizer_logging(text: &str, allow_sample: u64) -> Authorizer {
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(compile(&resources(text)).expect("compiles"));
    Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: Arc::new(Metrics::new()),
        log: DecisionLog::new(allow_sample),
        deadline: portcullis::decision::DEFAULT_DEADLINE,
        shadow: false,
        users: Default::default(),
    }
}

pub fn token(sub: &str, azp: &str) -> String {
    token_with(sub, azp, json!({}))
}

/// [`token`] with more claims.
pub fn token_with(sub: &str, azp: &str, extra: serde_json::Value) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut claims = json!({"iss": ISS, "sub": sub, "azp": azp, "exp": exp, "scope": "read"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        claims[k] = v.clone();
    }
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn request(token: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        scheme: "https".into(),
        host: "api.example.com".into(),
        path: "/fhir/Patient?_count=10".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("host".into(), "api.example.com".into()),
            ("user-agent".into(), "bench".into()),
            ("accept".into(), "application/json".into()),
        ],
        remote_addr: Some("10.0.0.6".into()),
        context_extensions: vec![],
        namespace: None,
    }
}

/// A `CheckRequest` shaped like the one Envoy's ext_authz filter sends for a browser's GET:
/// both addresses, time, id, protocol and ten headers.
pub fn envoy_check_request(token: &str) -> Vec<u8> {
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest as Http, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    use prost::Message;
    let peer = |ip: &str, port| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    };
    let headers = [
        (":authority", "api.example.com"),
        (":path", "/fhir/Patient?_count=10"),
        (":method", "GET"),
        (":scheme", "https"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ("accept", "application/fhir+json"),
        ("accept-encoding", "gzip, deflate"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "5d8c5a3e-8b1e-4f0e-9a55-2b8d6e0f4c11"),
        ("authorization", &format!("Bearer {token}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("10.0.0.6", 41234)),
            destination: Some(peer("10.0.0.9", 8080)),
            request: Some(Request {
                time: Some(Default::default()),
                http: Some(Http {
                    id: "12345678901234567890".into(),
                    method: "GET".into(),
                    headers,
                    path: "/fhir/Patient?_count=10".into(),
                    host: "api.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}
