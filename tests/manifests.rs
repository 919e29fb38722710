//! What deploy/ and charts/ ship works: the Helm chart lints and renders, the
//! configuration that the chart and the plain manifests mount passes `portcullis validate`,
//! and `portcullis serve` with the container's own arguments becomes ready on it.
//!
//! Needs helm: `scripts/install-test-deps.sh` (or `HELM_BIN`). Without it this fails.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::portcullis::{self as serve, Portcullis};

fn helm_bin() -> PathBuf {
    support::tool_bin("HELM_BIN", "helm")
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

/// Writes every ConfigMap's files into a directory, validates it as portcullis would, and
/// returns it.
fn validate_config_maps(docs: &[serde_yaml::Value]) -> tempfile::TempDir {
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
    let out = serve::run(&["validate", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    dir
}

fn container_args(docs: &[serde_yaml::Value]) -> Vec<String> {
    let pod = &deployment(docs)["spec"]["template"]["spec"];
    pod["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn deployment(docs: &[serde_yaml::Value]) -> &serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment")
}

/// Where the container mounts the ConfigMap volume.
fn config_mount_path(docs: &[serde_yaml::Value]) -> String {
    let pod = &deployment(docs)["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"].is_mapping())
        .expect("a ConfigMap volume")["name"]
        .as_str()
        .expect("a volume name");
    pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(volume))
        .unwrap_or_else(|| panic!("volume {volume} is not mounted"))["mountPath"]
        .as_str()
        .expect("a mountPath")
        .to_string()
}

/// `portcullis serve` with the container's own arguments, the ConfigMap's files where the
/// container mounts them, and loopback ports for its listeners, becomes ready.
async fn assert_serve_becomes_ready(docs: &[serde_yaml::Value]) {
    let config = validate_config_maps(docs);
    let mount = config_mount_path(docs);
    let local = config.path().to_str().unwrap();
    let args: Vec<String> = container_args(docs)
        .iter()
        .map(|a| a.replace(&mount, local))
        .collect();
    assert!(
        args.iter().any(|a| a.contains(local)),
        "the arguments {args:?} do not name the config mount {mount}"
    );
    let p = Portcullis::builder().command_line(&args).start().await;
    assert!(p.log().contains("configuration loaded"), "{}", p.log());
}

#[tokio::test]
async fn the_helm_chart_lints_renders_and_ships_valid_configuration() {
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
    let args = container_args(&docs);
    assert!(
        args.contains(&"--grpc-addr=0.0.0.0:9191".to_string()),
        "{args:?}"
    );
    assert_serve_becomes_ready(&docs).await;

    // The chart's crds/ directory is installed by `helm install` (checked against the binary in tests/crds.rs).
    let with_crds = run(Command::new(helm_bin())
        .args(["template", "auth", "--include-crds"])
        .arg(&chart));
    assert_eq!(
        with_crds.matches("kind: CustomResourceDefinition").count(),
        4
    );
}

#[tokio::test]
async fn the_plain_manifests_ship_valid_configuration() {
    let text =
        std::fs::read_to_string(support::repo_path("deploy/kubernetes/portcullis.yaml")).unwrap();
    let docs = documents(&text);
    assert_serve_becomes_ready(&docs).await;
}

/// Every object the chart renders, for each of these value sets, parses into its
/// Kubernetes type (a typo in a field would not).
#[test]
fn every_rendering_of_the_chart_parses_into_kubernetes_types() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let chart = support::repo_path("charts/portcullis");
    let cases: [(&[&str], &[&str]); 4] = [
        (
            &[],
            &[
                "ConfigMap",
                "Deployment",
                "PodDisruptionBudget",
                "Service",
                "ServiceAccount",
            ],
        ),
        (
            &[
                "mode=kube",
                "kube.createUsers=true",
                "serviceMonitor.enabled=true",
                "grafanaDashboard.enabled=true",
            ],
            &[
                "ConfigMap",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ServiceMonitor",
            ],
        ),
        (
            &["mode=kube", "kube.namespaces={a,b}", "kube.selector=team=x"],
            &["RoleBinding"],
        ),
        (
            &["replicaCount=1", "topologySpreadConstraints=null"],
            &["Deployment"],
        ),
    ];
    for (set, expect) in cases {
        let mut cmd = Command::new(helm_bin());
        cmd.args(["template", "auth", "--namespace", "auth"])
            .arg(&chart);
        for s in set {
            cmd.args(["--set", s]);
        }
        let docs = documents(&run(&mut cmd));
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        for kind in expect {
            assert!(
                kinds.contains(kind),
                "{set:?}: {kind} missing from {kinds:?}"
            );
        }
        for doc in &docs {
            let parsed = match doc["kind"].as_str().unwrap() {
                "Deployment" => serde_yaml::from_value::<Deployment>(doc.clone()).map(drop),
                "Service" => serde_yaml::from_value::<Service>(doc.clone()).map(drop),
                "ServiceAccount" => serde_yaml::from_value::<ServiceAccount>(doc.clone()).map(drop),
                "ConfigMap" => serde_yaml::from_value::<ConfigMap>(doc.clone()).map(drop),
                "PodDisruptionBudget" => {
                    serde_yaml::from_value::<PodDisruptionBudget>(doc.clone()).map(drop)
                }
                "ClusterRole" => serde_yaml::from_value::<ClusterRole>(doc.clone()).map(drop),
                "ClusterRoleBinding" => {
                    serde_yaml::from_value::<ClusterRoleBinding>(doc.clone()).map(drop)
                }
                "Role" => serde_yaml::from_value::<Role>(doc.clone()).map(drop),
                "RoleBinding" => serde_yaml::from_value::<RoleBinding>(doc.clone()).map(drop),
                "ServiceMonitor" => Ok(()), // the Prometheus Operator's type, not Kubernetes'
                other => panic!("{set:?}: unexpected kind {other}"),
            };
            parsed.unwrap_or_else(|e| panic!("{set:?}: {:?} does not parse: {e}", doc["kind"]));
        }
        if set.contains(&"grafanaDashboard.enabled=true") {
            let dashboard = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "auth-dashboard")
                .expect("the dashboard ConfigMap");
            assert_eq!(
                dashboard["metadata"]["labels"]["grafana_dashboard"], "1",
                "the label Grafana's sidecar looks for"
            );
            let shipped =
                std::fs::read_to_string(chart.join("dashboards/portcullis.json")).unwrap();
            assert_eq!(
                dashboard["data"]["portcullis.json"]
                    .as_str()
                    .unwrap()
                    .trim(),
                shipped.trim()
            );
        }
        if set.contains(&"replicaCount=1") {
            assert!(
                !kinds.contains(&"PodDisruptionBudget"),
                "one replica cannot keep one up"
            );
        }
        if set.contains(&"kube.namespaces={a,b}") {
            let bindings: Vec<&str> = docs
                .iter()
                .filter(|d| d["kind"] == "RoleBinding")
                .filter_map(|d| d["metadata"]["namespace"].as_str())
                .collect();
            assert_eq!(
                bindings,
                ["a", "b"],
                "the ClusterRole is bound in the watched namespaces only"
            );
            assert!(!kinds.contains(&"ClusterRoleBinding"));
            let args = container_args(&docs);
            assert!(
                args.contains(&"--namespace=a".to_string())
                    && args.contains(&"--selector=team=x".to_string()),
                "{args:?}"
            );
        }
    }

    // Values are checked against values.schema.json.
    let out = Command::new(helm_bin())
        .args(["template", "auth", "--set", "mode=cluster"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/mode"));
}
