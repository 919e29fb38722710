//! The costliest policy `validate` accepts, on the largest request context a token can
//! bring, against the real binary over gRPC: its evaluations run on the bounded pool, each
//! answered within the decision deadline (allowed, or 503 when the pool was busy past it),
//! while ordinary requests keep flowing on the async workers. Times are asserted only as a
//! hang detector; BENCHMARKS.md has the figures.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::ext_authz::check;
use support::portcullis::Portcullis;
use support::tokens::Jwt;

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";
const DEADLINE_MS: u64 = 900;
/// Far below a hang, far above a loaded machine's scheduling noise.
const SLACK: Duration = Duration::from_millis(2500);

/// Every group one of `n` names: `n` `const` branches under `anyOf` under `items`, so about
/// `2n` schema nodes meet each group.
fn config(n: usize) -> String {
    let any: Vec<Value> = (0..n).map(|i| json!({"const": format!("g{i}")})).collect();
    let schema = json!({
        "required": ["jwt"],
        "properties": {"jwt": {"required": ["groups"], "properties": {
            "groups": {"items": {"anyOf": any}}
        }}}
    });
    format!(
        "resourceType: TokenIntrospector\nid: auth\ntype: jwt\n\
         jwt: {{iss: {ISS}, secret: {SECRET}}}\n---\n\
         resourceType: AccessPolicy\nid: known-groups\nengine: json-schema\nschema: {schema}\n---\n\
         resourceType: AccessPolicy\nid: light\nengine: matcho\nmatcho: {{uri: /light}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_costliest_accepted_policy_never_delays_ordinary_requests() {
    let dir = tempfile::tempdir().unwrap();
    // Just under the 10,000-node limit of a schema.
    std::fs::write(dir.path().join("config.yaml"), config(4_990)).unwrap();
    let p = Portcullis::builder()
        .config(dir.path())
        .arg(format!("--decision-timeout-ms={DEADLINE_MS}"))
        .start()
        .await;
    // Groups that all match late branches, in a token near the 16 KiB limit: the schema
    // tries thousands of branches for each of hundreds of groups.
    let groups: Vec<String> = (0..900).map(|i| format!("g{}", 4_989 - i % 10)).collect();
    let member = Jwt::new(ISS, "many-groups")
        .claim("groups", json!(groups))
        .sign_hs256(SECRET);
    assert!(member.len() < 16 * 1024, "{} bytes", member.len());
    let ordinary = Jwt::new(ISS, "someone").sign_hs256(SECRET);

    let costly: Vec<_> = (0..6)
        .map(|_| {
            let (p, member) = (&p, member.clone());
            async move {
                let mut client = p.ext_authz_client().await;
                let started = Instant::now();
                let answer = check(&mut client, "GET", "/costly", Some(&member)).await;
                (answer, started.elapsed())
            }
        })
        .collect();
    let light = async {
        let mut client = p.ext_authz_client().await;
        let mut slowest = Duration::ZERO;
        for _ in 0..30 {
            let started = Instant::now();
            let answer = check(&mut client, "GET", "/light", Some(&ordinary)).await;
            slowest = slowest.max(started.elapsed());
            assert_eq!(answer.status, 200, "{answer:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        slowest
    };
    let (costly, slowest) = tokio::join!(futures::future::join_all(costly), light);
    eprintln!("ordinary requests beside 6 costly ones: slowest {slowest:?}");
    assert!(slowest < SLACK, "an ordinary request waited {slowest:?}");
    let mut allowed = 0;
    for (answer, took) in &costly {
        eprintln!("costly request: {} in {took:?}", answer.status);
        assert!(
            *took < Duration::from_millis(DEADLINE_MS) + SLACK,
            "answered after {took:?}"
        );
        match answer.status {
            200 => allowed += 1,
            // The pool was busy past the deadline: undecided, never a 403.
            503 => assert!(answer.body.contains("deadline_exceeded"), "{answer:?}"),
            other => panic!("costly request answered {other}: {answer:?}"),
        }
    }
    // However long the abandoned evaluations took, the pool comes back: a costly request
    // whose groups match early branches (the same worst case, less real work) is judged.
    let early: Vec<String> = (0..900).map(|i| format!("g{}", i % 10)).collect();
    let quick = Jwt::new(ISS, "early-groups")
        .claim("groups", json!(early))
        .sign_hs256(SECRET);
    support::eventually("a costly request judged on the pool", || async {
        let mut client = p.ext_authz_client().await;
        let answer = check(&mut client, "GET", "/costly", Some(&quick)).await;
        (answer.status == 200).then_some(())
    })
    .await;
    eprintln!("costly requests allowed while ordinary ones flowed: {allowed} of 6");
    let scrape = p.metrics().await;
    assert!(
        scrape.counter(
            "portcullis_policy_costly_evaluations_total",
            &[("lane", "pool")]
        ) >= 7,
        "{}",
        scrape.text()
    );
}
