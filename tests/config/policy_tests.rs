//! `portcullis test`, run as a user runs it: the shipped example tests pass, a failing case
//! says what it expected and got and shows the trace of why, bad test files are named, and
//! the exit code and closing line tell the outcome.

use crate::support;

use std::process::Command;

use support::portcullis::portcullis_bin;
use support::tokens::Jwt;

const QUICKSTART: &str = "examples/quickstart";
const QUICKSTART_TESTS: &str = "examples/quickstart-tests.yaml";

/// `portcullis test --config CONFIG FILES...`: exit code and standard output.
fn run(config: &str, files: &[&str]) -> (i32, String) {
    let out = Command::new(portcullis_bin())
        .arg("test")
        .arg("--config")
        .arg(support::repo_path(config))
        .args(files.iter().map(support::repo_path))
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("running portcullis test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.is_empty(),
        "portcullis test printed nothing; stderr:\n{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout)
}

fn last_line(stdout: &str) -> &str {
    stdout.lines().last().unwrap_or_default()
}

#[test]
fn the_shipped_example_tests_pass() {
    let cases: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(support::repo_path(QUICKSTART_TESTS)).unwrap(),
    )
    .unwrap();
    let n = cases["tests"].as_sequence().unwrap().len();
    assert!(
        n >= 5,
        "the example tests cover allow, 401 and untrusted cases"
    );
    let (code, stdout) = run(QUICKSTART, &[QUICKSTART_TESTS]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("PASS ")).count(), n);
    assert_eq!(last_line(&stdout), format!("{n} passed, 0 failed"));
}

#[test]
fn a_failing_case_shows_expected_got_and_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    // Kubernetes form, as `kubectl apply` takes it.
    std::fs::write(
        config.join("c.yaml"),
        "apiVersion: portcullis.dev/v1alpha1\nkind: TokenIntrospector\nmetadata: {name: t}\n\
         spec: {type: jwt, jwt: {iss: https://auth.example.com, secret: very-secret}}\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: admins-read}\n\
         spec: {engine: matcho, matcho: {request-method: get, jwt: {role: admin}}}\n",
    )
    .unwrap();
    let token = Jwt::new("https://auth.example.com", "ann")
        .claim("role", "admin")
        .sign_hs256("very-secret");
    let tests = dir.path().join("tests.yaml");
    std::fs::write(
        &tests,
        format!(
            "tests:\n\
             - name: admins read\n  request: {{method: GET, path: /a}}\n  jwt: {{iss: https://auth.example.com, sub: ann, role: admin}}\n  expect: {{status: 200, policy: admins-read}}\n\
             - name: a real admin token reads\n  request: {{path: /a}}\n  token: {token}\n  expect: {{status: 200}}\n\
             - name: viewers read too\n  request: {{method: GET, path: /a}}\n  jwt: {{iss: https://auth.example.com, sub: vic, role: viewer}}\n  expect: {{status: 200}}\n"
        ),
    )
    .unwrap();
    let (code, stdout) = run(config.to_str().unwrap(), &[tests.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("PASS admins read\n"), "{stdout}");
    assert!(
        stdout.contains("PASS a real admin token reads\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL viewers read too: expected 200, got 403 (no_policy_allows)"),
        "{stdout}"
    );
    // The trace names the policy, the failed path, and what it found there.
    let trace = stdout.split("FAIL viewers read too").nth(1).unwrap();
    for needle in [
        "admins-read: denies (matcho)",
        "jwt.role: expected \"admin\", found \"viewer\"",
        "decision: DENY 403 (no_policy_allows)",
    ] {
        assert!(trace.contains(needle), "trace lacks {needle}:\n{stdout}");
    }
    assert!(
        !stdout.contains(&token),
        "a token never appears in the output"
    );
    assert_eq!(last_line(&stdout), "2 passed, 1 failed");
}

#[test]
fn a_bad_test_file_is_named_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "tests:\n- name: typo\n  requst: {path: /}\n  expect: {status: 200}\n",
    )
    .unwrap();
    let both = dir.path().join("both.yaml");
    std::fs::write(
        &both,
        "tests:\n- name: both\n  jwt: {iss: x}\n  token: y\n  expect: {status: 401}\n",
    )
    .unwrap();
    let (code, stdout) = run(
        QUICKSTART,
        &[
            bad.to_str().unwrap(),
            both.to_str().unwrap(),
            QUICKSTART_TESTS,
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "FAIL {}: tests[0]: unknown field `requst`",
            bad.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "FAIL {}: tests[0] (both): give `jwt` (claims) or `token`, not both",
            both.display()
        )),
        "{stdout}"
    );
    assert!(last_line(&stdout).ends_with("passed, 2 failed"), "{stdout}");
}
