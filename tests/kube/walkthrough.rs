//! `docs/walkthrough.md`, step by step, read out of the page itself: each step is a fenced
//! block after a `<!-- walkthrough:NAME -->` marker, so the page cannot drift from this
//! test. No cluster runs here; each step is checked the nearest way this machine allows:
//!
//! 1. **install** (`helm install ... -n portcullis --create-namespace`): the same release,
//!    chart and namespace through `helm template`, checked by `kubernetes-validate --strict`
//!    (the API's own schemas); the Deployment `rollout status` waits for is the chart's.
//! 2. **app** (Envoy and the echo application): the manifest through `kubernetes-validate
//!    --strict`; the ConfigMaps made from `deploy/examples/envoy/envoy-grpc.yaml` and
//!    `scripts/echo-upstream.py`; the shipped Envoy configuration's clusters name this
//!    manifest's Service `app` and the chart's Service, at their ports; its Envoy image is
//!    the version the tests run.
//! 3. **secret**, **introspector**, **policy**: applied to the in-repo fake API server
//!    (`tests/support/fake_apiserver`), which `portcullis serve` watches, started with
//!    the command line of the chart's Deployment (step 1's rendering).
//! 4. **get** (`kubectl get portcullis`): each row's columns are the CRD's printer
//!    columns, evaluated on the objects as portcullis wrote their status (no kubectl).
//! 5. **tokens**, **curl**: the page's Python snippet mints the two tokens, and each `curl`
//!    goes through a real Envoy running the shipped configuration (listener and cluster
//!    addresses moved to loopback, as `render_shipped` does) in front of
//!    `scripts/echo-upstream.py` run with the manifest's own command; each gets the
//!    status its comment says, and the 200's upstream saw the identity the page shows.
//! 6. **broken** (`kubectl apply` refused): the edit posted to the admission webhook as
//!    the API server would (an `UPDATE` AdmissionReview over HTTPS), which refuses it with
//!    the message the page prints. The API server itself (its CEL rules, kubectl's
//!    wording) is not run here.

use crate::support;

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use support::envoy::{self, Envoy};
use support::fake_apiserver::FakeApiServer;
use support::portcullis::Portcullis;
use support::process::Supervised;

const PAGE: &str = "docs/walkthrough.md";
const API: &str = "portcullis.dev/v1alpha1";

/// The walkthrough page, and its marked blocks by name.
struct Page {
    blocks: BTreeMap<String, String>,
}

impl Page {
    fn read() -> Page {
        let text = std::fs::read_to_string(support::repo_path(PAGE)).unwrap();
        let mut blocks = BTreeMap::new();
        for (at, _) in text.match_indices("<!-- walkthrough:") {
            let rest = &text[at + "<!-- walkthrough:".len()..];
            let (name, rest) = rest.split_once(" -->\n").expect("a marker line");
            let rest = rest
                .strip_prefix("```")
                .unwrap_or_else(|| panic!("{PAGE}: marker {name} is not followed by a fence"));
            let body = rest.split_once('\n').unwrap().1;
            let body = &body[..body.find("\n```\n").expect("a closing fence")];
            let old = blocks.insert(name.to_string(), format!("{body}\n"));
            assert!(old.is_none(), "{PAGE}: two blocks named {name}");
        }
        Page { blocks }
    }

    fn block(&self, name: &str) -> &str {
        self.blocks
            .get(name)
            .unwrap_or_else(|| panic!("{PAGE} has no block marked walkthrough:{name}"))
    }

