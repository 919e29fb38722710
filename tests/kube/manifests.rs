//! What deploy/ and charts/ ship works: the Helm chart lints and renders, the
//! configuration that the chart and the plain manifests mount passes `portcullis validate`,
//! and `portcullis serve` with the container's own arguments becomes ready on it.
//!
//! Needs helm: `scripts/install-test-deps.sh` (or `HELM_BIN`). Without it this fails.

use crate::support;

use std::collections::BTreeMap;
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

/// `helm template auth --namespace auth charts/portcullis --set ...`, as documents.
fn render_chart(set: &[&str]) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", "auth", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    documents(&run(&mut cmd))
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
        .args(["template", "auth", "--set", "mode=files"])
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

    // The chart's crds/ directory is installed by `helm install` (checked against the binary in tests/kube/crds.rs).
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
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let chart = support::repo_path("charts/portcullis");
    let cases: [(&[&str], &[&str]); 8] = [
        // The defaults: kube mode, with the webhook and the chart's own certificate.
        (
            &[],
            &[
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment",
                "PodDisruptionBudget",
                "Role",
                "RoleBinding",
                "Secret",
                "Service",
                "ServiceAccount",
                "ValidatingWebhookConfiguration",
            ],
        ),
        (&["mode=files"], &["ConfigMap", "Deployment", "Service"]),
        (
            &[
                "createUsers=true",
                "serviceMonitor.enabled=true",
                "grafanaDashboard.enabled=true",
                "webhook.certManager.enabled=true",
            ],
            &[
                "Certificate",
                "ConfigMap",
                "Issuer",
                "ServiceMonitor",
                "ValidatingWebhookConfiguration",
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
        (&["webhook.enabled=false"], &["Deployment"]),
        (
            &[
                "networkPolicy.enabled=true",
                "admin.enabled=true",
                "admin.tokenSecret=ops",
                "networkPolicy.admin.from[0].podSelector.matchLabels.role=ops",
                "networkPolicy.egress[0].ports[0].port=53",
            ],
            &["NetworkPolicy"],
        ),
        (
            &["mode=files", "networkPolicy.enabled=true"],
            &["NetworkPolicy"],
        ),
    ];
    for (set, expect) in cases {
        let docs = render_chart(set);
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
                "Secret" => serde_yaml::from_value::<Secret>(doc.clone()).map(drop),
                "NetworkPolicy" => serde_yaml::from_value::<NetworkPolicy>(doc.clone()).map(drop),
                "ValidatingWebhookConfiguration" => {
                    serde_yaml::from_value::<ValidatingWebhookConfiguration>(doc.clone()).map(drop)
                }
                // The Prometheus Operator's and cert-manager's types, not Kubernetes'.
                "ServiceMonitor" | "Certificate" | "Issuer" => Ok(()),
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
        let webhook = !set.contains(&"webhook.enabled=false") && !set.contains(&"mode=files");
        assert_eq!(
            kinds.contains(&"ValidatingWebhookConfiguration"),
            webhook,
            "{set:?}"
        );
        if webhook {
            assert_webhook_is_wired(&docs, set.contains(&"webhook.certManager.enabled=true"));
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
                .filter(|d| d["kind"] == "RoleBinding" && d["roleRef"]["kind"] == "Role")
                .filter(|d| d["roleRef"]["name"] == "auth")
                .filter_map(|d| d["metadata"]["namespace"].as_str())
                .collect();
            assert_eq!(
                bindings,
                ["a", "b"],
                "a Role is bound in each watched namespace"
            );
            let roles: Vec<&str> = docs
                .iter()
                .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "auth")
                .filter_map(|d| d["metadata"]["namespace"].as_str())
                .collect();
            assert_eq!(
                roles,
                ["a", "b"],
                "the Roles live in the watched namespaces"
            );
            assert!(!kinds.contains(&"ClusterRoleBinding") && !kinds.contains(&"ClusterRole"));
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

/// The webhook's pieces meet: the API server calls the Service's `webhook` port, which
/// reaches the container's `--webhook-addr`, serving the mounted certificate, which the
/// API server trusts (the chart's CA in `caBundle`, or cert-manager's injection).
fn assert_webhook_is_wired(docs: &[serde_yaml::Value], cert_manager: bool) {
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let vwc = find("ValidatingWebhookConfiguration");
    let hook = &vwc["webhooks"][0];
    let client = &hook["clientConfig"];
    assert_eq!(client["service"]["path"], "/validate");
    let service = find("Service");
    assert_eq!(client["service"]["name"], service["metadata"]["name"]);
    let port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["port"] == client["service"]["port"])
        .expect("the Service has the port the webhook calls");
    assert_eq!(port["targetPort"], "webhook");
    let container = &deployment(docs)["spec"]["template"]["spec"]["containers"][0];
    let container_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .expect("a container port named webhook");
    let args = container_args(docs);
    assert!(
        args.contains(&format!(
            "--webhook-addr=0.0.0.0:{}",
            container_port["containerPort"].as_u64().unwrap()
        )),
        "{args:?}"
    );
    let volume = deployment(docs)["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "webhook-tls")
        .expect("the certificate's volume");
    let secret = volume["secret"]["secretName"].as_str().unwrap();
    assert!(args.contains(&"--tls-cert-file=/etc/portcullis/webhook-tls/tls.crt".to_string()));
    if cert_manager {
        let certificate = find("Certificate");
        assert_eq!(certificate["spec"]["secretName"], secret);
        let injected = vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            .as_str()
            .unwrap();
        assert!(injected.ends_with(&format!(
            "/{}",
            certificate["metadata"]["name"].as_str().unwrap()
        )));
    } else {
        // The chart's CA signed the served certificate for the Service's DNS name.
        let tls = find("Secret");
        assert_eq!(tls["metadata"]["name"], secret);
        use base64::Engine;
        let decode = |v: &serde_yaml::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        assert_eq!(decode(&client["caBundle"]), decode(&tls["data"]["ca.crt"]));
        let cert = String::from_utf8(decode(&tls["data"]["tls.crt"])).unwrap();
        let ca = String::from_utf8(decode(&tls["data"]["ca.crt"])).unwrap();
        support::tls::assert_signed_for(
            &cert,
            &ca,
            &format!(
                "{}.{}.svc",
                service["metadata"]["name"].as_str().unwrap(),
                "auth"
            ),
        );
    }
}

/// Every flag of `portcullis serve` can be set from the chart's values.
#[test]
fn every_serve_flag_is_reachable_from_the_chart_values() {
    let help = serve::run(&["serve", "--help"]);
    let flags: std::collections::BTreeSet<String> = help
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '=']).next().unwrap().to_string())
        .filter(|f| f != "help")
        .collect();
    assert!(flags.len() > 15, "{flags:?}");
    let mut reached = std::collections::BTreeSet::new();
    for set in [
        &[
            "kube.namespaces={a}",
            "kube.selector=team=x",
            "kube.leaseNamespace=leases",
            "kube.rootNamespace=platform",
            "createUsers=true",
            "decisionTimeoutMs=300",
            "idpTimeoutMs=200",
            "jwksMaxStaleSecs=60",
            "maxTokenBytes=9000",
            "claimUsersByName=false",
            "drainMs=1000",
            "httpTrustForwarded=true",
            "shadow=true",
            "policyMetrics=true",
            "userCreateRate=2",
            "userCreateBurst=20",
            "maxUsersPerNamespace=500",
            "maxUsers=5000",
            "maxConcurrentIntrospections=32",
            "grpcMaxConcurrentPerConnection=256",
            "maxRegexBytes=8388608",
            "admin.enabled=true",
            "admin.tokenSecret=ops",
            "otlpEndpoint=http://collector:4317",
            "outboundAllowHosts={keycloak.auth.svc}",
            "caBundle.configMap.name=kube-root-ca.crt",
            "kube.users.mode=on-demand",
            "kube.users.cacheEntries=5000",
            "kube.users.cacheTtlSecs=30",
            "kube.users.cacheNegativeTtlSecs=5",
            "kube.users.countIntervalSecs=120",
        ][..],
        &[
            "mode=files",
            "createUsers=true",
            "usersDir=/var/lib/portcullis/users",
        ],
    ] {
        let docs = render_chart(set);
        for arg in container_args(&docs) {
            if let Some(flag) = arg.strip_prefix("--") {
                reached.insert(flag.split('=').next().unwrap().to_string());
            }
        }
    }
    let missing: Vec<&String> = flags.difference(&reached).collect();
    assert!(missing.is_empty(), "no value reaches {missing:?}");
}

