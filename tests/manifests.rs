//! What deploy/ and charts/ ship works: the Helm chart lints and renders, and the
//! configuration that the chart and the plain manifests mount passes `portcullis validate`.
//!
//! Needs helm: `scripts/install-test-deps.sh` (or `HELM_BIN`). Without it this fails.

mod support;

use std::path::PathBuf;
use std::process::Command;

fn helm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM_BIN") {
        return p.into();
    }
    let p = support::repo_path(".tools/bin/helm");
    assert!(
        p.exists(),
        "helm not found: run scripts/install-test-deps.sh"
    );
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

/// Writes every ConfigMap's files into a directory and validates it as portcullis would.
fn validate_config_maps(docs: &[serde_yaml::Value]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut files = 0;
    for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        for (name, text) in d["data"].as_mapping().unwrap() {
            std::fs::write(
                dir.path().join(name.as_str().unwrap()),
                text.as_str().unwrap(),
            )
            .unwrap();
            files += 1;
        }
    }
    assert!(files > 0, "no ConfigMap with configuration");
    run(Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["validate", "--config"])
        .arg(dir.path()));
    files
}

fn container_args(docs: &[serde_yaml::Value]) -> Vec<String> {
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The container's arguments are ones `portcullis serve` accepts.
fn assert_serve_accepts(args: &[String]) {
    assert_eq!(args[0], "serve");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_helm_chart_lints_renders_and_ships_valid_configuration() {
    let chart = support::repo_path("charts/portcullis");
    run(Command::new(helm_bin()).arg("lint").arg(&chart));
    let rendered = run(Command::new(helm_bin())
        .args(["template", "auth"])
        .arg(&chart));
    let docs = documents(&rendered);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["ConfigMap", "ServiceAccount", "Service", "Deployment"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    validate_config_maps(&docs);
    let args = container_args(&docs);
    assert!(
        args.contains(&"--grpc-addr=0.0.0.0:9191".to_string()),
        "{args:?}"
    );
    assert_serve_accepts(&args);

    // The chart's crds/ directory is installed by `helm install` (checked against the binary in tests/crds.rs).
    let with_crds = run(Command::new(helm_bin())
        .args(["template", "auth", "--include-crds"])
        .arg(&chart));
    assert_eq!(
        with_crds.matches("kind: CustomResourceDefinition").count(),
        4
    );
}

#[test]
fn the_plain_manifests_ship_valid_configuration() {
    let text =
        std::fs::read_to_string(support::repo_path("deploy/kubernetes/portcullis.yaml")).unwrap();
    let docs = documents(&text);
    validate_config_maps(&docs);
    assert_serve_accepts(&container_args(&docs));
}
