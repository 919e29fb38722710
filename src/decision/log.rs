//! The decision log: one structured line per decision, never the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Decision, HttpRequest};

/// Denials are always logged, and with each one line per dry-run policy that would have
/// allowed it; allows one in `allow_sample` (1 = every one, 0 = none).
/// Turn the whole log down with `RUST_LOG=portcullis::decision=warn`.
pub struct DecisionLog {
    allow_sample: u64,
    allows: AtomicU64,
}

impl DecisionLog {
    pub fn new(allow_sample: u64) -> Self {
        DecisionLog {
            allow_sample,
            allows: AtomicU64::new(0),
        }
    }

    /// `shadow`: `serve --shadow` answers this denial allow; the line says so, and
    /// carries the real outcome and reason.
    pub fn record(&self, d: &Decision, request: &HttpRequest, latency: Duration, shadow: bool) {
        if d.allowed() {
            if self.allow_sample == 0 {
                return;
            }
            let n = self.allows.fetch_add(1, Ordering::Relaxed);
            if !n.is_multiple_of(self.allow_sample) {
                return;
            }
        }
        let (path, _) = request.split_path();
        tracing::info!(
            target: "portcullis::decision",
            outcome = if d.allowed() { "allow" } else { "deny" },
            status = d.http_status(),
            reason = d.reason,
            // The whole story of a denial (which host, which limit): for the operator only,
            // the client's body carries the reason code (`Decision::body`).
            detail = (!d.allowed()).then_some(&*d.message),
            policy = d.policy.as_deref(),
            user = d.user.as_deref(),
            subject = d.subject.as_deref(),
            issuer = d.issuer.as_deref(),
            namespace = request.namespace.as_deref(),
            method = %request.method,
            path = %path,
            latency_us = latency.as_micros() as u64,
            shadow = shadow.then_some(true),
            "decision"
        );
        if !d.allowed() {
            dry_run_would_allow(d, &request.method, path, shadow);
        }
    }
}

/// One line per dry-run policy that would have allowed a denied request.
fn dry_run_would_allow(d: &Decision, method: &str, path: &str, shadow: bool) {
    for policy in &d.dry_run_allows {
        tracing::info!(
            target: "portcullis::decision",
            policy = %policy,
            status = d.http_status(),
            reason = d.reason,
            user = d.user.as_deref(),
            subject = d.subject.as_deref(),
            method = %method,
            path = %path,
            shadow = shadow.then_some(true),
            "dry_run_would_allow"
        );
    }
}
