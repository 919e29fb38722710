//! Real Envoy, configured from a YAML template under tests/fixtures/envoy/.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::NamedTempFile;

use super::process::{Supervised, START_ATTEMPTS};

/// The template that puts gRPC ext_authz (cluster `portcullis`) in front of `upstream`.
pub const GRPC_EXT_AUTHZ_TEMPLATE: &str = "tests/fixtures/envoy/grpc-ext-authz.yaml";
/// The same Envoy with the HTTP flavour of ext_authz (`http_service`, path prefix `/ext-authz`).
pub const HTTP_EXT_AUTHZ_TEMPLATE: &str = "tests/fixtures/envoy/http-ext-authz.yaml";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Envoy binary: `$ENVOY_BIN`, else `<repo>/.tools/bin/envoy`. Panics when neither
/// exists: end-to-end tests never skip silently.
pub fn envoy_bin() -> PathBuf {
    super::tool_bin("ENVOY_BIN", "envoy")
}

/// Replaces every `{{NAME}}` in `template` with its value; panics on a placeholder left
/// without a value, so a template and its caller cannot drift apart silently.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").map_or(out.len(), |e| start + e + 2);
        panic!(
            "unrendered placeholder {} in Envoy template",
            &out[start..end]
        );
    }
    out
}

/// Renders a template file from the repository into a temp file.
pub fn render_to_file(template: impl AsRef<Path>, vars: &[(&str, String)]) -> NamedTempFile {
    let path = super::repo_path(template.as_ref());
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read Envoy template {}: {e}", path.display()));
    let rendered = render(&text, vars);
    let file = tempfile::Builder::new()
        .prefix("envoy-")
        .suffix(".yaml")
        .tempfile()
        .expect("create Envoy config file");
    std::fs::write(file.path(), rendered).expect("write Envoy config");
    file
}

/// The Envoy version the tests run: `ENVOY_VERSION` of `scripts/install-test-deps.sh`.
pub fn pinned_version() -> String {
    std::fs::read_to_string(super::repo_path("scripts/install-test-deps.sh"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION=\"${ENVOY_VERSION:-"))
        .map(|v| v.trim_end_matches("}\"").to_string())
        .expect("ENVOY_VERSION in scripts/install-test-deps.sh")
}

