//! What is evaluated but not enforced, and what is counted per policy:
//!
//! - a dry-run policy (`portcullis.dev/dry-run: "true"`) is evaluated like any candidate,
//!   but never allows; one that would have allowed is remembered, so that a denial logs it;
//! - `serve --policy-metrics` counts every candidate evaluated on the request path;
//! - `serve --shadow` answers allow to a denial, once it is counted and logged as it is.

use super::costly::Judged;
use super::trace::TraceSink;
use super::{Authorizer, Decision, Outcome};
use crate::metrics::PolicyEvaluations;
use crate::policy::EvalContext;
use crate::snapshot::CompiledPolicy;

/// The candidates of one decision as they are evaluated: what the dry-run ones would have
/// done, and the per-policy counts (`None`: `--policy-metrics` is off, or `explain`).
pub(super) struct Evaluations<'m> {
    counts: Option<PolicyEvaluations<'m>>,
    /// Dry-run policies that would have allowed, in evaluation order.
    dry_run_allows: Vec<String>,
}

impl<'m> Evaluations<'m> {
    pub(super) fn new(counts: Option<PolicyEvaluations<'m>>) -> Self {
        Evaluations {
            counts,
            dry_run_allows: Vec::new(),
        }
    }

    /// Whether `candidate` allows the request, evaluated here: its engine's word, but never
    /// for a dry-run policy. Counted, when counting.
    #[inline]
    pub(super) fn evaluate(
        &mut self,
        candidate: &CompiledPolicy,
        eval: &EvalContext,
        trace: &mut TraceSink<'_>,
    ) -> bool {
        let judged = Judged::now(&candidate.policy, eval, trace.explaining());
        self.record(candidate, judged, trace)
    }

    /// [`Evaluations::evaluate`] of a judgement made elsewhere (on the pool of costly
    /// evaluations).
    #[inline]
    pub(super) fn record(
        &mut self,
        candidate: &CompiledPolicy,
        judged: Judged,
        trace: &mut TraceSink<'_>,
    ) -> bool {
        let allowed = trace.record(candidate, judged);
        if let Some(counts) = &self.counts {
            // The engines cannot fail on a request (every regex and schema compiled when
            // the configuration loaded): a result is `allow` or `deny`, never `error`.
            let result = if allowed { "allow" } else { "deny" };
            counts.count(&candidate.name, result, candidate.dry_run);
        }
        if candidate.dry_run {
            if allowed {
                self.dry_run_allows.push(candidate.name.clone());
            }
            return false;
        }
        allowed
    }

    /// The dry-run policies that would have allowed.
    pub(super) fn dry_run_allows(self) -> Vec<String> {
        self.dry_run_allows
    }
}

impl Authorizer {
    /// `serve --shadow`: a denial (401, 403, or 503 when portcullis could not decide),
    /// counted and logged as it is, answered allow. The answer sets no identity header
    /// (the denial set none) and removes every header portcullis owns, as an allow that
    /// sets none would; `reason` and `message` stay the real decision's.
    pub(super) fn shadow_allow(&self, decision: Decision, namespace: Option<&str>) -> Decision {
        self.metrics.shadow_allowed(decision.reason);
        // The claim headers of the request's scope, as an allow would strip them.
        let claim_headers = self
            .snapshots
            .load()
            .and_then(|snapshot| snapshot.view(namespace).claim_headers());
        Decision {
            outcome: Outcome::Allow,
            shadow: true,
            policy: None,
            user: None,
            subject: None,
            issuer: None,
            forwarded: Vec::new(),
            claim_headers,
            ..decision
        }
    }
}

#[cfg(test)]
mod tests;
