//! Fault injection against the served binary: each identity-provider endpoint (JWKS,
//! introspection, userinfo) down, hanging past the decision deadline, answering garbage,
//! and answering a huge body that would be right but for its size. In every case the
//! request is not allowed, the answer comes within the deadline, the fault is counted in a
//! metric, and the endpoint's return is picked up without a restart.
//!
//! The Kubernetes faults (API server gone and back, an object that cannot deserialize, a
//! Secret deleted while referenced) are in `tests/kube/cluster.rs`, where the fake API server
//! lives; a broken configuration file is in `tests/config/lifecycle.rs`.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::ext_authz::{check_once, Checked};
use support::portcullis::Portcullis;
use support::stub_idp::{Mode, StubIdp, TUTORIAL_CLIENT, TUTORIAL_SUB};
use support::tokens::{jwks, now, rs256};
use support::users::{keycloak_user_name, user_files, write_tutorial_config};

const DEADLINE_MS: u64 = 500;
const IDP_TIMEOUT_MS: u64 = 300;
/// Room for a loaded CI machine and a new connection per check: a hang detector, far
/// below the minute a hanging endpoint takes.
const SLACK: Duration = Duration::from_millis(1500);
const FAULTS: [Mode; 4] = [Mode::Failing, Mode::Hanging, Mode::Garbage, Mode::Huge];
const ISS: &str = "https://idp.example";

fn serving(config: &Path) -> support::portcullis::PortcullisBuilder {
    Portcullis::builder()
        .config(config)
        .arg(format!("--decision-timeout-ms={DEADLINE_MS}"))
        .arg(format!("--idp-timeout-ms={IDP_TIMEOUT_MS}"))
}

/// One `Check` of `GET path`: it must not be allowed, and must come within the deadline.
async fn refused_in_time(p: &Portcullis, path: &str, token: &str, fault: Mode) -> Checked {
    let started = Instant::now();
    let answer = check_once(p, path, Some(token)).await;
    let took = started.elapsed();
    assert!(!answer.allowed, "{fault:?}: allowed: {answer:?}");
    assert!(
        took < Duration::from_millis(DEADLINE_MS) + SLACK,
        "{fault:?}: answered after {took:?}"
    );
    answer
}

async fn allowed_again(p: &Portcullis, path: &str, token: &str, fault: Mode) -> Checked {
    support::eventually(
        &format!("{fault:?}: allowed once the endpoint is back"),
        || async {
            let answer = check_once(p, path, Some(token)).await;
            answer.allowed.then_some(answer)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_jwks_endpoint_refuses_in_time_and_recovers() {
    for fault in FAULTS {
        let idp = StubIdp::start(jwks(&["rsa-a"])).await;
        idp.set_mode(fault);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "resourceType: TokenIntrospector\nid: idp\ntype: jwt\njwt: {{iss: {ISS}}}\n\
                 jwks_uri: {}\n---\nresourceType: AccessPolicy\nid: idp-users\n\
                 engine: matcho\nmatcho: {{jwt: {{iss: {ISS}}}}}\n",
                idp.jwks_uri()
            ),
        )
        .unwrap();
        let p = serving(dir.path()).start().await;
        let token = rs256(ISS, json!({}));

        let answer = refused_in_time(&p, "/", &token, fault).await;
        assert_eq!(answer.status, 503, "{fault:?}: fails closed: {answer:?}");
        assert!(idp.jwks_fetches() >= 1, "{fault:?}");
        assert!(
            p.metrics().await.token_event("jwks_fetch_error") >= 1,
            "{fault:?}: counted"
        );

        idp.set_mode(Mode::Up);
        allowed_again(&p, "/", &token, fault).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_introspection_endpoint_refuses_in_time_and_recovers() {
    for fault in FAULTS {
        let idp = StubIdp::start(json!({})).await;
        idp.answer(
            "opaque-token-1",
            json!({"active": true, "sub": "svc-1", "exp": now() + 600}),
        );
        idp.set_mode(fault);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "resourceType: TokenIntrospector\nid: opaque\ntype: opaque\n\
                 introspection_endpoint: {{url: {}, authorization: Basic cDpz}}\n---\n\
                 resourceType: AccessPolicy\nid: services\nengine: matcho\n\
                 matcho: {{token: {{sub: svc-1}}}}\n",
                idp.introspection_url()
            ),
        )
        .unwrap();
        let p = serving(dir.path()).start().await;

        let answer = refused_in_time(&p, "/", "opaque-token-1", fault).await;
        assert_eq!(answer.status, 503, "{fault:?}: fails closed: {answer:?}");
        assert!(
            p.metrics().await.token_event("introspection_error") >= 1,
            "{fault:?}: counted"
        );

        idp.set_mode(Mode::Up);
        allowed_again(&p, "/", "opaque-token-1", fault).await;
    }
}

/// A userinfo endpoint that fails leaves the request without its User: a policy linked to
/// that User does not apply, no User is written, and it is created once userinfo is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_userinfo_endpoint_creates_no_user_and_recovers() {
    for fault in FAULTS {
        let idp = StubIdp::keycloak().await;
        let dir = tempfile::tempdir().unwrap();
        let name = keycloak_user_name(TUTORIAL_SUB);
        write_tutorial_config(
            &dir.path().join("config"),
            &idp,
            &format!(
                "  uri: \"#^/fhir/\"\n---\nresourceType: AccessPolicy\nid: admin\n\
                 engine: allow\nlink:\n  - reference: User/{name}\n"
            ),
        );
        let users = dir.path().join("users");
        let p = serving(&dir.path().join("config"))
            .create_users(&users)
            .start()
            .await;
        let token = idp.client_credentials(TUTORIAL_CLIENT).await;
        idp.set_userinfo_mode(fault);

        let answer = refused_in_time(&p, "/admin", &token, fault).await;
        assert!([403, 503].contains(&answer.status), "{fault:?}: {answer:?}");
        assert_eq!(answer.header("x-portcullis-user"), None, "{fault:?}");
        assert!(user_files(&users).is_empty(), "{fault:?}: no User written");
        support::eventually(&format!("{fault:?}: the failure counted"), || async {
            (p.metrics().await.user_event("userinfo_error") >= 1).then_some(())
        })
        .await;

        idp.set_userinfo_mode(Mode::Up);
        let answer = allowed_again(&p, "/admin", &token, fault).await;
        assert_eq!(answer.header("x-portcullis-user"), Some(name.as_str()));
        assert_eq!(user_files(&users).len(), 1, "{fault:?}");
    }
}
