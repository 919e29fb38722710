//! A child process whose stdout and stderr go to a temp file, killed on drop.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use tempfile::NamedTempFile;

/// How much of a log to print when a test fails.
const LOG_TAIL_BYTES: usize = 24 * 1024;

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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
