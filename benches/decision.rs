//! The decision core, without network: `cargo bench --bench decision`.
//! Targets (issue 8): a cached token's decision under 5 µs; snapshot rebuild of 10,000
//! resources under 100 ms. BENCHMARKS.md has the latest figures.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;

use common::*;
use portcullis::snapshot::compile;

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
        |b| {
            b.iter_batched(
                || decision.clone(),
                |d| to_check_response(d).encode_to_vec(),
                BatchSize::SmallInput,
            )
        },
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

/// The costliest json-schema policy that loads (just under 10,000 nodes: every group one
/// of 4,990 names) on a token of 900 groups: its worst case, about 9.2 million visits, sends
/// it to the pool. Groups matching the last branches make the real work near that worst
/// case; groups matching the first branches show the pool's own cost. BENCHMARKS.md,
/// "What a policy may cost".
fn costly(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let any: Vec<serde_json::Value> = (0..4_990)
        .map(|i| json!({"const": format!("g{i}")}))
        .collect();
    let schema =
        json!({"properties": {"jwt": {"properties": {"groups": {"items": {"anyOf": any}}}}}});
    let a = authorizer(&format!(
        "{}---\nresourceType: AccessPolicy\nid: known-groups\nengine: json-schema\nschema: {schema}\n",
        introspector()
    ));
    for (name, first) in [("late", 4_980), ("early", 0)] {
        let groups: Vec<String> = (0..900).map(|i| format!("g{}", first + i % 10)).collect();
        let req = request(&token_with("alice", "app", json!({"groups": groups})));
        let d = rt.block_on(a.check(&req));
        assert_eq!(d.policy.as_deref(), Some("known-groups"), "{d:?}");
        c.bench_function(
            &format!(
                "decision: costliest accepted schema, 900 groups matching {name} branches (pool)"
            ),
            |b| b.iter(|| rt.block_on(a.check(&req))),
        );
    }
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
                .by_identifier(None, "keycloak", std::hint::black_box("sub-77777"))
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

criterion_group!(
    benches,
    grpc_edge,
    decide,
    costly,
    snapshot,
    users,
    decision_log
);
criterion_main!(benches);
