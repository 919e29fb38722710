//! A child process whose stdout and stderr go to a temp file, killed on drop.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::NamedTempFile;

/// How much of a log to print when a test fails.
const LOG_TAIL_BYTES: usize = 24 * 1024;

/// How often a process is started on new ports when the ones chosen were taken between
/// choosing and binding them.
pub const START_ATTEMPTS: usize = 3;

pub struct Supervised {
    name: String,
    child: Child,
    log: NamedTempFile,
}

impl Supervised {
    /// Spawns `cmd` with stdin closed and stdout+stderr captured to a temp file.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let log = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .suffix(".log")
            .tempfile()
            .expect("create log file");
        let stdout = log.reopen().expect("reopen log for stdout");
        let stderr = log.reopen().expect("reopen log for stderr");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Supervised {
            name: name.to_string(),
            child,
            log,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        super::read_log(self.log.path())
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Polls `GET url` every 50 ms until `ready(status, body)` holds. Fails when the
    /// process exits first, or when `timeout` passes.
    pub async fn wait_http(
        &mut self,
        url: &str,
        timeout: Duration,
        ready: impl Fn(u16, &str) -> bool,
    ) -> Result<(), String> {
        let client = super::http_client();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("{} exited early with {status}", self.name));
            }
            let last = match client.get(url).timeout(Duration::from_secs(1)).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    if ready(status, &body) {
                        return Ok(());
                    }
                    format!("HTTP {status} {}", body.trim())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "GET {url} not ready after {timeout:?} (last: {last})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a start that failed with `why`: returns (the process killed) when a port
    /// was taken and attempts remain, so that the caller tries new ports; else panics
    /// with `why` and the process's output.
    pub fn retry_or_panic(self, attempt: usize, why: &str) {
        let log = self.log().to_ascii_lowercase();
        let port_clash = log.contains("address already in use") || log.contains("address in use");
        if port_clash && attempt < START_ATTEMPTS {
            return;
        }
        let report = self.log_report();
        let name = self.name.clone();
        drop(self);
        panic!("{name} did not become ready: {why}\n{report}");
    }

    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (through the shell's own `kill`: no procps needed on the machine).
    pub fn terminate(&self) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.pid())])
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit by itself; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        super::eventually_within(timeout, &what, || std::future::ready(self.exited())).await
    }

    /// The tail of the log, framed for a panic message or stderr.
    pub fn log_report(&self) -> String {
        let log = self.log();
        format!(
            "----- {} (pid {}) output, last {} bytes of {} -----\n{}\n----- end of {} output -----",
            self.name,
            self.child.id(),
            LOG_TAIL_BYTES.min(log.len()),
            log.len(),
            super::tail(&log, LOG_TAIL_BYTES),
            self.name
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_report());
        }
        self.kill();
    }
}
