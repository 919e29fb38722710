//! What deploy/ and charts/ ship works: the Helm chart lints and renders, the
//! configuration that the chart and the plain manifests mount passes `portcullis validate`,
//! and `portcullis serve` with the container's own arguments becomes ready on it.
//!
//! Needs helm: `scripts/install-test-deps.sh` (or `HELM_BIN`). Without it this fails.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
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
    documents(&render_text("auth", "auth", set))
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

/// `helm lint --strict` (warnings fail too) under the main value sets.
fn lint_strict(set: &[&str]) {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["lint", "--strict", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    run(&mut cmd);
}

#[tokio::test]
async fn the_helm_chart_lints_renders_and_ships_valid_configuration() {
    let chart = support::repo_path("charts/portcullis");
    let ca = format!(
        "webhook.caBundle={}",
        support::tls::TestCa::new("lint CA").pem()
    );
    for set in [
        &[][..],
        &["mode=files"][..],
        &["webhook.certManager.enabled=true", "crds.enabled=true"][..],
        &["webhook.existingSecret=my-webhook-tls", &ca][..],
        &["kube.namespaces={a,b}", "createUsers=true"][..],
    ] {
        lint_strict(set);
    }
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
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    let chart = support::repo_path("charts/portcullis");
    let ca = support::tls::TestCa::new("user's CA").pem();
    let ca_value = format!("webhook.caBundle={ca}");
    let cases: [(&[&str], &[&str]); 11] = [
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
        (
            &["webhook.existingSecret=my-webhook-tls", &ca_value],
            &["Deployment", "ValidatingWebhookConfiguration"],
        ),
        (&["crds.enabled=true"], &["CustomResourceDefinition"]),
        (POD_VALUES, &["Deployment", "Service"]),
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
                "CustomResourceDefinition" => {
                    serde_yaml::from_value::<CustomResourceDefinition>(doc.clone()).map(drop)
                }
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
                .find(|d| {
                    d["kind"] == "ConfigMap" && d["metadata"]["name"] == "auth-portcullis-dashboard"
                })
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
            let cert = if set.contains(&"webhook.certManager.enabled=true") {
                WebhookCert::CertManager
            } else if set.contains(&"webhook.existingSecret=my-webhook-tls") {
                WebhookCert::Existing {
                    secret: "my-webhook-tls",
                    ca: &ca,
                }
            } else {
                WebhookCert::Generated
            };
            assert_webhook_is_wired(&docs, cert);
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
                .filter(|d| d["roleRef"]["name"] == "auth-portcullis-auth")
                .filter_map(|d| d["metadata"]["namespace"].as_str())
                .collect();
            assert_eq!(
                bindings,
                ["a", "b"],
                "a Role is bound in each watched namespace"
            );
            let roles: Vec<&str> = docs
                .iter()
                .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "auth-portcullis-auth")
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

/// Where the webhook's serving certificate comes from.
enum WebhookCert<'a> {
    /// The chart's own CA and certificate, in a Secret it renders.
    Generated,
    /// cert-manager's Certificate, and its CA injector.
    CertManager,
    /// The user's Secret (`webhook.existingSecret`) and CA (`webhook.caBundle`, PEM).
    Existing { secret: &'a str, ca: &'a str },
}

/// The webhook's pieces meet: the API server calls the Service's `webhook` port, which
/// reaches the container's `--webhook-addr`, serving the mounted certificate, which the
/// API server trusts (the chart's CA in `caBundle`, cert-manager's injection, or the user's CA).
fn assert_webhook_is_wired(docs: &[serde_yaml::Value], cert: WebhookCert) {
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let vwc = find("ValidatingWebhookConfiguration");
    let hook = &vwc["webhooks"][0];
    let client = &hook["clientConfig"];
    assert_eq!(client["service"]["path"], "/validate");
    let service = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == client["service"]["name"])
        .expect("the Service the webhook calls");
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
    use base64::Engine;
    let decode = |v: &serde_yaml::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    match cert {
        WebhookCert::Existing { secret: name, ca } => {
            assert_eq!(secret, name, "the pods mount the user's Secret");
            assert!(
                !docs.iter().any(|d| d["kind"] == "Secret"),
                "the chart makes no Secret of its own"
            );
            assert_eq!(
                String::from_utf8(decode(&client["caBundle"]))
                    .unwrap()
                    .trim(),
                ca.trim()
            );
            assert!(vwc["metadata"]["annotations"].is_null());
        }
        WebhookCert::CertManager => {
            let certificate = find("Certificate");
            assert_eq!(certificate["spec"]["secretName"], secret);
            let injected = vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
                .as_str()
                .unwrap();
            assert!(injected.ends_with(&format!(
                "/{}",
                certificate["metadata"]["name"].as_str().unwrap()
            )));
        }
        WebhookCert::Generated => {
            // The chart's CA signed the served certificate for the Service's DNS name.
            let tls = find("Secret");
            assert_eq!(tls["metadata"]["name"], secret);
            assert_eq!(decode(&client["caBundle"]), decode(&tls["data"]["ca.crt"]));
            let cert = String::from_utf8(decode(&tls["data"]["tls.crt"])).unwrap();
            let ca = String::from_utf8(decode(&tls["data"]["ca.crt"])).unwrap();
            support::tls::assert_signed_for(
                &cert,
                &ca,
                &format!(
                    "{}.{}.svc",
                    service["metadata"]["name"].as_str().unwrap(),
                    client["service"]["namespace"].as_str().unwrap()
                ),
            );
        }
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
        let named = vec!["auth-portcullis-status-writer".to_string()];
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
            container_args(&docs)
                .contains(&"--lease-name=auth-portcullis-status-writer".to_string()),
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
    assert!(container_args(&other)
        .contains(&"--lease-name=billing-portcullis-status-writer".to_string()));
}

/// `helm template RELEASE --namespace auth charts/portcullis --set ...`.
fn render_chart_as(release: &str, set: &[&str]) -> Vec<serde_yaml::Value> {
    documents(&render_text(release, "auth", set))
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
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &pod["metadata"]["labels"][key], value,
            "it selects the pods"
        );
    }
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
    // The conventions of chart 0.2.0: the user's webhook certificate, the CRDs templated,
    // the values every chart has, as a subchart with `global` values, and two releases of
    // one name in two namespaces (whose names the other tests show apart).
    let ca = format!(
        "webhook.caBundle={}",
        support::tls::TestCa::new("user's CA").pem()
    );
    let more = [
        (
            "existing-secret",
            render_text(
                "auth",
                "auth",
                &["webhook.existingSecret=my-webhook-tls", &ca],
            ),
        ),
        (
            "crds-templated",
            render_text("auth", "auth", &["crds.enabled=true"]),
        ),
        ("pod-values", render_text("auth", "auth", POD_VALUES)),
        (
            "subchart",
            render_as_subchart(PARENT_VALUES, &["portcullis.networkPolicy.enabled=true"]),
        ),
        (
            "team-a",
            render_text("portcullis", "team-a", &["networkPolicy.enabled=true"]),
        ),
        (
            "team-b",
            render_text("portcullis", "team-b", &["networkPolicy.enabled=true"]),
        ),
    ];
    for (name, text) in more {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text).unwrap();
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
        format!("config.files.introspector\\.yaml={}", quickstart.display()),
        format!("config.files.policy\\.yaml={}", policy.display()),
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
        notes.contains("Resources: from the `config.files` value"),
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

