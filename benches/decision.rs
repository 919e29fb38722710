//! The decision core, without network: `cargo bench --bench decision`.
//! Targets (issue 8): a cached token's decision under 5 µs; snapshot rebuild of 10,000
//! resources under 100 ms. BENCHMARKS.md has the latest figures.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use portcullis::decision::{Authorizer, DecisionLog, HttpRequest};
use portcullis::metrics::Metrics;
use portcullis::snapshot::{compile, SnapshotStore};
use portcullis::source::{parse_documents, Resource};
use portcullis::token::TokenVerifier;

const PRIVATE: &str = include_str!("keys/rs256.key.pem");
const PUBLIC: &str = include_str!("keys/rs256.pub.pem");
const ISS: &str = "https://bench.example.com";

fn resources(text: &str) -> Vec<Resource> {
    let (resources, errors) = parse_documents(Path::new("bench.yaml"), text);
    assert!(errors.is_empty(), "{errors:?}");
    resources
}

fn introspector() -> String {
    let pem: String = PUBLIC.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "resourceType: TokenIntrospector\nid: bench\ntype: jwt\njwt:\n  iss: {ISS}\n  keys:\n  - kty: RSA\n    alg: RS256\n    format: PEM\n    pub: |\n{pem}"
    )
}

/// The token's introspector and one matcho policy on its issuer.
fn issuer_policy() -> String {
    format!(
        "{}---\nresourceType: AccessPolicy\nid: issuer\nengine: matcho\nmatcho: {{jwt: {{iss: {ISS}}}}}\n",
        introspector()
    )
}

fn authorizer(text: &str) -> Authorizer {
    authorizer_logging(text, 0)
}

fn authorizer_logging(text: &str, allow_sample: u64) -> Authorizer {
    let snapshots = Arc::new(SnapshotStore::default());
    snapshots.store(compile(&resources(text)).expect("compiles"));
    Authorizer {
        snapshots,
        tokens: TokenVerifier::default(),
        metrics: Arc::new(Metrics::new()),
        log: DecisionLog::new(allow_sample),
        deadline: portcullis::decision::DEFAULT_DEADLINE,
        users: Default::default(),
    }
}