/// `caBundle` mounts one key of a ConfigMap or a Secret read-only and passes it as
/// `--ca-file`; naming neither mounts nothing, naming both is refused.
#[test]
fn the_ca_bundle_is_mounted_from_a_config_map_or_a_secret() {
    use k8s_openapi::api::apps::v1::Deployment;

    const ARG: &str = "--ca-file=/etc/portcullis/ca/ca.crt";
    let volume = |docs: &[serde_yaml::Value]| {
        let pod = &deployment(docs)["spec"]["template"]["spec"];
        let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
        let mount = mounts.iter().find(|m| m["name"] == "ca-bundle").cloned();
        let volumes = pod["volumes"].as_sequence().unwrap();
        let volume = volumes.iter().find(|v| v["name"] == "ca-bundle").cloned();
        (mount, volume)
    };

    let docs = render_chart(&[]);
    assert!(!container_args(&docs)
        .iter()
        .any(|a| a.starts_with("--ca-file")));
    assert_eq!(volume(&docs), (None, None), "no caBundle, nothing mounted");

    for (set, source) in [
        (
            &["caBundle.configMap.name=kube-root-ca.crt"][..],
            serde_json::json!({"configMap": {"name": "kube-root-ca.crt",
                "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
        ),
        (
            &[
                "mode=files",
                "caBundle.secret.name=idp-ca",
                "caBundle.secret.key=bundle.pem",
            ],
            serde_json::json!({"secret": {"secretName": "idp-ca",
                "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}),
        ),
    ] {
        let docs = render_chart(set);
        serde_yaml::from_value::<Deployment>(deployment(&docs).clone())
            .unwrap_or_else(|e| panic!("{set:?}: the Deployment does not parse: {e}"));
        let args = container_args(&docs);
        assert_eq!(
            args.iter().filter(|a| *a == ARG).count(),
            1,
            "{set:?}: {args:?}"
        );
        let (mount, volume) = volume(&docs);
        let mount = serde_json::to_value(mount.expect("a ca-bundle mount")).unwrap();
        assert_eq!(
            mount,
            serde_json::json!({"name": "ca-bundle", "mountPath": "/etc/portcullis/ca",
                "readOnly": true}),
            "{set:?}"
        );
        let mut volume = serde_json::to_value(volume.expect("a ca-bundle volume")).unwrap();
        volume.as_object_mut().unwrap().remove("name");
        assert_eq!(volume, source, "{set:?}");
    }

    let out = Command::new(helm_bin())
        .args(["template", "auth"])
        .arg(support::repo_path("charts/portcullis"))
        .args([
            "--set",
            "caBundle.configMap.name=a",
            "--set",
            "caBundle.secret.name=b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not both"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An object as both renderings must agree on it: without labels, annotations, the
/// namespace (helm leaves it to `--namespace`) and the selector labels, which the chart
/// makes per release; with the webhook's `caBundle` dropped (the chart generates its CA,
/// the kustomization has cert-manager inject one).
fn comparable(doc: &serde_yaml::Value) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::to_value(doc).unwrap();
    whole_numbers(&mut v);
    let name = v["metadata"]["name"].clone();
    v["metadata"] = serde_json::json!({ "name": name });
    let strip = |v: &mut serde_json::Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("matchLabels");
        }
    };
    match v["kind"].as_str().unwrap() {
        "Deployment" => {
            strip(&mut v["spec"]["selector"]);
            v["spec"]["template"]["metadata"] = serde_json::json!({});
            if let Some(spread) =
                v["spec"]["template"]["spec"]["topologySpreadConstraints"].as_array_mut()
            {
                for c in spread {
                    strip(&mut c["labelSelector"]);
                }
            }
        }
        "Service" => {
            v["spec"]["selector"] = serde_json::json!({});
        }
        "PodDisruptionBudget" => strip(&mut v["spec"]["selector"]),
        "ValidatingWebhookConfiguration" => {
            for hook in v["webhooks"].as_array_mut().unwrap() {
                hook["clientConfig"]
                    .as_object_mut()
                    .unwrap()
                    .remove("caBundle");
            }
        }
        _ => {}
    }
    v
}

/// `kubectl apply -k deploy/` and the chart's defaults install the same objects where they
/// overlap, field for field; each has only the extras listed.
#[test]
fn kustomize_renders_what_the_chart_renders_by_default() {
    let kubectl = support::tool_bin("KUBECTL_BIN", "kubectl");
    let kustomized = documents(&run(Command::new(kubectl)
        .arg("kustomize")
        .arg(support::repo_path("deploy"))));
    let charted = documents(&run(Command::new(helm_bin())
        .args([
            "template",
            "portcullis",
            "--namespace",
            "portcullis",
            "--include-crds",
        ])
        .arg(support::repo_path("charts/portcullis"))));
    let key = |d: &serde_yaml::Value| {
        (
            d["kind"].as_str().unwrap().to_string(),
            d["metadata"]["name"].as_str().unwrap().to_string(),
        )
    };
    let index = |docs: &[serde_yaml::Value]| -> BTreeMap<(String, String), serde_json::Value> {
        docs.iter().map(|d| (key(d), comparable(d))).collect()
    };
    let (k, c) = (index(&kustomized), index(&charted));
    fn only(
        a: &BTreeMap<(String, String), serde_json::Value>,
        b: &BTreeMap<(String, String), serde_json::Value>,
    ) -> Vec<String> {
        a.keys()
            .filter(|key| !b.contains_key(*key))
            .map(|(kind, _)| kind.clone())
            .collect()
    }
    // cert-manager's objects and the Namespace in one; the generated certificate in the other.
    assert_eq!(only(&k, &c), ["Certificate", "Issuer", "Namespace"]);
    assert_eq!(only(&c, &k), ["Secret"]);
    let mut compared = 0;
    for (key, object) in &k {
        if let Some(other) = c.get(key) {
            if let Some(path) = first_difference(object, other, String::new()) {
                panic!("{key:?}: deploy/ and the chart differ at {path}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 13, "{compared} objects compared");
}

/// `0.0` and `0` are one number to the API server (the CRDs' `minimum: 0.0`).
fn whole_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && n.is_f64()) {
                *v = serde_json::json!(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// The path of the first place where `a` and `b` differ, with both values.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).find_map(|k| {
            first_difference(
                x.get(k).unwrap_or(&Value::Null),
                y.get(k).unwrap_or(&Value::Null),
                format!("{at}.{k}"),
            )
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} vs {b}")),
    }
}

/// The image recipe fits what runs it: the chart's and the manifests' pod user, their
/// container arguments (appended to the image's entrypoint, the binary itself), their
/// ports, and the image tag they name (the crate's version).
#[test]
fn the_image_recipe_fits_the_chart_and_the_manifests() {
    let dockerfile = std::fs::read_to_string(support::repo_path("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    let runtime = stages.last().unwrap();
    let line = |prefix: &str| {
        runtime
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the runtime stage"))
            .trim()
            .to_string()
    };
    assert_eq!(line("USER "), "65532:65532");
    assert_eq!(line("ENTRYPOINT "), r#"["/usr/local/bin/portcullis"]"#);
    let exposed: Vec<u64> = line("EXPOSE ")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // The build stage's toolchain is at least the crate's rust-version.
    let (version, rust_version) = (cargo_field("version"), cargo_field("rust-version"));
    let build_image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust build stage");
    let toolchain = build_image.split('-').next().unwrap();
    assert!(
        version_at_least(toolchain, &rust_version),
        "rust:{toolchain} is older than rust-version {rust_version}"
    );

    let chart = render_chart(&[]);
    let plain = documents(
        &std::fs::read_to_string(support::repo_path("deploy/kubernetes/portcullis-kube.yaml"))
            .unwrap(),
    );
    for docs in [&chart, &plain] {
        let pod = &deployment(docs)["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        let container = &pod["containers"][0];
        assert_eq!(
            container["image"].as_str().unwrap(),
            format!("ghcr.io/portcullis/portcullis:{version}")
        );
        assert!(
            container["command"].is_null(),
            "the entrypoint is the binary"
        );
        assert_eq!(container_args(docs)[0], "serve");
        for port in container["ports"].as_sequence().unwrap() {
            let port = port["containerPort"].as_u64().unwrap();
            assert!(exposed.contains(&port), "the image does not expose {port}");
        }
    }
}

fn version_at_least(have: &str, want: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    parse(have) >= parse(want)
}

/// A top-level `name = "value"` of Cargo.toml's `[package]` (its first lines).
fn cargo_field(name: &str) -> String {
    let text = std::fs::read_to_string(support::repo_path("Cargo.toml")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .unwrap_or_else(|| panic!("no {name} in Cargo.toml"))
        .trim_matches('"')
        .to_string()
}

/// `(apiGroup, resource, verb, resourceNames)` of every rule of the Roles and
/// ClusterRoles, with the namespace of a Role ("" for a ClusterRole).
fn rules(docs: &[serde_yaml::Value]) -> Vec<(String, String, String, String, Vec<String>)> {
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        for rule in d["rules"].as_sequence().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push((
                            ns.clone(),
                            group.clone(),
                            resource.clone(),
                            verb,
                            strings(&rule["resourceNames"]),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The RBAC the chart renders is the least each mode needs (which requests the binary makes
/// is checked against the same renderings in tests/kube/cluster.rs): nothing in file mode,
/// where the pod gets no token either; `users` create and get only with createUsers; the
/// Lease named per release, by name for get and update; Roles alone with kube.namespaces.
#[test]
fn the_chart_grants_the_least_each_mode_needs() {
    let pod_spec =
        |docs: &[serde_yaml::Value]| deployment(docs)["spec"]["template"]["spec"].clone();

    // File mode: no API access at all.
    let docs = render_chart(&["mode=files"]);
    assert!(rules(&docs).is_empty(), "{:?}", rules(&docs));
    assert!(!docs.iter().any(|d| matches!(
        d["kind"].as_str(),
        Some("RoleBinding" | "ClusterRoleBinding")
    )));
    assert_eq!(pod_spec(&docs)["automountServiceAccountToken"], false);
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(sa["automountServiceAccountToken"], false);

    let has = |r: &[(String, String, String, String, Vec<String>)], res: &str, verb: &str| {
        r.iter().any(|(_, _, rr, v, _)| rr == res && v == verb)
    };
    for (set, create_users, namespaces) in [
        (&[][..], false, &[][..]),
        (&["createUsers=true"][..], true, &[][..]),
        (&["kube.namespaces={a,b}"][..], false, &["a", "b"][..]),
        (
            &["kube.namespaces={a,b}", "createUsers=true"][..],
            true,
            &["a", "b"][..],
        ),
        (&["kube.users.mode=on-demand"][..], false, &[][..]),
        (
            &["kube.users.mode=on-demand", "createUsers=true"][..],
            true,
            &[][..],
        ),
    ] {
        let docs = render_chart(set);
        let r = rules(&docs);
        assert!(
            pod_spec(&docs)["automountServiceAccountToken"].is_null(),
            "{set:?}"
        );
        assert_eq!(has(&r, "users", "create"), create_users, "{set:?}");
        assert_eq!(has(&r, "users", "get"), create_users, "{set:?}");
        assert!(has(&r, "users", "list"), "{set:?}");
        // Users on demand are read, never watched.
        let on_demand = set.contains(&"kube.users.mode=on-demand");
        assert_eq!(has(&r, "users", "watch"), !on_demand, "{set:?}");
        // Secrets: list and watch, never get; where the four kinds are watched.
        assert!(
            has(&r, "secrets", "list") && has(&r, "secrets", "watch"),
            "{set:?}"
        );
        assert!(!has(&r, "secrets", "get"), "{set:?}");
        let secret_scopes: Vec<&str> = r
            .iter()
            .filter(|(_, _, res, v, _)| res == "secrets" && v == "watch")
            .map(|(ns, ..)| ns.as_str())
            .collect();
        if namespaces.is_empty() {
            assert_eq!(secret_scopes, [""], "{set:?}: one ClusterRole");
        } else {
            assert_eq!(secret_scopes, namespaces, "{set:?}: a Role in each");
            assert!(!docs.iter().any(|d| d["kind"] == "ClusterRole"));
        }
        // The Lease: get and update by this release's name; create (no name) in its namespace.
        let lease: Vec<(&str, &str, Vec<String>)> = r
            .iter()
            .filter(|(_, _, res, ..)| res == "leases")
            .map(|(ns, _, _, v, names)| (ns.as_str(), v.as_str(), names.clone()))
            .collect();
        let named = vec!["auth-status-writer".to_string()];
        assert_eq!(
            lease,
            [
                ("auth", "get", named.clone()),
                ("auth", "update", named.clone()),
                ("auth", "create", vec![]),
            ],
            "{set:?}"
        );
        assert!(
            container_args(&docs).contains(&"--lease-name=auth-status-writer".to_string()),
            "{set:?}"
        );
        // Nothing else: no delete, no wildcard.
        for (_, _, res, verb, _) in &r {
            assert!(
                ["get", "list", "watch", "create", "update", "patch"].contains(&verb.as_str())
                    && !res.contains('*'),
                "{set:?}: {res} {verb}"
            );
        }
    }

    // Two releases in one namespace hold a Lease each.
    let other = render_chart_as("billing", &[]);
    assert!(container_args(&other).contains(&"--lease-name=billing-status-writer".to_string()));
}

/// `helm template RELEASE --namespace auth charts/portcullis --set ...`.
fn render_chart_as(release: &str, set: &[&str]) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", release, "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    documents(&run(&mut cmd))
}

/// `image.digest` pins the image by content; the NetworkPolicy opens only the pods' own
/// ports, each from its peers, and leaves egress alone unless told.
#[test]
fn the_chart_pins_the_image_by_digest_and_fences_the_pods() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let docs = render_chart(&[&format!("image.digest={digest}")]);
    let container = &deployment(&docs)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"].as_str().unwrap(),
        format!("ghcr.io/portcullis/portcullis@{digest}")
    );
    assert!(render_chart(&[])
        .iter()
        .all(|d| d["kind"] != "NetworkPolicy"));

    let docs = render_chart(&[
        "networkPolicy.enabled=true",
        "admin.enabled=true",
        "admin.tokenSecret=ops",
        "networkPolicy.metrics.from[0].namespaceSelector.matchLabels.team=monitoring",
    ]);
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy");
    let pod = &deployment(&docs)["spec"]["template"];
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], pod["metadata"]["labels"],
        "it selects the pods"
    );
    assert_eq!(
        policy["spec"]["policyTypes"].as_sequence().unwrap().len(),
        1
    );
    let container_ports: Vec<&str> = pod["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let opened: Vec<&str> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| {
            assert!(rule["from"].as_sequence().is_some_and(|f| !f.is_empty()));
            rule["ports"][0]["port"].as_str().unwrap()
        })
        .collect();
    // The admin port stays closed until its peers are named.
    assert_eq!(opened, ["grpc", "http", "http", "webhook"]);
    for port in &opened {
        assert!(
            container_ports.contains(port),
            "{port} is not a container port"
        );
    }
    let files = render_chart(&["mode=files", "networkPolicy.enabled=true"]);
    let policy = files.iter().find(|d| d["kind"] == "NetworkPolicy").unwrap();
    assert_eq!(
        policy["spec"]["ingress"].as_sequence().unwrap().len(),
        2,
        "no webhook in file mode"
    );
}

/// checkov's findings on the rendered chart that stay, each explained in SECURITY.md
/// ("Checks of the rendered chart"), which must name every one of them.
const EXPLAINED_CHECKOV_FINDINGS: &[(&str, &str)] = &[
    (
        "CKV_K8S_11",
        "no CPU limit: throttling would delay decisions",
    ),
    (
        "CKV_K8S_15",
        "IfNotPresent: a tag is immutable by convention; pin by digest",
    ),
    (
        "CKV_K8S_21",
        "no namespace in the templates: helm install -n chooses it",
    ),
    (
        "CKV_K8S_38",
        "kube mode calls the API server: it needs its token",
    ),
    ("CKV_K8S_43", "by tag unless image.digest is set"),
];

/// The chart rendered under its main value sets passes `kubernetes-validate --strict`
/// (the API's own schemas), and checkov finds nothing but the findings explained in
/// SECURITY.md. One run of each over all renderings (checkov takes seconds to start).
/// Needs both: `scripts/install-test-deps.sh` (or `CHECKOV_BIN`, `KUBERNETES_VALIDATE_BIN`).
#[test]
fn the_rendered_chart_passes_kubernetes_validate_and_checkov() {
    let checkov = support::tool_bin("CHECKOV_BIN", "checkov");
    let validate = support::tool_bin("KUBERNETES_VALIDATE_BIN", "kubernetes-validate");
    let digest = format!("image.digest=sha256:{}", "ab".repeat(32));
    let sets: [(&str, &[&str]); 5] = [
        ("kube", &[]),
        ("files", &["mode=files"]),
        (
            "kube-namespaced",
            &[
                "kube.namespaces={a,b}",
                "createUsers=true",
                "networkPolicy.enabled=true",
                "admin.enabled=true",
                "admin.tokenSecret=ops",
                "networkPolicy.admin.from[0].podSelector.matchLabels.role=ops",
                &digest,
            ],
        ),
        (
            "kube-cert-manager",
            &[
                "webhook.certManager.enabled=true",
                "serviceMonitor.enabled=true",
                "grafanaDashboard.enabled=true",
                "caBundle.configMap.name=kube-root-ca.crt",
            ],
        ),
        (
            "files-users",
            &[
                "mode=files",
                "createUsers=true",
                "usersDir=/var/lib/portcullis/users",
                "networkPolicy.enabled=true",
                &digest,
            ],
        ),
    ];
    // Not tempfile's default `.tmp…`: checkov skips hidden directories.
    let dir = tempfile::Builder::new()
        .prefix("rendered-chart")
        .tempdir()
        .unwrap();
    let mut files = Vec::new();
    for (name, set) in sets {
        let mut cmd = Command::new(helm_bin());
        cmd.args(["template", "auth", "--namespace", "auth", "--include-crds"])
            .arg(support::repo_path("charts/portcullis"));
        for s in set {
            cmd.args(["--set", s]);
        }
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, run(&mut cmd)).unwrap();
        files.push(file);
    }

    // Fails on an unknown field or a wrong type; kinds it has no schema for (cert-manager's,
    // the Prometheus Operator's) are warnings.
    run(Command::new(&validate)
        .args(["--strict", "--quiet"])
        .args(&files));

    let out = Command::new(&checkov)
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--quiet",
            "--skip-download",
        ])
        .args(["--output", "json", "--directory"])
        .arg(dir.path())
        .output()
        .expect("run checkov");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let reports = match report {
        serde_json::Value::Array(r) => r,
        one => vec![one],
    };
    let mut passed = 0;
    let mut found = std::collections::BTreeSet::new();
    let mut unexplained = Vec::new();
    for r in &reports {
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
        for f in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let id = f["check_id"].as_str().unwrap().to_string();
            if !EXPLAINED_CHECKOV_FINDINGS.iter().any(|(e, _)| *e == id) {
                unexplained.push(format!(
                    "{id} {} {}: {}",
                    f["file_path"], f["resource"], f["check_name"]
                ));
            }
            found.insert(id);
        }
    }
    assert!(passed > 50, "checkov passed only {passed} checks");
    assert!(
        unexplained.is_empty(),
        "checkov findings not explained in SECURITY.md (fix them, or explain them there and \
         in EXPLAINED_CHECKOV_FINDINGS):\n{}",
        unexplained.join("\n")
    );
    let security = std::fs::read_to_string(support::repo_path("SECURITY.md")).unwrap();
    let section = security
        .split("## Checks of the rendered chart")
        .nth(1)
        .expect("SECURITY.md has a section \"Checks of the rendered chart\"");
    let section = section.split("\n## ").next().unwrap();
    for (id, why) in EXPLAINED_CHECKOV_FINDINGS {
        assert!(
            section.contains(id),
            "SECURITY.md does not explain {id} ({why})"
        );
        assert!(
            found.contains(*id),
            "{id} no longer fires: drop it from the list and SECURITY.md"
        );
    }
}

/// `helm install --dry-run=client auth charts/portcullis --set ...`: the NOTES.txt text.
fn render_notes(set: &[&str]) -> String {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["install", "--dry-run=client", "auth", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = run(&mut cmd);
    out.split_once("\nNOTES:\n")
        .unwrap_or_else(|| panic!("no NOTES in:\n{out}"))
        .1
        .to_string()
}

/// `portcullis test` of the README's tutorial token (issuer https://auth.example.com, signed
/// with `very-secret`) against a configuration directory: the status it gets.
fn tutorial_token_status(config: &std::path::Path) -> u16 {
    let token = support::tokens::Jwt::new("https://auth.example.com", "some-user-id")
        .exp_in(600)
        .sign_hs256("very-secret");
    let cases = tempfile::tempdir().unwrap();
    let mut statuses = Vec::new();
    for status in [200u16, 401, 403] {
        let file = cases.path().join(format!("{status}.yaml"));
        std::fs::write(
            &file,
            format!(
                "tests:\n  - name: tutorial token\n    request: {{method: GET, path: /fhir/Patient}}\n    \
                 token: {token}\n    expect: {{status: {status}}}\n"
            ),
        )
        .unwrap();
        let out = serve::run(&[
            "test",
            "--config",
            config.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        if out.code == 0 {
            statuses.push(status);
        }
    }
    assert_eq!(statuses.len(), 1, "one expectation holds: {statuses:?}");
    statuses[0]
}

/// Nothing installed into a cluster in file mode carries a usable secret: the chart's
/// default resources and `deploy/kubernetes/portcullis.yaml` trust no issuer (validate warns,
/// the tutorial's token is refused, NOTES says so); once the user supplies resources, their
/// token is allowed and the warning is gone.
#[test]
fn file_mode_installs_trust_no_issuer_until_the_user_supplies_one() {
    let manifest =
        std::fs::read_to_string(support::repo_path("deploy/kubernetes/portcullis.yaml")).unwrap();
    for (what, docs) in [
        ("chart", render_chart(&["mode=files"])),
        ("deploy/kubernetes/portcullis.yaml", documents(&manifest)),
    ] {
        let config = validate_config_maps(&docs);
        let out = serve::run(&["validate", "--config", config.path().to_str().unwrap()]);
        assert!(
            out.stderr
                .contains("no resources: every request would be denied"),
            "{what}: {out:#?}"
        );
        for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
            let text = serde_yaml::to_string(&d["data"]).unwrap();
            assert!(
                !text.contains("very-secret"),
                "{what} ships the tutorial secret"
            );
        }
        assert_eq!(tutorial_token_status(config.path()), 401, "{what}");
    }
    let notes = render_notes(&["mode=files"]);
    assert!(
        notes.contains("holds no TokenIntrospector: no issuer is trusted"),
        "{notes}"
    );

    // The user's own resources (here the loopback quickstart's, for the test only).
    let quickstart = support::repo_path("examples/quickstart/token-introspector.yaml");
    let policy = support::repo_path("examples/quickstart/access-policy.yaml");
    let own = [
        "mode=files".to_string(),
        format!("resources.introspector\\.yaml={}", quickstart.display()),
        format!("resources.policy\\.yaml={}", policy.display()),
    ];
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", "auth", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"))
        .args([
            "--set",
            &own[0],
            "--set-file",
            &own[1],
            "--set-file",
            &own[2],
        ]);
    let docs = documents(&run(&mut cmd));
    let config = validate_config_maps(&docs);
    assert_eq!(tutorial_token_status(config.path()), 200);
    let mut cmd = Command::new(helm_bin());
    cmd.args(["install", "--dry-run=client", "auth", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"))
        .args([
            "--set",
            &own[0],
            "--set-file",
            &own[1],
            "--set-file",
            &own[2],
        ]);
    let out = run(&mut cmd);
    let notes = out.split_once("\nNOTES:\n").expect("NOTES").1;
    assert!(
        notes.contains("Resources: from the `resources` value"),
        "{notes}"
    );
    assert!(!notes.contains("holds no TokenIntrospector"), "{notes}");
}

/// File mode with createUsers writes Users under usersDir: the chart mounts a writable
/// volume there (the root filesystem is read-only), and `serve` with the container's own
/// arguments starts on it.
#[tokio::test]
async fn file_mode_created_users_have_a_writable_volume() {
    let docs = render_chart(&[
        "mode=files",
        "createUsers=true",
        "usersDir=/var/lib/portcullis/users",
    ]);
    let pod = &deployment(&docs)["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/portcullis/users")
        .expect("a volume at usersDir");
    assert_ne!(mount["readOnly"], true, "{mount:?}");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert!(volume["emptyDir"].is_mapping(), "{volume:?}");

    let users = tempfile::tempdir().unwrap();
    let config = validate_config_maps(&docs);
    let mount = config_mount_path(&docs);
    let args: Vec<String> = container_args(&docs)
        .iter()
        .map(|a| {
            a.replace(&mount, config.path().to_str().unwrap())
                .replace("/var/lib/portcullis/users", users.path().to_str().unwrap())
        })
        .collect();
    let p = Portcullis::builder().command_line(&args).start().await;
    assert!(p.log().contains("configuration loaded"), "{}", p.log());
}

/// The Envoy filter NOTES.txt prints is the one `deploy/examples/envoy/envoy-grpc.yaml`
/// ships (which tests/envoy runs through real Envoy, for decisions): `status_on_error`
/// included, so an authorizer error is the documented 503. The Istio provider says 503 too.
#[test]
fn the_notes_snippets_are_the_shipped_configuration() {
    let notes = render_notes(&[]);
    let start = notes
        .find("  - name: envoy.filters.http.ext_authz")
        .expect("the Envoy snippet");
    let snippet = &notes[start..];
    let snippet = &snippet[..snippet.find("\n\n").unwrap()];
    let printed: serde_yaml::Value = serde_yaml::from_str(snippet).unwrap();
    let shipped: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(support::repo_path(support::envoy::SHIPPED_GRPC)).unwrap(),
    )
    .unwrap();
    let filters = &shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    let shipped_filter = filters
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.ext_authz")
        .unwrap();
    assert_eq!(&printed[0], shipped_filter);
    assert_eq!(
        printed[0]["typed_config"]["status_on_error"]["code"],
        "ServiceUnavailable"
    );
    let istio = &notes[notes.find("envoyExtAuthzGrpc:").expect("the Istio snippet")..];
    let istio = &istio[..istio.find("\n\n").unwrap()];
    assert!(istio.contains("failOpen: false"), "{istio}");
    assert!(istio.contains("statusOnError: \"503\""), "{istio}");
}