/// `helm template RELEASE --namespace NAMESPACE charts/portcullis --set ...`, as text.
fn render_text(release: &str, namespace: &str, set: &[&str]) -> String {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", release, "--namespace", namespace])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    run(&mut cmd)
}

/// `helm template auth ... --set ...` that must fail: its error.
fn render_error(set: &[&str], values_files: &[&std::path::Path]) -> String {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", "auth", "--namespace", "auth"])
        .arg(support::repo_path("charts/portcullis"));
    for s in set {
        cmd.args(["--set", s]);
    }
    for f in values_files {
        cmd.arg("--values").arg(f);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        !out.status.success(),
        "{set:?} {values_files:?} rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A top-level field of the chart's Chart.yaml.
fn chart_field(name: &str) -> String {
    let text = std::fs::read_to_string(support::repo_path("charts/portcullis/Chart.yaml")).unwrap();
    let chart: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    chart[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in Chart.yaml"))
        .to_string()
}

/// The pod, ServiceAccount and Service values of chart 0.2.0, all set at once.
const POD_VALUES: &[&str] = &[
    "imagePullSecrets[0].name=regcred",
    "imagePullSecrets[1]=mirror",
    "podAnnotations.example\\.com/team=payments",
    "podLabels.team=payments",
    "priorityClassName=portcullis-critical",
    "extraEnv[0].name=RUST_LOG",
    "extraEnv[0].value=debug",
    "serviceAccount.annotations.example\\.com/role=portcullis",
    "service.type=NodePort",
    "service.annotations.example\\.com/load-balancer=internal",
    "nodeSelector.kubernetes\\.io/os=linux",
    "tolerations[0].key=dedicated",
    "tolerations[0].operator=Exists",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In",
    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values[0]=amd64",
    "resources.requests.memory=128Mi",
    "resources.limits.memory=512Mi",
    "resources.limits.cpu=1500m",
];

/// The values that every chart has reach their objects: image pull secrets (the chart's and
/// a parent's `global.imagePullSecrets`), pod annotations and labels, the priority class,
/// extra environment, the ServiceAccount's annotations (or another ServiceAccount), the
/// Service's type and annotations, placement, and `resources` as the container's resources.
#[test]
fn the_conventional_values_reach_their_objects() {
    use k8s_openapi::api::apps::v1::Deployment;

    let mut set = POD_VALUES.to_vec();
    set.extend([
        "global.imagePullSecrets[0].name=shared",
        "global.imagePullSecrets[1]=regcred",
    ]);
    let docs = render_chart(&set);
    let parsed: Deployment = serde_yaml::from_value(deployment(&docs).clone()).unwrap();
    let template = parsed.spec.template;
    let meta = template.metadata.unwrap();
    let pod = template.spec.unwrap();
    let secrets: Vec<String> = pod
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        secrets,
        ["regcred", "mirror", "shared"],
        "once each, in order"
    );
    assert_eq!(meta.annotations.unwrap()["example.com/team"], "payments");
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["app.kubernetes.io/instance"], "auth");
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("portcullis-critical")
    );
    assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
    assert_eq!(
        pod.tolerations.unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(pod.affinity.unwrap().node_affinity.is_some());
    let container = &pod.containers[0];
    let env: Vec<&str> = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "RUST_LOG"]);
    let resources = serde_json::to_value(container.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        resources,
        serde_json::json!({"requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1500m", "memory": "512Mi"}}),
        "the chart's defaults with the values over them"
    );

    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["example.com/role"],
        "portcullis"
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        sa["metadata"]["name"].as_str()
    );
    let service = docs.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(
        service["metadata"]["annotations"]["example.com/load-balancer"],
        "internal"
    );
    assert_eq!(
        render_chart(&[])
            .iter()
            .find(|d| d["kind"] == "Service")
            .unwrap()["spec"]["type"],
        "ClusterIP"
    );

    // Another ServiceAccount: none made, the pods and the role's bindings use it.
    let docs = render_chart(&[
        "serviceAccount.create=false",
        "serviceAccount.name=platform-auth",
    ]);
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceAccount"));
    assert_eq!(
        deployment(&docs)["spec"]["template"]["spec"]["serviceAccountName"],
        "platform-auth"
    );
    let bindings: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .collect();
    assert_eq!(bindings.len(), 2, "the watch role's and the Lease's");
    for b in bindings {
        assert_eq!(b["subjects"][0]["name"], "platform-auth");
    }
}

