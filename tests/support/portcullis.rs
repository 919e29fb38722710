//! The portcullis binary under test: `portcullis serve` as a supervised process, and the
//! one-shot commands (`validate`, `explain`, ...).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::metrics::Scrape;
use super::process::{Supervised, START_ATTEMPTS};

/// Far beyond a debug build's start-up on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The ext_authz service's name in grpc.health.v1.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// The binary Cargo built for these tests.
pub fn portcullis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// What a one-shot command said.
#[derive(Debug)]
pub struct Output {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `portcullis <args>` to completion from the repository root, with no
/// `PORTCULLIS_*` variable of the caller's environment.
pub fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(portcullis_bin());
    cmd.args(args).current_dir(super::repo_root());
    clear_portcullis_env(&mut cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run portcullis {cmd:?}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `portcullis <args>`, which must fail (it must not start serving), saying
/// `mention` on stderr; returns what it said.
pub fn run_refused(args: &[&str], mention: &str) -> Output {
    let out = run(args);
    assert_ne!(out.code, 0, "portcullis {args:?} succeeded: {out:#?}");
    assert!(
        out.stderr.contains(mention),
        "portcullis {args:?} does not mention {mention}: {}",
        out.stderr
    );
    out
}

/// Flags also read PORTCULLIS_* variables: keep the caller's out of a test.
fn clear_portcullis_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PORTCULLIS_") {
            cmd.env_remove(key);
        }
    }
}

/// Options for `portcullis serve`.
#[derive(Debug, Default, Clone)]
pub struct PortcullisBuilder {
    configs: Vec<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// A whole `serve ...` command line given by a deployment manifest.
    command_line: Option<Vec<String>>,
    /// `--tls-cert-file` and `--tls-key-file` of the admission webhook.
    webhook: Option<(PathBuf, PathBuf)>,
}

impl PortcullisBuilder {
    /// Adds a `--config PATH` (file or directory; relative paths are taken from the
    /// repository root).
    pub fn config(mut self, path: impl AsRef<Path>) -> Self {
        self.configs.push(super::repo_path(path));
        self
    }

    /// Adds an extra command-line argument after the standard ones.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// `--create-users --users-dir DIR`.
    pub fn create_users(self, users_dir: impl AsRef<Path>) -> Self {
        self.arg("--create-users")
            .arg("--users-dir")
            .arg(users_dir.as_ref())
    }

