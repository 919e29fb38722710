//! Health as Kubernetes and Envoy see it: `/readyz` and grpc.health.v1 (for the whole
//! server, `""`, and for the ext_authz service) say NOT_SERVING until a configuration
//! compiles and again while draining after SIGTERM, during which decisions go on.

use crate::support;

use std::time::Duration;

use support::ext_authz::{check_once, http_status};
use support::portcullis::{Portcullis, AUTHORIZATION_SERVICE};
use support::tokens::Jwt;
use tonic_health::pb::health_check_response::ServingStatus;

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";
/// The services a probe may ask about: the whole server, and ext_authz.
const SERVICES: [&str; 2] = ["", AUTHORIZATION_SERVICE];

/// Waits until grpc.health.v1 says `status` for every service of [`SERVICES`].
async fn until_health(p: &Portcullis, status: ServingStatus) {
    for service in SERVICES {
        support::eventually(
            &format!("grpc.health.v1 {service:?} to be {}", status.as_str_name()),
            || async { (p.health(service).await == status).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_the_first_configuration_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let config = "resourceType: TokenIntrospector\nid: t\ntype: jwt\n\
                  jwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
                  resourceType: AccessPolicy\nid: p\nengine: allow\n";
    // The only file does not compile: no configuration has ever been good.
    support::replace_file(
        dir.path(),
        "config.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {uri: {$no-such-operator: 1}}\n",
    );
    let p = Portcullis::builder().config(dir.path()).spawn().await;
    assert_eq!(p.readyz().await, 503);
    for service in SERVICES {
        assert_eq!(
            p.health(service).await,
            ServingStatus::NotServing,
            "{service:?}"
        );
    }
    // A request asked meanwhile is a 503 denial, never an allow.
    let token = Jwt::new(ISS, "alice").sign_hs256(SECRET);
    let answer = check_once(&p, "/fhir/Patient", Some(&token)).await;
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.body.contains("not_ready"), "{answer:?}");

    // A good edit: ready, and serving.
    support::replace_file(dir.path(), "config.yaml", config);
    until_health(&p, ServingStatus::Serving).await;
    assert_eq!(p.readyz().await, 200);
    assert_eq!(http_status(&p, &token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_not_ready_not_serving_but_still_answering() {
    // A drain far longer than the checks below take on any machine.
    let drain = Duration::from_secs(10);
    let mut p = Portcullis::builder()
        .config("examples/quickstart")
        .arg("--drain-ms")
        .arg(drain.as_millis().to_string())
        .start()
        .await;
    until_health(&p, ServingStatus::Serving).await;
    let good = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    p.terminate();
    support::eventually("/readyz to fail while draining", || async {
        (p.readyz().await == 503).then_some(())
    })
    .await;
    until_health(&p, ServingStatus::NotServing).await;
    assert_eq!(
        http_status(&p, &good).await,
        200,
        "still deciding over HTTP while draining"
    );
    let answer = check_once(&p, "/fhir/Patient", Some(&good)).await;
    assert!(
        answer.allowed,
        "still deciding over gRPC while draining: {answer:?}"
    );
    let status = p.wait_exit(drain + support::WAIT).await;
    assert!(status.success(), "exited with {status}");
    assert!(p.log().contains("draining"), "{}", p.log());
}

/// A client that trickles its request headers is cut off after the header read timeout
/// (10 s) on the HTTP listener, while other requests are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_on_the_http_listener_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "resourceType: AccessPolicy\nid: p\nengine: allow\n",
    )
    .unwrap();
    let p = Portcullis::builder().config(dir.path()).start().await;
    let mut slow = tokio::net::TcpStream::connect(p.http_addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert_eq!(p.readyz().await, 200, "others are served meanwhile");
    let mut buf = [0u8; 1024];
    // Closed by the server (EOF, or a reset), within the timeout and a generous margin.
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 may come first
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}