/// Values of chart 0.1.0 that moved are refused, and the error says where they went:
/// `podResources` is `resources`, and the file-mode configuration that `resources` held is
/// `config.files`. A values file written for 0.1.0 fails the same way.
#[test]
fn the_old_value_shapes_are_refused_naming_the_new_place() {
    for (set, says) in [
        (
            &["podResources.limits.memory=1Gi"][..],
            "`podResources` is now `resources`",
        ),
        (
            &["mode=files", "resources.policies\\.yaml=x"][..],
            "move the file-mode configuration to `config.files`",
        ),
        (
            &["podLabels.app\\.kubernetes\\.io/instance=other"][..],
            "`app.kubernetes.io/instance` is a selector label",
        ),
        (
            &["serviceAccount.create=false"][..],
            "serviceAccount.name: with serviceAccount.create=false",
        ),
        (
            &["webhook.caBundle=-----BEGIN CERTIFICATE-----"][..],
            "set webhook.existingSecret too",
        ),
    ] {
        let error = render_error(set, &[]);
        assert!(error.contains(says), "{set:?}: {error}");
    }

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("values-0.1.yaml");
    std::fs::write(
        &old,
        "mode: files\nresources:\n  resources.yaml: |\n    resourceType: AccessPolicy\n    \
         id: all\n    engine: allow\npodResources:\n  limits: {memory: 1Gi}\n",
    )
    .unwrap();
    let error = render_error(&[], &[&old]);
    assert!(
        error.contains("`podResources` is now `resources`"),
        "{error}"
    );
    std::fs::write(
        &old,
        "mode: files\nresources:\n  resources.yaml: |\n    resourceType: AccessPolicy\n    \
         id: all\n    engine: allow\n",
    )
    .unwrap();
    let error = render_error(&[], &[&old]);
    assert!(
        error.contains("`resources.yaml` is none of them")
            && error.contains("config.files.resources\\.yaml"),
        "{error}"
    );
}

