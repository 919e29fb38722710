//! The command line and the configuration lifecycle, against the real binary:
//! `validate` names file, line, resource and field; `explain` names the failing path;
//! `serve` reloads on change and keeps the last good configuration through a broken edit.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::portcullis::{portcullis_bin, Portcullis};
use support::tokens::{bearer, Jwt};

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(portcullis_bin())
        .args(args)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("running portcullis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_the_quickstart() {
    let quickstart = support::repo_path("examples/quickstart");
    let (code, stdout, stderr) = run(&["validate", "--config", quickstart.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: 3 resources"), "{stdout}");
}

#[test]
fn validate_names_file_line_resource_and_field_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "resourceType: AccessPolicy\nid: fine\nengine: allow\n---\n\
         resourceType: TokenIntrospector\nid: broken-keys\ntype: jwt\njwt:\n  iss: https://a\n  keys:\n  - {kty: RSA, alg: RS256, format: PEM}\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: broken-matcho}\nspec:\n  engine: matcho\n  matcho: {uri: {$one-of: ['#a'], x: 1}}\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let path = file.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{path}:5 (document 2): TokenIntrospector/broken-keys: field `jwt.keys[0].pub`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:13 (document 3): AccessPolicy/broken-matcho: field `matcho.uri"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

/// A policy that allows every request without saying so is served, but flagged.
#[test]
fn validate_warns_of_a_policy_that_allows_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("open.yaml");
    std::fs::write(
        &file,
        "resourceType: AccessPolicy\nid: wide-open\nengine: json-schema\nschema: {}\n---\n\
         resourceType: AccessPolicy\nid: said-so\nengine: allow\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["validate", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("AccessPolicy/wide-open: field `schema`: allows every request"),
        "{stderr}"
    );
    assert!(!stderr.contains("said-so"), "{stderr}");
}

#[test]
fn explain_names_the_failing_path_of_a_denied_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
         resourceType: AccessPolicy\nid: admins-only\nengine: matcho\nmatcho: {jwt: {role: admin}, request-method: get}\n",
    )
    .unwrap();
    let token = Jwt::new(ISS, "bob")
        .claim("role", "viewer")
        .sign_hs256(SECRET);
    let (code, stdout, stderr) = run(&[
        "explain",
        "--config",
        dir.path().to_str().unwrap(),
        "--token",
        &token,
        "--path",
        "/fhir/Patient",
    ]);
    assert_eq!(code, 2, "a denial exits 2: {stdout}{stderr}");
    assert!(stderr.contains("DENY 403 (no_policy_allows)"), "{stderr}");
    let trace: serde_json::Value = serde_json::from_str(&stdout).expect("trace is JSON");
    let policy = &trace["policies"][0];
    assert_eq!(policy["policy"], "admins-only");
    assert_eq!(policy["allowed"], false);
    let mismatch = &policy["explanation"]["errors"][0];
    assert_eq!(mismatch["path"], "jwt.role");
    assert_eq!(mismatch["expected"], "admin");
    assert_eq!(mismatch["but"], "viewer");
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
}

