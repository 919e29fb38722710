//! Tenancy offline: `validate`, `test` and `explain` with `--root-namespace` read a
//! Kubernetes-form configuration's namespaces as the cluster would (docs/tenancy.md), so
//! that a team can try what its requests get before applying anything.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use support::portcullis::portcullis_bin;
use support::tokens::Jwt;

const CONFIG: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: TokenIntrospector
metadata: {name: corp, namespace: platform}
spec: {type: jwt, jwt: {iss: "https://corp.example.com", secret: corp-secret}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: open, namespace: team-a}
spec: {engine: allow}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: health, namespace: platform}
spec: {engine: matcho, matcho: {uri: /healthz}}
"#;

const SQUATTER: &str = r#"
---
apiVersion: portcullis.dev/v1alpha1
kind: TokenIntrospector
metadata: {name: squat, namespace: team-b}
spec: {type: jwt, jwt: {iss: "https://corp.example.com", secret: guessed}}
"#;

fn portcullis(args: &[&str], dir: &Path) -> Output {
    Command::new(portcullis_bin())
        .args(args)
        .arg("--config")
        .arg(dir.join("c.yaml"))
        .env_remove("PORTCULLIS_CONFIG")
        .env_remove("PORTCULLIS_ROOT_NAMESPACE")
        .output()
        .expect("running portcullis")
}

fn config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), text).unwrap();
    dir
}

#[test]
fn validate_refuses_a_team_squatting_the_roots_issuer_only_when_scoped() {
    let dir = config(&format!("{CONFIG}{SQUATTER}"));
    let out = portcullis(&["validate", "--root-namespace", "platform"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("TokenIntrospector/team-b/squat")
            && stderr.contains("field `jwt.iss`")
            && stderr.contains("TokenIntrospector/platform/corp"),
        "{stderr}"
    );
    // Unscoped, a file is one flat configuration, as before: one issuer, two introspectors.
    let out = portcullis(&["validate"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TokenIntrospector/squat"), "{stderr}");

    let good = config(CONFIG);
    let out = portcullis(&["validate", "--root-namespace", "platform"], good.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("in the root and 1 namespaces"), "{stdout}");
    let out = portcullis(
        &["validate", "--root-namespace", "Not_A_Namespace"],
        good.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_and_test_decide_for_a_requests_namespace() {
    let dir = config(CONFIG);
    let token = Jwt::new("https://corp.example.com", "ann").sign_hs256("corp-secret");
    let explain = |namespace: Option<&str>| {
        let mut args = vec!["explain", "--root-namespace", "platform", "--token", &token];
        if let Some(ns) = namespace {
            args.extend(["--request-namespace", ns]);
        }
        portcullis(&args, dir.path())
    };
    let out = explain(Some("team-a"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("team-a/open"), "{stdout}");
    for other in [Some("team-b"), None] {
        let out = explain(other);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{other:?}: {stdout}");
        assert!(
            !stdout.contains("team-a/open"),
            "never a candidate: {stdout}"
        );
    }

    let tests = dir.path().join("tests.yaml");
    std::fs::write(
        &tests,
        r#"
tests:
  - name: team A's own routes are open
    request: {method: GET, path: /orders, namespace: team-a}
    jwt: {iss: "https://corp.example.com", sub: ann}
    expect: {status: 200, policy: team-a/open}
  - name: team A's policy does not open team B's routes
    request: {method: GET, path: /orders, namespace: team-b}
    jwt: {iss: "https://corp.example.com", sub: ann}
    expect: {status: 403}
  - name: the platform's health check is open on every route
    request: {method: GET, path: /healthz, namespace: team-b}
    jwt: {iss: "https://corp.example.com", sub: ann}
    expect: {status: 200, policy: platform/health}
  - name: a request of no namespace gets the root's resources alone
    request: {method: GET, path: /orders}
    jwt: {iss: "https://corp.example.com", sub: ann}
    expect: {status: 403}
"#,
    )
    .unwrap();
    let out = Command::new(portcullis_bin())
        .args(["test", "--root-namespace", "platform", "--config"])
        .arg(dir.path().join("c.yaml"))
        .arg(&tests)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.ends_with("4 passed, 0 failed\n"), "{stdout}");
}