/// Every object carries the labels of Helm and Kubernetes' recommended set, the pods
/// too; every selector is exactly the stable pair (name, instance), as in chart 0.1.0, so
/// that an upgrade never changes the Deployment's selector.
#[test]
fn every_object_carries_the_standard_labels_and_selectors_stay_the_stable_pair() {
    let chart = format!("portcullis-{}", chart_field("version"));
    let app_version = chart_field("appVersion");
    let selector = serde_json::json!({
        "app.kubernetes.io/name": "portcullis",
        "app.kubernetes.io/instance": "auth",
    });
    for set in [
        &[][..],
        &[
            "mode=files",
            "networkPolicy.enabled=true",
            "serviceMonitor.enabled=true",
            "grafanaDashboard.enabled=true",
        ][..],
        &[
            "webhook.certManager.enabled=true",
            "crds.enabled=true",
            "kube.namespaces={a,b}",
            "networkPolicy.enabled=true",
        ][..],
        POD_VALUES,
    ] {
        let docs = render_chart(set);
        for d in &docs {
            let what = format!("{set:?}: {:?} {:?}", d["kind"], d["metadata"]["name"]);
            let mut labelled = vec![&d["metadata"]["labels"]];
            if d["kind"] == "Deployment" {
                labelled.push(&d["spec"]["template"]["metadata"]["labels"]);
            }
            for labels in labelled {
                assert_eq!(labels["helm.sh/chart"], chart.as_str(), "{what}");
                assert_eq!(labels["app.kubernetes.io/name"], "portcullis", "{what}");
                assert_eq!(labels["app.kubernetes.io/instance"], "auth", "{what}");
                assert_eq!(
                    labels["app.kubernetes.io/version"],
                    app_version.as_str(),
                    "{what}"
                );
                assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{what}");
            }
            let selectors = match d["kind"].as_str().unwrap() {
                "Deployment" => {
                    let mut s = vec![&d["spec"]["selector"]["matchLabels"]];
                    for c in d["spec"]["template"]["spec"]["topologySpreadConstraints"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                    {
                        s.push(&c["labelSelector"]["matchLabels"]);
                    }
                    s
                }
                "Service" => vec![&d["spec"]["selector"]],
                "PodDisruptionBudget" | "ServiceMonitor" => {
                    vec![&d["spec"]["selector"]["matchLabels"]]
                }
                "NetworkPolicy" => vec![&d["spec"]["podSelector"]["matchLabels"]],
                _ => vec![],
            };
            for s in selectors {
                assert_eq!(serde_json::to_value(s).unwrap(), selector, "{what}");
            }
            let component = d["metadata"]["labels"]["app.kubernetes.io/component"].as_str();
            match d["kind"].as_str().unwrap() {
                "ValidatingWebhookConfiguration" | "Certificate" | "Issuer" | "Secret" => {
                    assert_eq!(component, Some("webhook"), "{what}")
                }
                "CustomResourceDefinition" => assert_eq!(component, Some("crds"), "{what}"),
                "ServiceMonitor" => assert_eq!(component, Some("metrics"), "{what}"),
                _ => {}
            }
        }
    }
}

/// A parent chart that depends on this one (copied into its charts/, with a `condition`,
/// as umbrella charts do) and has objects of its own named after the release; `helm lint
/// --strict` passes on it. Returns `helm template platform` of it in namespace `platform`.
fn render_as_subchart(parent_values: &str, set: &[&str]) -> String {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("platform");
    let chart = support::repo_path("charts/portcullis");
    copy(&chart, &parent.join("charts/portcullis"));
    std::fs::create_dir_all(parent.join("templates")).unwrap();
    std::fs::write(
        parent.join("Chart.yaml"),
        format!(
            "apiVersion: v2\nname: platform\ndescription: an umbrella chart\nversion: 1.0.0\n\
             dependencies:\n  - name: portcullis\n    version: {}\n    repository: file://{}\n    \
             condition: portcullis.enabled\n",
            chart_field("version"),
            chart.display()
        ),
    )
    .unwrap();
    // The parent's own objects take the release's name, as `helm create`'s do for a release
    // named after the chart.
    std::fs::write(
        parent.join("templates/app.yaml"),
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ .Release.Name }}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\n\
         spec:\n  selector: {app: platform}\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    std::fs::write(parent.join("values.yaml"), parent_values).unwrap();
    let with = |cmd: &mut Command| {
        for s in set {
            cmd.args(["--set", s]);
        }
    };
    let mut lint = Command::new(helm_bin());
    lint.args(["lint", "--strict", "--namespace", "platform"])
        .arg(&parent);
    with(&mut lint);
    run(&mut lint);
    let mut template = Command::new(helm_bin());
    template
        .args(["template", "platform", "--namespace", "platform"])
        .arg(&parent);
    with(&mut template);
    run(&mut template)
}

