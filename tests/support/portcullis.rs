//! The portcullis binary under test, as `portcullis serve`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::Supervised;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

/// The binary Cargo built for these tests.
pub fn portcullis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// Options for `portcullis serve`.
#[derive(Debug, Default, Clone)]
pub struct PortcullisBuilder {
    configs: Vec<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
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

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts `portcullis serve --config ... --grpc-addr 127.0.0.1:P --http-addr
    /// 127.0.0.1:Q [args]` and waits until `GET /readyz` answers 200. Panics with its
    /// output after 20 s, or at once when it exits.
    pub async fn start(self) -> Portcullis {
        for attempt in 1..=START_ATTEMPTS {
            let grpc = super::free_addr();
            let http = super::free_addr();
            let mut cmd = Command::new(portcullis_bin());
            cmd.arg("serve");
            for config in &self.configs {
                cmd.arg("--config").arg(config);
            }
            cmd.arg("--grpc-addr")
                .arg(grpc.to_string())
                .arg("--http-addr")
                .arg(http.to_string())
                .args(&self.args)
                .current_dir(super::repo_root());
            // Flags also read PORTCULLIS_* variables: keep the caller's out of the test.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("PORTCULLIS_") {
                    cmd.env_remove(key);
                }
            }
            // Plain text in the captured log.
            cmd.env("NO_COLOR", "1");
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "info");
            }
            cmd.envs(super::TEST_DEADLINES);
            cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
            let mut portcullis = Portcullis {
                process: Supervised::spawn("portcullis", &mut cmd),
                grpc,
                http,
            };
            match portcullis.wait_ready().await {
                Ok(()) => return portcullis,
                Err(why) => {
                    let log = portcullis.process.log().to_ascii_lowercase();
                    let port_clash =
                        log.contains("address already in use") || log.contains("address in use");
                    if port_clash && attempt < START_ATTEMPTS {
                        continue;
                    }
                    let report = portcullis.process.log_report();
                    drop(portcullis);
                    panic!("portcullis did not become ready: {why}\n{report}");
                }
            }
        }
        unreachable!()
    }
}

pub struct Portcullis {
    process: Supervised,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Portcullis {
    pub fn builder() -> PortcullisBuilder {
        PortcullisBuilder::default()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = super::http_client();
        let url = format!("http://{}/readyz", self.http);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.exited() {
                return Err(format!("portcullis exited early with {status}"));
            }
            let last = match client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(resp) if resp.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(resp) => format!("HTTP {}", resp.status()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "GET {url} not 200 after {READY_TIMEOUT:?} (last: {last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `--grpc-addr` (ext_authz v3 and grpc.health.v1).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `--http-addr` (/healthz, /readyz, /metrics, HTTP ext_authz).
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `http://<http-addr><path>`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
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
}