    /// The admission webhook on a free loopback port (`--webhook-addr`), with this
    /// certificate and key (`--tls-cert-file`, `--tls-key-file`).
    pub fn webhook(mut self, cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Self {
        self.webhook = Some((
            cert_file.as_ref().to_path_buf(),
            key_file.as_ref().to_path_buf(),
        ));
        self
    }

    /// Runs exactly this command line (a container's `args`, starting with `serve`),
    /// but for its `--grpc-addr` and `--http-addr`, which become free loopback ports, and
    /// its webhook flags, which [`PortcullisBuilder::webhook`] gives.
    pub fn command_line(mut self, args: &[String]) -> Self {
        assert_eq!(
            args.first().map(String::as_str),
            Some("serve"),
            "not a serve command line: {args:?}"
        );
        let mut kept = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            const REPLACED: [&str; 5] = [
                "--grpc-addr",
                "--http-addr",
                "--webhook-addr",
                "--tls-cert-file",
                "--tls-key-file",
            ];
            match arg.split_once('=') {
                Some((flag, _)) if REPLACED.contains(&flag) => {}
                _ if REPLACED.contains(&arg.as_str()) => {
                    args.next();
                }
                _ => kept.push(arg.clone()),
            }
        }
        self.command_line = Some(kept);
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts `portcullis serve --config ... --grpc-addr 127.0.0.1:P --http-addr
    /// 127.0.0.1:Q [args]` and waits until `GET /readyz` answers 200. Panics with its
    /// output after 30 s, or at once when it exits.
    pub async fn start(self) -> Portcullis {
        self.launch("/readyz").await
    }

    /// Like [`PortcullisBuilder::start`], but waits only until the HTTP port answers
    /// (`GET /healthz` 200), ready or not: for tests of what comes before readiness.
    pub async fn spawn(self) -> Portcullis {
        self.launch("/healthz").await
    }

    /// Starts serve on free ports (new ones when a port was taken meanwhile) and waits
    /// until `GET <probe>` answers 200.
    async fn launch(self, probe: &str) -> Portcullis {
        for attempt in 1..=START_ATTEMPTS {
            let grpc = super::free_addr();
            let http = super::free_addr();
            let webhook = self.webhook.as_ref().map(|_| super::free_addr());
            let mut cmd = Command::new(portcullis_bin());
            match &self.command_line {
                Some(args) => {
                    cmd.args(args);
                }
                None => {
                    cmd.arg("serve");
                }
            }
            for config in &self.configs {
                cmd.arg("--config").arg(config);
            }
            cmd.arg("--grpc-addr")
                .arg(grpc.to_string())
                .arg("--http-addr")
                .arg(http.to_string())
                .args(&self.args)
                .current_dir(super::repo_root());
            if let (Some(addr), Some((cert, key))) = (webhook, &self.webhook) {
                cmd.arg("--webhook-addr")
                    .arg(addr.to_string())
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-key-file")
                    .arg(key);
            }
            clear_portcullis_env(&mut cmd);
            // Plain text in the captured log.
            cmd.env("NO_COLOR", "1");
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            // Generous deadlines for every test instance; a test's own flag or
            // variable wins.
            cmd.envs(super::TEST_DEADLINES);
            cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
            let mut portcullis = Portcullis {
                process: Supervised::spawn("portcullis", &mut cmd),
                grpc,
                http,
                webhook,
            };
            let url = portcullis.http_url(probe);
            match portcullis
                .process
                .wait_http(&url, READY_TIMEOUT, |status, _| status == 200)
                .await
            {
                Ok(()) => return portcullis,
                Err(why) => portcullis.process.retry_or_panic(attempt, &why),
            }
        }
        unreachable!()
    }
}

pub struct Portcullis {
    process: Supervised,
    grpc: SocketAddr,
    http: SocketAddr,
    webhook: Option<SocketAddr>,
}

impl Portcullis {
    pub fn builder() -> PortcullisBuilder {
        PortcullisBuilder::default()
    }

    /// `--grpc-addr` (ext_authz v3 and grpc.health.v1).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `--http-addr` (/healthz, /readyz, /metrics, HTTP ext_authz).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `https://<webhook-addr><path>` (see [`PortcullisBuilder::webhook`]).
    pub fn webhook_url(&self, path: &str) -> String {
        let addr = self.webhook.expect("started with a webhook");
        format!("https://{addr}{path}")
    }

    /// `http://<http-addr><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// The status `GET /readyz` answers.
    pub async fn readyz(&self) -> u16 {
        super::http_client()
            .get(self.http_url("/readyz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /readyz: {e}"))
            .status()
            .as_u16()
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Scrape {
        let text = super::http_client()
            .get(self.http_url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics body: {e}"));
        Scrape::parse(text)
    }

    /// An ext_authz v3 gRPC client on `--grpc-addr`.
    pub async fn ext_authz_client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap_or_else(|e| panic!("connect ext_authz at {}: {e}", self.grpc))
    }

    /// A grpc.health.v1 client on `--grpc-addr`.
    pub async fn health_client(&self) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))
            .expect("a gRPC URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect grpc.health.v1 at {}: {e}", self.grpc));
        HealthClient::new(channel)
    }

    /// What grpc.health.v1 `Check` says about `service` (`""`: the whole server).
    pub async fn health(&self, service: &str) -> ServingStatus {
        let answer = self
            .health_client()
            .await
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|e| panic!("grpc.health.v1 Check {service:?}: {e}"))
            .into_inner();
        ServingStatus::try_from(answer.status)
            .unwrap_or_else(|_| panic!("unknown serving status {}", answer.status))
    }

    /// Everything portcullis logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_report(&self) -> String {
        self.process.log_report()
    }

    /// Process id, to send it signals.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.exited().is_none()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.process.terminate()
    }

    /// Waits for the process to exit by itself; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.process.wait_exit(timeout).await
    }

    /// Kills the process and returns everything it logged.
    pub fn stop(mut self) -> String {
        self.process.kill();
        self.process.log()
    }
}