/// Values of an umbrella chart holding portcullis, with `global` values for it and for
/// other subcharts.
const PARENT_VALUES: &str = "global:\n  imagePullSecrets: [{name: regcred}]\n  \
    imageRegistry: registry.example.com\n  storageClass: fast\nportcullis:\n  enabled: true\n  \
    createUsers: true\n";

/// As a subchart, with `global` values and the `enabled` of a dependency condition, the
/// chart passes its schema and renders: its objects are named `<release>-portcullis`, apart
/// from the parent's own, and take `global.imagePullSecrets`; `enabled: false` leaves it out.
#[test]
fn the_chart_works_as_a_subchart_with_global_values() {
    let docs = documents(&render_as_subchart(PARENT_VALUES, &[]));
    let names: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let unique: BTreeSet<&(String, String)> = names.iter().collect();
    assert_eq!(
        unique.len(),
        names.len(),
        "no two objects share a name: {names:?}"
    );
    let chart = format!("portcullis-{}", chart_field("version"));
    let ours: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|d| d["metadata"]["labels"]["helm.sh/chart"].as_str() == Some(chart.as_str()))
        .collect();
    assert!(ours.len() > 5, "{names:?}");
    let deployment = deployment(&docs);
    assert_eq!(deployment["metadata"]["name"], "platform-portcullis");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"],
        "regcred"
    );
    assert!(container_args(&docs).contains(&"--create-users".to_string()));
    let vwc = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .unwrap();
    assert_eq!(vwc["metadata"]["name"], "platform-portcullis-platform");
    assert_eq!(
        vwc["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "platform"
    );
    assert_webhook_is_wired(&docs, WebhookCert::Generated);

    let off = documents(&render_as_subchart(
        PARENT_VALUES,
        &["portcullis.enabled=false"],
    ));
    assert!(off
        .iter()
        .all(|d| d["metadata"]["labels"]["helm.sh/chart"].is_null()));
    assert_eq!(off.len(), 2, "the parent's own objects alone");
}