fn token(sub: &str, azp: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    encode(
        &Header::new(Algorithm::RS256),
        &json!({"iss": ISS, "sub": sub, "azp": azp, "exp": exp, "scope": "read"}),
        &EncodingKey::from_rsa_pem(PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn request(token: &str) -> HttpRequest {
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
    }
}

/// A `CheckRequest` shaped like the one Envoy's ext_authz filter sends for a browser's GET:
/// both addresses, time, id, protocol and ten headers.
fn envoy_check_request(token: &str) -> Vec<u8> {
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

fn grpc_edge(c: &mut Criterion) {
    use portcullis::server::grpc::answer::to_check_response;
    use portcullis::server::grpc::{to_http_request, wire};
    use prost::Message;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = envoy_check_request(&token("alice", "app"));
    c.bench_function(
        "grpc edge: Envoy's CheckRequest decoded to a request",
        |b| b.iter(|| to_http_request(wire::CheckRequest::decode(bytes.as_slice()).unwrap())),
    );
    let a = authorizer(&issuer_policy());
    let decision = rt.block_on(a.check(&to_http_request(
        wire::CheckRequest::decode(bytes.as_slice()).unwrap(),
    )));
    assert!(decision.allowed());
    c.bench_function(
        "grpc edge: an allow's CheckResponse built and encoded",
        |b| b.iter(|| to_check_response(&decision).encode_to_vec()),
    );
}

fn decide(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = authorizer(&issuer_policy());
    let req = request(&token("alice", "app"));
    assert!(rt.block_on(a.check(&req)).allowed());
    c.bench_function("decision: repeated RS256 token, one matcho policy", |b| {
        b.iter(|| rt.block_on(a.check(&req)))
    });

    // 1,000 policies: 900 linked to other users or clients (never candidates here),
    // 100 unlinked that do not match, and the allowing one linked to this client.
    let mut text = introspector();
    for i in 0..1000 {
        let link = match i % 10 {
            0 => String::new(),
            1..=5 => format!("link: [{{reference: User/user-{i}}}]\n"),
            _ => format!("link: [{{reference: Client/client-{i}, issuer: '{ISS}'}}]\n"),
        };
        text.push_str(&format!(
            "---\nresourceType: AccessPolicy\nid: p-{i:04}\nengine: matcho\n{link}matcho: {{uri: '#^/admin/{i}', request-method: get}}\n"
        ));
    }
    text.push_str("---\nresourceType: AccessPolicy\nid: z-app\nengine: matcho\nlink: [{reference: Client/app, issuer: 'https://bench.example.com'}]\nmatcho: {jwt: {scope: '#read'}}\n");
    let a = authorizer(&text);
    let d = rt.block_on(a.check(&req));
    assert_eq!(d.policy.as_deref(), Some("z-app"));
    c.bench_function("decision: 1,000 matcho policies with links", |b| {
        b.iter(|| rt.block_on(a.check(&req)))
    });
}

fn snapshot(c: &mut Criterion) {
    // 10,000 resources: 5,000 policies of each engine kind and 5,000 users.
    let mut text = introspector();
    for i in 0..5000 {
        text.push_str(&match i % 3 {
            0 => format!("---\nresourceType: AccessPolicy\nid: p{i}\nengine: matcho\nmatcho: {{uri: '#^/r{i}/', jwt: {{scope: '#read'}}}}\n"),
            1 => format!("---\nresourceType: AccessPolicy\nid: p{i}\nengine: json-schema\nschema: {{required: [jwt], properties: {{jwt: {{properties: {{iss: {{constant: x{i}}}}}}}}}}}\n"),
            _ => format!("---\nresourceType: AccessPolicy\nid: p{i}\nengine: complex\nor: [{{engine: matcho, matcho: {{uri: /a{i}}}}}, {{engine: allow}}]\nlink: [{{reference: User/u{i}}}]\n"),
        });
    }
    for i in 0..4999 {
        text.push_str(&format!(
            "---\nresourceType: User\nid: u{i}\ndata: {{name: user {i}}}\nidentifier: [{{system: idp, value: sub-{i}}}]\n"
        ));
    }
    let parsed = resources(&text);
    assert_eq!(parsed.len(), 10_000);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.bench_function("compile 10,000 resources", |b| {
        b.iter_batched(
            || parsed.clone(),
            |r| compile(&r).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn users(c: &mut Criterion) {
    let mut index = portcullis::users::UserIndex::default();
    for i in 0..100_000 {
        index.insert(portcullis::users::KnownUser::new(
            &format!("user-{i}"),
            &portcullis::resources::UserSpec {
                data: Some(json!({"i": i})),
                identifier: vec![portcullis::resources::Identifier {
                    system: "keycloak".into(),
                    value: format!("sub-{i}"),
                }],
                ..Default::default()
            },
        ));
    }
    c.bench_function("users: by name among 100,000", |b| {
        b.iter(|| index.by_name(std::hint::black_box("user-77777")).unwrap())
    });
    c.bench_function("users: by identifier among 100,000", |b| {
        b.iter(|| {
            index
                .by_identifier("keycloak", std::hint::black_box("sub-77777"))
                .unwrap()
        })
    });
}

/// What the decision log costs an allowed request: the same decision with a JSON log
/// subscriber (as `serve --log-format json` installs, writing each line to a file as it
/// writes to standard error), logging denials only (`--decision-log-allow-sample 0`) and
/// every allow (`1`). The difference is the cost of one line, to set against the CPU of a
/// whole `Check` (BENCHMARKS.md).
fn decision_log(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = issuer_policy();
    let req = request(&token("alice", "app"));
    let path = std::env::temp_dir().join(format!("portcullis-bench-log-{}", std::process::id()));
    for (sample, name) in [(0, "denials only"), (1, "every allow")] {
        let a = authorizer_logging(&policy, sample);
        let file = std::fs::File::create(&path).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(std::sync::Mutex::new(file))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            assert!(rt.block_on(a.check(&req)).allowed());
            c.bench_function(
                &format!("decision log: repeated RS256 token, {name}"),
                |b| b.iter(|| rt.block_on(a.check(&req))),
            );
        });
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines > 0, sample == 1, "{name}: {lines} lines");
    }
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, grpc_edge, decide, snapshot, users, decision_log);
criterion_main!(benches);