    /// The shell block's lines, `\`-continuations joined.
    fn commands(&self, name: &str) -> Vec<String> {
        self.block(name)
            .replace("\\\n", " ")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The one line of block `name` that starts with `prefix`.
    fn command(&self, name: &str, prefix: &str) -> Vec<String> {
        let lines: Vec<String> = self
            .commands(name)
            .into_iter()
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(lines.len(), 1, "{PAGE} {name}: one `{prefix}` expected");
        lines[0].split_whitespace().map(str::to_string).collect()
    }

    fn documents(&self, name: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(self.block(name))
            .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
            .filter(|d| !d.is_null())
            .collect()
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `flag VALUE` or `flag=VALUE` among `words`.
fn flag<'w>(words: &'w [String], names: &[&str]) -> Option<&'w str> {
    words.iter().enumerate().find_map(|(i, w)| {
        names.iter().find_map(|n| {
            if w == n {
                words.get(i + 1).map(String::as_str)
            } else {
                w.strip_prefix(&format!("{n}="))
            }
        })
    })
}

/// Step 1: the page's `helm install`, rendered by `helm template` with the same release,
/// chart, namespace and values, as one text.
fn render_install(page: &Page) -> (String, String) {
    let words = page.command("install", "helm install ");
    let namespace = flag(&words, &["-n", "--namespace"])
        .expect("helm install -n")
        .to_string();
    assert!(words.contains(&"--create-namespace".to_string()));
    let positional: Vec<&String> = words[2..]
        .iter()
        .enumerate()
        .filter(|(i, w)| {
            !w.starts_with('-')
                && !matches!(
                    words[2..].get(i.wrapping_sub(1)).map(String::as_str),
                    Some("-n" | "--namespace" | "--set" | "-f" | "--values")
                )
        })
        .map(|(_, w)| w)
        .collect();
    assert_eq!(positional.len(), 2, "release and chart: {words:?}");
    let mut cmd = Command::new(support::tool_bin("HELM_BIN", "helm"));
    cmd.args(["template", positional[0]])
        .arg(support::repo_path(positional[1]))
        .args(["--namespace", &namespace, "--include-crds"]);
    for w in words.windows(2).filter(|w| w[0] == "--set") {
        cmd.args(["--set", &w[1]]);
    }
    (run(&mut cmd), namespace)
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

fn kubernetes_validate(dir: &std::path::Path, files: &[(&str, &str)]) {
    let mut cmd = Command::new(support::tool_bin(
        "KUBERNETES_VALIDATE_BIN",
        "kubernetes-validate",
    ));
    cmd.args(["--strict", "--quiet"]);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        cmd.arg(path);
    }
    run(&mut cmd);
}

fn of_kind<'d>(docs: &'d [Value], kind: &str, name: &str) -> &'d Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The value of a printer column's `jsonPath` (`.a.b` and `[?(@.k=="v")]` filters, as the
/// CRDs use them) in `object`, as kubectl prints it (empty when absent).
fn json_path(object: &Value, path: &str) -> String {
    let segment =
        regex::Regex::new(r#"^(?:\.([A-Za-z_][\w-]*)|\[\?\(@\.(\w+)=="([^"]*)"\)\])"#).unwrap();
    let mut at = object.clone();
    let mut rest = path;
    while !rest.is_empty() {
        let c = segment
            .captures(rest)
            .unwrap_or_else(|| panic!("jsonPath {path}: cannot read {rest}"));
        at = if let Some(key) = c.get(1) {
            at[key.as_str()].clone()
        } else {
            at.as_array()
                .into_iter()
                .flatten()
                .find(|e| e[&c[2]] == c[3])
                .cloned()
                .unwrap_or(Value::Null)
        };
        rest = &rest[c[0].len()..];
    }
    match at {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The plural and the default printer columns of `kind` in deploy/crds.yaml (the CRDs
/// the chart installs; a test elsewhere holds them equal).
fn printer_columns(crds: &[Value], kind: &str) -> (String, String, Vec<(String, String)>) {
    let crd = crds
        .iter()
        .find(|c| c["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD of {kind}"));
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_uppercase(),
                c["jsonPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (
        crd["spec"]["names"]["plural"].as_str().unwrap().to_string(),
        format!(
            "{}.{}",
            crd["spec"]["names"]["singular"].as_str().unwrap(),
            crd["spec"]["group"].as_str().unwrap()
        ),
        columns,
    )
}

/// An AdmissionReview as the API server sends it when `kubectl apply` changes `old` to
/// `object`.
fn update_review(object: &Value, old: &Value) -> Value {
    let kind = object["kind"].as_str().unwrap();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "walkthrough-edit",
            "kind": {"group": "portcullis.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "portcullis.dev", "version": "v1alpha1",
                         "resource": "accesspolicies"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "UPDATE",
            "userInfo": {"username": "newcomer"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_runs_as_written() {
    let page = Page::read();
    let dir = tempfile::tempdir().unwrap();

    // 1. helm install, and the Deployment whose rollout the page waits for.
    let (rendered, namespace) = render_install(&page);
    let chart = yaml_documents(&rendered);
    let rollout = page.command("install", "kubectl ");
    assert_eq!(
        flag(&rollout, &["-n", "--namespace"]),
        Some(namespace.as_str())
    );
    let deployment_name = rollout
        .iter()
        .find_map(|w| w.strip_prefix("deployment/"))
        .expect("kubectl rollout status deployment/NAME");
    let deployment = of_kind(&chart, "Deployment", deployment_name);
    let chart_service = chart
        .iter()
        .find(|d| d["kind"] == "Service" && d["spec"]["ports"].to_string().contains("grpc"))
        .expect("the chart's Service");

    // 2. The application and Envoy.
    let app = page.documents("app");
    kubernetes_validate(
        dir.path(),
        &[("chart.yaml", &rendered), ("app.yaml", page.block("app"))],
    );
    let commands = page.commands("app-commands");
    let configmap_of = |name: &str| -> String {
        let line = commands
            .iter()
            .find(|l| l.contains(&format!("create configmap {name} ")))
            .unwrap_or_else(|| panic!("no configmap {name} in {commands:?}"));
        assert!(line.contains(&format!("-n {namespace}")), "{line}");
        let from = line.split("--from-file=").nth(1).unwrap();
        let from = from.split_whitespace().next().unwrap();
        from.rsplit('=').next().unwrap().to_string()
    };
    assert_eq!(configmap_of("envoy"), envoy::SHIPPED_GRPC);
    let echo_script = configmap_of("app");
    assert!(support::repo_path(&echo_script).is_file(), "{echo_script}");
    let app_service = of_kind(&app, "Service", "app");
    let app_port = app_service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let shipped: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(
            &std::fs::read_to_string(support::repo_path(envoy::SHIPPED_GRPC)).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let endpoint_of = |cluster: &str| -> (String, u64) {
        let c = shipped["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == cluster)
            .unwrap();
        let socket = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            ["address"]["socket_address"];
        (
            socket["address"].as_str().unwrap().to_string(),
            socket["port_value"].as_u64().unwrap(),
        )
    };
    // Envoy runs in the release's namespace: `app` is this manifest's Service.
    assert_eq!(endpoint_of("app"), ("app".to_string(), app_port));
    let grpc_port = chart_service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "grpc")
        .unwrap()["port"]
        .as_u64()
        .unwrap();
    assert_eq!(
        endpoint_of("portcullis"),
        (
            format!(
                "{}.{namespace}.svc.cluster.local",
                chart_service["metadata"]["name"].as_str().unwrap()
            ),
            grpc_port
        )
    );
    let envoy_deployment = of_kind(&app, "Deployment", "envoy");
    let image = envoy_deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    let tested = support::envoy::pinned_version();
    assert_eq!(
        image,
        format!("envoyproxy/envoy:v{tested}"),
        "the Envoy the tests run"
    );

    // 3. portcullis as the chart runs it, against the fake API server.
    let fake = FakeApiServer::start().await;
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let ca = support::tls::TestCa::new("walkthrough CA");
    let (cert, key) = ca.serving("portcullis").write(dir.path());
    let portcullis = Portcullis::builder()
        .command_line(&args)
        .env("KUBECONFIG", fake.kubeconfig(dir.path()))
        .env("POD_NAMESPACE", &namespace)
        .env("POD_NAME", "portcullis-0")
        .webhook(cert, key)
        .start()
        .await;

    // The Secret as the page's commands make it: a random value, a key, the label.
    let secret_value = format!("walkthrough-{}", uuid_like());
    let create = page.command("secret", "kubectl -n portcullis create secret generic ");
    let secret_name = &create[6];
    let (secret_key, _) = flag(&create, &["--from-literal"])
        .expect("--from-literal=KEY=...")
        .split_once('=')
        .unwrap();
    let label = page.command("secret", "kubectl -n portcullis label secret ");
    assert_eq!(&label[5], secret_name);
    let (label_key, label_value) = label[6].split_once('=').unwrap();
    use base64::Engine;
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": namespace,
                     "labels": {label_key: label_value}},
        "data": {secret_key: base64::engine::general_purpose::STANDARD.encode(&secret_value)},
    }));
    let introspector = page.documents("introspector").remove(0);
    let policy = page.documents("policy").remove(0);
    for object in [&introspector, &policy] {
        assert_eq!(object["apiVersion"], API);
        assert_eq!(object["metadata"]["namespace"], namespace.as_str());
        fake.apply(object.clone());
    }

    // 4. kubectl get portcullis: every row as the CRD's printer columns show the objects.
    let crds =
        yaml_documents(&std::fs::read_to_string(support::repo_path("deploy/crds.yaml")).unwrap());
    let get = page.block("get");
    let mut rows = 0;
    for table in get.split("\n\n") {
        let mut lines = table.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        for line in lines {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let (kind_and_group, name) = cells[0].split_once('/').unwrap();
            let kind = [
                "TokenIntrospector",
                "AccessPolicy",
                "IdentityProvider",
                "User",
            ]
            .into_iter()
            .find(|k| kind_and_group.starts_with(&k.to_lowercase()))
            .unwrap_or_else(|| panic!("{line}: which kind?"));
            let (plural, qualified, columns) = printer_columns(&crds, kind);
            assert_eq!(kind_and_group, qualified);
            let mut want = vec!["NAME".to_string()];
            want.extend(columns.iter().map(|(n, _)| n.clone()));
            assert_eq!(header, want, "{PAGE}: the columns of {kind}");
            let object = support::eventually(&format!("{plural}/{name} Ready"), || async {
                let o = fake.get(API, &plural, &namespace, name)?;
                (o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && json_path(&o, r#".status.conditions[?(@.type=="Ready")].status"#) == "True")
                    .then_some(o)
            })
            .await;
            for ((column, path), cell) in columns.iter().zip(&cells[1..]) {
                if column != "AGE" {
                    assert_eq!(json_path(&object, path), *cell, "{kind}/{name} {column}");
                }
            }
            rows += 1;
        }
    }
    assert_eq!(rows, 2, "the introspector and the policy");

    // 5. The tokens, and the curls through Envoy in front of the echo application.
    let app_container =
        &of_kind(&app, "Deployment", "app")["spec"]["template"]["spec"]["containers"][0];
    let mut upstream_cmd: Vec<String> = app_container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mount = app_container["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap();
    let upstream_port = support::free_port();
    for word in upstream_cmd.iter_mut() {
        if *word == format!("{mount}/echo-upstream.py") {
            *word = support::repo_path(&echo_script).display().to_string();
        } else if *word == "0.0.0.0" {
            *word = "127.0.0.1".into();
        } else if *word == app_port.to_string() {
            *word = upstream_port.to_string();
        }
    }
    let mut upstream = Supervised::spawn(
        "echo-upstream",
        Command::new(&upstream_cmd[0]).args(&upstream_cmd[1..]),
    );
    upstream
        .wait_http(
            &format!("http://127.0.0.1:{upstream_port}/"),
            std::time::Duration::from_secs(30),
            |status, _| status == 200,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", upstream.log()));
    let envoy = Envoy::shipped(
        envoy::SHIPPED_GRPC,
        portcullis.grpc_addr().port(),
        upstream_port,
    )
    .await;

    let tokens = page.block("tokens");
    let script = tokens
        .split("<<'EOF'\n")
        .nth(1)
        .and_then(|s| s.split("\nEOF\n").next())
        .expect("the minting snippet");
    let mut minted = BTreeMap::new();
    for line in tokens.lines() {
        // READER=$(mint reader)
        if let Some((var, rest)) = line.split_once("=$(mint ") {
            let role = rest.trim_end_matches(')');
            let token = run(Command::new("python3")
                .args(["-c", script, role])
                .env("SECRET", &secret_value));
            minted.insert(format!("${var}"), token.trim().to_string());
        }
    }
    assert_eq!(minted.len(), 2, "{tokens}");

    let mut curls = 0;
    for line in page.commands("curl") {
        let Some(rest) = line.strip_prefix("curl -i ") else {
            continue;
        };
        let (command, comment) = rest.split_once('#').expect("# STATUS");
        let want: u16 = comment.trim().parse().unwrap();
        let url = command.split_whitespace().next().unwrap();
        let path = &url[url.find('/').unwrap()..];
        let mut headers = Vec::new();
        if let Some(header) = command.split('"').nth(1) {
            let (name, value) = header.split_once(": ").unwrap();
            let value = minted
                .iter()
                .fold(value.to_string(), |v, (var, token)| v.replace(var, token));
            headers.push((name.to_string(), value));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answer = support::ext_authz::get(&envoy.url(path), &headers).await;
        assert_eq!(
            answer.status.as_u16(),
            want,
            "{line}\n{answer:?}\nportcullis: {}",
            portcullis.log_report()
        );
        if want == 200 {
            // What the page shows the application receiving.
            let echoed: Value = serde_json::from_str(&answer.body).unwrap();
            let doc = std::fs::read_to_string(support::repo_path(PAGE)).unwrap();
            for header in [
                "x-portcullis-subject",
                "x-portcullis-issuer",
                "x-portcullis-policy",
            ] {
                let value = echoed["headers"][header]
                    .as_str()
                    .unwrap_or_else(|| panic!("the upstream did not get {header}: {echoed}"));
                assert!(
                    doc.contains(&format!("\"{header}\": \"{value}\"")),
                    "{PAGE} shows another {header} than {value:?}"
                );
            }
        }
        curls += 1;
    }
    assert_eq!(curls, 3, "a 200, a 403 and a 401");

    // 6. The broken edit: the webhook refuses it with the message the page prints.
    let broken = page.documents("broken").remove(0);
    assert_eq!(
        broken["metadata"], policy["metadata"],
        "an edit of the policy"
    );
    let stored = fake
        .get(
            API,
            "accesspolicies",
            &namespace,
            policy["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
    let answer: Value = support::tls::https_client(&ca.pem())
        .post(portcullis.webhook_url("/validate"))
        .json(&update_review(&broken, &stored))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["uid"], "walkthrough-edit");
    let message = response["status"]["message"].as_str().unwrap();
    // kubectl prints the message as it is; compared with its line breaks as spaces.
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let refused = words(page.block("refused"));
    assert!(
        refused.contains(&words(&format!(
            "admission webhook \"validate.portcullis.dev\" denied the request: {message}"
        ))),
        "{PAGE} must show the webhook's message:\n{message}\nit shows:\n{refused}"
    );
    assert!(
        chart
            .iter()
            .any(|d| d["kind"] == "ValidatingWebhookConfiguration"
                && d["webhooks"][0]["name"] == "validate.portcullis.dev"),
        "the chart registers the webhook the page names"
    );
}

/// A value nobody has read: what `head -c 32 /dev/urandom | base64` gives the reader.
fn uuid_like() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