/// The cluster-scoped objects a release of kube mode renders, and those it places in
/// namespaces other than its own, are named with its namespace: releases of one name in two
/// namespaces share no name, whether cluster-wide or in a namespace they both use (watched
/// namespaces, the Lease's, Grafana's), and each binding points at its own release's role
/// and ServiceAccount.
#[test]
fn two_releases_in_two_namespaces_render_no_colliding_names() {
    const CLUSTER_SCOPED: &[&str] = &[
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingWebhookConfiguration",
        "CustomResourceDefinition",
    ];
    for set in [
        &[][..],
        &["webhook.certManager.enabled=true", "createUsers=true"][..],
        &[
            "kube.namespaces={shared,team-a,team-b}",
            "kube.leaseNamespace=leases",
            "grafanaDashboard.enabled=true",
            "grafanaDashboard.namespace=monitoring",
        ][..],
    ] {
        let names = |namespace: &str| -> BTreeSet<(String, String, String)> {
            let docs = documents(&render_text("portcullis", namespace, set));
            for d in docs.iter().filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some("ClusterRoleBinding" | "RoleBinding")
                )
            }) {
                let role = docs
                    .iter()
                    .find(|r| {
                        r["kind"] == d["roleRef"]["kind"]
                            && r["metadata"]["name"] == d["roleRef"]["name"]
                            && r["metadata"]["namespace"] == d["metadata"]["namespace"]
                    })
                    .unwrap_or_else(|| {
                        panic!("{set:?}: {:?} binds no role of its release", d["metadata"])
                    });
                assert!(role["rules"].is_sequence());
                assert_eq!(d["subjects"][0]["namespace"], namespace);
            }
            docs.iter()
                .map(|d| {
                    let kind = d["kind"].as_str().unwrap().to_string();
                    let name = d["metadata"]["name"].as_str().unwrap().to_string();
                    let scope = if CLUSTER_SCOPED.contains(&kind.as_str()) {
                        assert!(
                            name.ends_with(&format!("-{namespace}")),
                            "{set:?}: {kind} {name} lacks the namespace"
                        );
                        String::new()
                    } else {
                        d["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or(namespace)
                            .to_string()
                    };
                    if let Some(from) =
                        d["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str()
                    {
                        assert!(from.starts_with(&format!("{namespace}/")), "{from}");
                    }
                    (kind, scope, name)
                })
                .collect()
        };
        let (a, b) = (names("team-a"), names("team-b"));
        let shared: Vec<_> = a.intersection(&b).collect();
        assert!(
            shared.is_empty(),
            "{set:?}: both releases render {shared:?}"
        );
        let cluster_scoped = a.iter().filter(|(_, scope, _)| scope.is_empty()).count();
        let elsewhere = a
            .iter()
            .filter(|(_, scope, _)| !scope.is_empty() && scope != "team-a")
            .count();
        assert!(cluster_scoped + elsewhere >= 3, "{set:?}: {a:?}");
    }
}

