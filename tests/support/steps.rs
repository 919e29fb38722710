//! Runs the sub-steps of one test against shared fixtures, and reports every failing
//! step at the end instead of stopping at the first.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;

#[derive(Default)]
pub struct Steps {
    passed: Vec<String>,
    failed: Vec<(String, String)>,
}

impl Steps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one step; a panic inside it (a failed assertion) is recorded, not raised.
    pub async fn run<F: Future<Output = ()>>(&mut self, name: &str, step: F) {
        match AssertUnwindSafe(step).catch_unwind().await {
            Ok(()) => {
                eprintln!("step ok:     {name}");
                self.passed.push(name.to_string());
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "<non-string panic>".to_string());
                eprintln!("step FAILED: {name}: {msg}");
                self.failed.push((name.to_string(), msg));
            }
        }
    }

    pub fn any_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Panics listing every failed step, if any. Call it while the fixtures are still
    /// alive, so their logs are printed as they drop.
    pub fn finish(self) {
        if self.failed.is_empty() {
            eprintln!("all {} steps passed", self.passed.len());
            return;
        }
        let mut report = format!(
            "{} of {} steps failed:\n",
            self.failed.len(),
            self.failed.len() + self.passed.len()
        );
        for (name, msg) in &self.failed {
            report.push_str(&format!("\n=== {name}\n{msg}\n"));
        }
        panic!("{report}");
    }
}