/// `envoy --mode validate -c FILE`; panics with Envoy's output unless it says OK.
pub fn validate(config: &Path) {
    let out = Command::new(envoy_bin())
        .args([
            "--mode",
            "validate",
            "-l",
            "warning",
            "--disable-hot-restart",
            "-c",
        ])
        .arg(config)
        .output()
        .expect("run envoy --mode validate");
    assert!(
        out.status.success(),
        "envoy --mode validate -c {} failed ({}):\n{}\n{}",
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The placeholders of [`GRPC_EXT_AUTHZ_TEMPLATE`].
pub fn grpc_ext_authz_vars(
    listener_port: u16,
    admin_port: u16,
    portcullis_port: u16,
    upstream_port: u16,
) -> Vec<(&'static str, String)> {
    vec![
        ("LISTENER_PORT", listener_port.to_string()),
        ("ADMIN_PORT", admin_port.to_string()),
        ("PORTCULLIS_PORT", portcullis_port.to_string()),
        ("UPSTREAM_PORT", upstream_port.to_string()),
    ]
}

/// The Envoy configurations that `deploy/examples/envoy/` ships, for tests of what users run.
pub const SHIPPED_GRPC: &str = "deploy/examples/envoy/envoy-grpc.yaml";
pub const SHIPPED_HTTP: &str = "deploy/examples/envoy/envoy-http.yaml";

/// A shipped configuration as it is, but for where things listen: the listener and an
/// admin on loopback, cluster `portcullis` at `portcullis_port`, cluster `app` at
/// `upstream_port`, both STATIC. Everything a user would copy stays as shipped.
pub fn render_shipped(
    shipped: &str,
    listener_port: u16,
    admin_port: u16,
    portcullis_port: u16,
    upstream_port: u16,
) -> NamedTempFile {
    use serde_yaml::Value;
    let path = super::repo_path(shipped);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut config: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parse {shipped}: {e}"));
    let socket = |port: u16| -> Value {
        serde_yaml::from_str(&format!(
            "{{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}"
        ))
        .unwrap()
    };
    let mut admin = serde_yaml::Mapping::new();
    admin.insert("address".into(), socket(admin_port));
    config["admin"] = Value::Mapping(admin);
    let resources = &mut config["static_resources"];
    let listeners = resources["listeners"]
        .as_sequence_mut()
        .unwrap_or_else(|| panic!("{shipped}: no listeners"));
    assert_eq!(listeners.len(), 1, "{shipped}: one listener expected");
    listeners[0]["address"] = socket(listener_port);
    for cluster in resources["clusters"]
        .as_sequence_mut()
        .unwrap_or_else(|| panic!("{shipped}: no clusters"))
    {
        let port = match cluster["name"].as_str() {
            Some("portcullis") => portcullis_port,
            Some("app") => upstream_port,
            other => panic!("{shipped}: unexpected cluster {other:?}"),
        };
        cluster["type"] = "STATIC".into();
        let endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("{shipped}: cluster without endpoints"));
        assert_eq!(
            endpoints.len(),
            1,
            "{shipped}: one endpoint per cluster expected"
        );
        endpoints[0]["endpoint"]["address"] = socket(port);
    }
    let file = tempfile::Builder::new()
        .prefix("envoy-shipped-")
        .suffix(".yaml")
        .tempfile()
        .expect("create Envoy config file");
    std::fs::write(file.path(), serde_yaml::to_string(&config).unwrap())
        .expect("write Envoy config");
    file
}

pub struct Envoy {
    // Declared first so it is dropped (killed) before its config file is deleted.
    process: Supervised,
    config: NamedTempFile,
    listener: SocketAddr,
    admin: SocketAddr,
}

impl Envoy {
    /// Envoy with gRPC ext_authz asking `portcullis_grpc_port`, routing to `upstream_port`.
    pub async fn grpc_ext_authz(portcullis_grpc_port: u16, upstream_port: u16) -> Envoy {
        Self::start(GRPC_EXT_AUTHZ_TEMPLATE, |listener, admin| {
            grpc_ext_authz_vars(listener, admin, portcullis_grpc_port, upstream_port)
        })
        .await
    }

    /// Envoy with HTTP ext_authz asking portcullis's `--http-addr` port.
    pub async fn http_ext_authz(portcullis_http_port: u16, upstream_port: u16) -> Envoy {
        Self::start(HTTP_EXT_AUTHZ_TEMPLATE, |listener, admin| {
            grpc_ext_authz_vars(listener, admin, portcullis_http_port, upstream_port)
        })
        .await
    }

    /// Starts Envoy from `template`, rendered with the variables `vars(listener_port,
    /// admin_port)` returns, and waits until admin `/ready` answers `LIVE`. Retries
    /// with new ports when one was taken between choosing and binding it.
    pub async fn start(
        template: impl AsRef<Path>,
        vars: impl Fn(u16, u16) -> Vec<(&'static str, String)>,
    ) -> Envoy {
        Self::start_with(|listener, admin| {
            render_to_file(template.as_ref(), &vars(listener, admin))
        })
        .await
    }

    /// Envoy running a configuration that `deploy/examples/envoy/` ships ([`render_shipped`]).
    pub async fn shipped(shipped: &str, portcullis_port: u16, upstream_port: u16) -> Envoy {
        Self::start_with(|listener, admin| {
            render_shipped(shipped, listener, admin, portcullis_port, upstream_port)
        })
        .await
    }

    /// Starts Envoy on the configuration `config(listener_port, admin_port)` writes.
    async fn start_with(config: impl Fn(u16, u16) -> NamedTempFile) -> Envoy {
        let bin = envoy_bin();
        for attempt in 1..=START_ATTEMPTS {
            let listener_port = super::free_port();
            let admin_port = super::free_port();
            let config = config(listener_port, admin_port);
            let mut cmd = Command::new(&bin);
            cmd.arg("-c")
                .arg(config.path())
                .args(["--concurrency", "1", "-l", "warning"])
                // Without hot restart Envoy uses no shared memory, so parallel instances
                // never clash and a killed one leaves nothing behind in /dev/shm.
                .args(["--use-dynamic-base-id", "--disable-hot-restart"]);
            let mut envoy = Envoy {
                process: Supervised::spawn("envoy", &mut cmd),
                config,
                listener: SocketAddr::from(([127, 0, 0, 1], listener_port)),
                admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            };
            let ready = envoy.admin_url("/ready");
            match envoy
                .process
                .wait_http(&ready, READY_TIMEOUT, |status, body| {
                    status == 200 && body.trim() == "LIVE"
                })
                .await
            {
                Ok(()) => return envoy,
                Err(why) => envoy.process.retry_or_panic(attempt, &why),
            }
        }
        unreachable!()
    }

    /// The HTTP listener.
    pub fn addr(&self) -> SocketAddr {
        self.listener
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listener, path)
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The rendered configuration Envoy runs with.
    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    /// Everything Envoy logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }
}