/// With `webhook.existingSecret` (and `webhook.caBundle`) or with cert-manager, two renders
/// are the same, byte for byte: a GitOps tool sees no drift. The chart's generated
/// certificate is new on every render made without the cluster, which docs/kubernetes.md
/// says, with the Argo CD `ignoreDifferences` it needs; `existingSecret` without a CA that
/// helm can read is refused, naming `webhook.caBundle`.
#[test]
fn the_webhook_configuration_is_the_same_on_every_render_with_existing_secret_or_cert_manager() {
    let ca = support::tls::TestCa::new("GitOps CA").pem();
    let ca_value = format!("webhook.caBundle={ca}");
    let existing = ["webhook.existingSecret=my-webhook-tls", ca_value.as_str()];
    for (set, cert) in [
        (
            &["webhook.certManager.enabled=true"][..],
            WebhookCert::CertManager,
        ),
        (
            &[
                "webhook.certManager.enabled=true",
                "webhook.certManager.issuerRef.kind=ClusterIssuer",
                "webhook.certManager.issuerRef.name=my-ca",
            ][..],
            WebhookCert::CertManager,
        ),
        (
            &existing[..],
            WebhookCert::Existing {
                secret: "my-webhook-tls",
                ca: &ca,
            },
        ),
    ] {
        let first = render_text("auth", "auth", set);
        let second = render_text("auth", "auth", set);
        assert!(first == second, "{set:?}: two renders differ");
        let docs = documents(&first);
        assert_eq!(
            docs.iter().any(|d| d["kind"] == "Issuer"),
            set == ["webhook.certManager.enabled=true"],
            "{set:?}: the chart's own Issuer, unless issuerRef names one"
        );
        assert_webhook_is_wired(&docs, cert);
    }

    let ca_bundle = |docs: &[serde_yaml::Value]| {
        docs.iter()
            .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
            .unwrap()["webhooks"][0]["clientConfig"]["caBundle"]
            .clone()
    };
    assert_ne!(
        ca_bundle(&render_chart(&[])),
        ca_bundle(&render_chart(&[])),
        "the generated CA is new on every render without the cluster"
    );
    let docs = std::fs::read_to_string(support::repo_path("docs/kubernetes.md")).unwrap();
    for needed in [
        "ignoreDifferences",
        "jqPathExpressions: [.webhooks[].clientConfig.caBundle]",
        "RespectIgnoreDifferences=true",
        "webhook.existingSecret",
    ] {
        assert!(docs.contains(needed), "docs/kubernetes.md lacks {needed}");
    }

    let error = render_error(&["webhook.existingSecret=my-webhook-tls"], &[]);
    assert!(error.contains("set webhook.caBundle"), "{error}");
    let error = render_error(
        &[
            "webhook.existingSecret=x",
            "webhook.certManager.enabled=true",
        ],
        &[],
    );
    assert!(error.contains("not both"), "{error}");
}