#[test]
fn serve_refuses_user_creation_without_a_users_dir() {
    let quickstart = support::repo_path("examples/quickstart");
    let (code, _, stderr) = run(&[
        "serve",
        "--config",
        quickstart.to_str().unwrap(),
        "--create-users",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--users-dir"), "{stderr}");
}

/// Ask the HTTP ext_authz endpoint directly (no Envoy needed for the lifecycle).
async fn status_of(p: &Portcullis, token: &str) -> u16 {
    support::http_client()
        .get(p.http_url("/ext-authz/fhir/Patient"))
        .header("authorization", bearer(token))
        .send()
        .await
        .expect("ext-authz request")
        .status()
        .as_u16()
}

async fn metric(p: &Portcullis, name: &str) -> Option<String> {
    let text = support::http_client()
        .get(p.http_url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

async fn eventually<F, Fut>(what: &str, p: &Portcullis, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}\n{}", p.log_report());
}

fn write(dir: &Path, name: &str, text: &str) {
    // Replace, as editors and ConfigMap updates do.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_last_good_configuration_serving() {
    let dir = tempfile::tempdir().unwrap();
    let introspector = "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n";
    write(dir.path(), "introspector.yaml", introspector);
    write(
        dir.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {jwt: {role: admin}}\n",
    );
    let p = Portcullis::builder().config(dir.path()).start().await;
    let admin = Jwt::new(ISS, "a").claim("role", "admin").sign_hs256(SECRET);
    let viewer = Jwt::new(ISS, "v")
        .claim("role", "viewer")
        .sign_hs256(SECRET);
    assert_eq!(status_of(&p, &admin).await, 200);
    assert_eq!(status_of(&p, &viewer).await, 403);

    // A good edit is picked up without a restart.
    write(
        dir.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {jwt: {role: viewer}}\n",
    );
    eventually("the edited policy to serve", &p, || async {
        status_of(&p, &viewer).await == 200
    })
    .await;
    assert_eq!(status_of(&p, &admin).await, 403);
    assert_eq!(
        metric(&p, "portcullis_config_last_load_ok")
            .await
            .as_deref(),
        Some("1")
    );

    // A broken edit: the last good configuration keeps serving, and says so.
    write(dir.path(), "policy.yaml", "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {uri: {$no-such-operator: 1}}\n");
    eventually("the broken edit to be reported", &p, || async {
        metric(&p, "portcullis_config_last_load_ok")
            .await
            .as_deref()
            == Some("0")
    })
    .await;
    assert_eq!(
        status_of(&p, &viewer).await,
        200,
        "last good configuration still serves"
    );
    let log = p.log();
    assert!(
        log.contains("AccessPolicy/p"),
        "the error names the resource:\n{log}"
    );
    assert!(
        log.contains("the last good configuration keeps serving"),
        "{log}"
    );
    let ready = support::http_client()
        .get(p.http_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status().as_u16(),
        200,
        "still ready: it is still serving"
    );

    // Deleting a file is a change too: without the introspector no token is trusted.
    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("introspector.yaml")).unwrap();
    eventually("the deletion to serve", &p, || async {
        status_of(&p, &viewer).await == 401
    })
    .await;
}

/// portcullis writes `--users-dir` itself; one bad file there (corrupt, misnamed, a
/// duplicate, not a User) is skipped and reported, and never keeps the rest from serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_of_created_users_are_skipped_and_reported() {
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "config.yaml",
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
         resourceType: AccessPolicy\nid: alice-only\nengine: allow\nlink: [{reference: User/alice}]\n",
    );
    let users = tempfile::tempdir().unwrap();
    let user = |name: &str| {
        format!("apiVersion: portcullis.dev/v1alpha1\nkind: User\nmetadata: {{name: {name}}}\nspec: {{data: {{}}}}\n")
    };
    write(users.path(), "alice.yaml", &user("alice"));
    write(users.path(), "broken.yaml", "kind: [");
    write(users.path(), "bob.yaml", &user("alice"));
    write(
        users.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: smuggled\nengine: allow\n",
    );
    let p = Portcullis::builder()
        .config(config.path())
        .arg("--create-users")
        .arg("--users-dir")
        .arg(users.path())
        .start()
        .await;
    let alice = Jwt::new(ISS, "alice").sign_hs256(SECRET);
    let mallory = Jwt::new(ISS, "mallory").sign_hs256(SECRET);
    assert_eq!(status_of(&p, &alice).await, 200, "{}", p.log_report());
    assert_eq!(status_of(&p, &mallory).await, 403, "no smuggled policy");
    assert_eq!(
        metric(&p, "portcullis_user_files_skipped").await.as_deref(),
        Some("3")
    );
    let log = p.log();
    for file in ["broken.yaml", "bob.yaml", "policy.yaml"] {
        assert!(
            log.lines()
                .any(|l| l.contains("created User file skipped") && l.contains(file)),
            "{file} is not reported:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_has_one_line_per_decision_and_never_the_token() {
    let p = Portcullis::builder()
        .config("examples/quickstart")
        .start()
        .await;
    let good = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let expired = Jwt::new(ISS, "basic").expired().sign_hs256(SECRET);
    assert_eq!(status_of(&p, &good).await, 200);
    assert_eq!(status_of(&p, &expired).await, 401);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = p.log();
        if log.matches(" decision ").count() >= 2 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let decisions: Vec<&str> = log.lines().filter(|l| l.contains(" decision ")).collect();
    assert_eq!(decisions.len(), 2, "{log}");
    assert!(
        decisions[0].contains("outcome=\"allow\"") || decisions[0].contains("outcome=allow"),
        "{log}"
    );
    assert!(decisions[0].contains("external-auth-server"), "{log}");
    assert!(decisions[1].contains("token_expired"), "{log}");
    for token in [&good, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_first_not_ready_but_still_answering() {
    let mut p = Portcullis::builder()
        .config("examples/quickstart")
        .arg("--drain-ms")
        .arg("1500")
        .start()
        .await;
    let good = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    // The shell's own `kill`: no procps needed on the machine.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", p.pid())])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("/readyz to fail while draining", &p, || async {
        support::http_client()
            .get(p.http_url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 503)
    })
    .await;
    assert_eq!(
        status_of(&p, &good).await,
        200,
        "still deciding while draining"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.is_running() {
        assert!(
            Instant::now() < deadline,
            "did not stop after the drain\n{}",
            p.log_report()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(p.log().contains("draining"), "{}", p.log());
}