/// `crds.enabled` renders the CRDs of crds/ into the release, so that `helm upgrade`
/// upgrades them: exactly what `portcullis crds` prints (as tests/kube/crds.rs checks crds/),
/// with the chart's labels and, with `crds.keep` (the default), `helm.sh/resource-policy:
/// keep`. Off by default: crds/ alone, which `helm install` applies.
#[test]
fn the_templated_crds_are_the_binarys_and_kept() {
    let out = serve::run(&["crds"]);
    assert_eq!(out.code, 0, "portcullis crds: {}", out.stderr);
    let binary = documents(&out.stdout);
    let crds = |docs: Vec<serde_yaml::Value>| -> Vec<serde_yaml::Value> {
        docs.into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect()
    };
    assert!(crds(render_chart(&[])).is_empty(), "off by default");

    let templated = crds(render_chart(&["crds.enabled=true"]));
    assert_eq!(templated.len(), binary.len());
    assert_eq!(binary.len(), 4);
    for (t, b) in templated.iter().zip(&binary) {
        let name = b["metadata"]["name"].as_str().unwrap();
        assert!(
            b["metadata"]["labels"].is_null() && b["metadata"]["annotations"].is_null(),
            "{name}: the chart would replace the binary's own metadata"
        );
        assert_eq!(
            t["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        assert_eq!(
            t["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "Helm"
        );
        let mut t = serde_json::to_value(t).unwrap();
        let metadata = t["metadata"].as_object_mut().unwrap();
        metadata.remove("labels");
        metadata.remove("annotations");
        let mut b = serde_json::to_value(b).unwrap();
        whole_numbers(&mut t);
        whole_numbers(&mut b);
        if let Some(path) = first_difference(&t, &b, String::new()) {
            panic!("{name}: the templated CRD differs from `portcullis crds` at {path}");
        }
    }
    let unkept = crds(render_chart(&["crds.enabled=true", "crds.keep=false"]));
    assert_eq!(unkept.len(), 4);
    assert!(unkept
        .iter()
        .all(|c| c["metadata"]["annotations"].is_null()));
}

/// Every `helm install` and `helm upgrade` of the chart that the docs, the examples, the
/// values and NOTES give installs release `portcullis` into namespace `portcullis` (`-n
/// portcullis`, `--create-namespace` on install), which is the Service address the Istio
/// example and the plain manifests name.
#[test]
fn every_helm_install_in_the_docs_names_release_and_namespace() {
    let mut files = vec![
        support::repo_path("README.md"),
        support::repo_path("deploy/examples/README.md"),
        support::repo_path("charts/portcullis/values.yaml"),
        support::repo_path("charts/portcullis/templates/NOTES.txt"),
        support::repo_path("charts/portcullis/CHANGELOG.md"),
    ];
    for dir in ["docs", "deploy/examples/istio", "deploy/examples/envoy"] {
        for entry in std::fs::read_dir(support::repo_path(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    let mut commands = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap().replace("\\\n", " ");
        for line in text.lines() {
            for (at, _) in line.match_indices("helm ") {
                let command = line[at..].split('`').next().unwrap();
                let install = command.starts_with("helm install ");
                if !(install || command.starts_with("helm upgrade "))
                    || !command.contains("charts/portcullis")
                {
                    continue;
                }
                commands += 1;
                let words: Vec<&str> = command.split_whitespace().collect();
                let where_ = format!("{}: {command}", file.display());
                let release = words.iter().skip(2).find(|w| !w.starts_with('-')).unwrap();
                assert_eq!(*release, "portcullis", "{where_}");
                assert!(
                    words
                        .windows(2)
                        .any(|w| { matches!(w[0], "-n" | "--namespace") && w[1] == "portcullis" })
                        || words.contains(&"--namespace=portcullis"),
                    "{where_}: no -n portcullis"
                );
                if install {
                    assert!(words.contains(&"--create-namespace"), "{where_}");
                }
            }
        }
    }
    assert!(commands >= 3, "{commands} helm commands found");

    let service = documents(&render_text("portcullis", "portcullis", &[]))
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    let address = format!(
        "{}.portcullis.svc.cluster.local",
        service["metadata"]["name"].as_str().unwrap()
    );
    let istio = std::fs::read_to_string(support::repo_path(
        "deploy/examples/istio/portcullis-provider.yaml",
    ))
    .unwrap();
    assert_eq!(
        istio.matches("service: ").count(),
        istio.matches(&format!("service: {address}")).count(),
        "the Istio example names {address}"
    );
}
