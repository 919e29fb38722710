//! What one scope's policies may spend on compiled regex programs (`--max-regex-bytes`,
//! design.md "Bounded cost of configuration"). Each namespace, the root included, has a
//! budget of its own: a team at its budget never makes another team's policy invalid.
//!
//! A pattern is paid for once per scope, by the first policy that writes it; identical
//! patterns share one compiled program across scopes and snapshots ([`super::pattern`]).
//! A policy that is refused pays nothing: its charges are taken back.

use std::collections::HashMap;
use std::sync::Arc;

use regex_automata::meta::Regex;

use super::pattern::{shared, REGEX_SIZE_LIMIT};

/// `--max-regex-bytes`: compiled programs per namespace.
pub const DEFAULT_MAX_REGEX_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct RegexBudget {
    limit: usize,
    used: usize,
    /// Each source paid for, and what it cost.
    paid: HashMap<Arc<str>, usize>,
    /// Sources paid for by the policy being compiled: taken back if it is refused.
    journal: Vec<Arc<str>>,
    /// A pattern of the policy being compiled was over: the rest are not compiled, so that
    /// a policy of a thousand patterns costs one compilation past the budget, not a thousand.
    exhausted: bool,
}

/// Why a regex was not compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Not a regex, or over the per-pattern size limit: the message says which.
    Invalid(String),
    /// Over what the scope has left.
    OverBudget(String),
    /// Another pattern of this policy was over already; reported once, there.
    Exhausted,
}

impl Default for RegexBudget {
    fn default() -> Self {
        RegexBudget::new(DEFAULT_MAX_REGEX_BYTES)
    }
}

impl RegexBudget {
    pub fn new(limit: usize) -> Self {
        RegexBudget {
            limit,
            used: 0,
            paid: HashMap::new(),
            journal: Vec::new(),
            exhausted: false,
        }
    }

    /// No limit but the per-pattern one (tests, and one-off compilations).
    pub fn unlimited() -> Self {
        RegexBudget::new(usize::MAX)
    }

    /// Bytes of compiled programs paid for so far.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn begin(&mut self) {
        self.journal.clear();
        self.exhausted = false;
    }

    pub(crate) fn commit(&mut self) {
        self.journal.clear();
    }

    pub(crate) fn rollback(&mut self) {
        for source in self.journal.drain(..) {
            if let Some(cost) = self.paid.remove(&source) {
                self.used -= cost;
            }
        }
    }

    /// The compiled regex of `source`, paid for from this budget unless already paid.
    pub(crate) fn regex(&mut self, source: &str) -> Result<Arc<Regex>, Refusal> {
        if self.exhausted {
            return Err(Refusal::Exhausted);
        }
        let left = self.limit.saturating_sub(self.used);
        let already = self.paid.contains_key(source);
        // Never compiled past what is left: a hostile pattern fails fast at its size limit.
        let size_limit = if already {
            REGEX_SIZE_LIMIT
        } else {
            REGEX_SIZE_LIMIT.min(left)
        };
        let re = match shared(source, size_limit) {
            Ok(re) => re,
            Err(e) if e.size_limit().is_some() && size_limit < REGEX_SIZE_LIMIT => {
                return Err(self.over(None));
            }
            Err(e) => return Err(Refusal::Invalid(describe(&e))),
        };
        if already {
            return Ok(re);
        }
        let cost = re.memory_usage();
        if cost > left {
            return Err(self.over(Some(cost)));
        }
        let source: Arc<str> = source.into();
        self.used += cost;
        self.paid.insert(source.clone(), cost);
        self.journal.push(source);
        Ok(re)
    }

    fn over(&mut self, cost: Option<usize>) -> Refusal {
        self.exhausted = true;
        let cost = cost.map_or_else(|| "more than is left".to_string(), |c| format!("{c} bytes"));
        Refusal::OverBudget(format!(
            "compiled, this regex takes {cost}: over the namespace's budget of {} bytes of \
             regex programs, {} of them used by its other policies (--max-regex-bytes)",
            self.limit, self.used
        ))
    }
}

/// A build error as the regex crate would word it.
fn describe(e: &regex_automata::meta::BuildError) -> String {
    match (e.syntax_error(), e.size_limit()) {
        (Some(syntax), _) => syntax.to_string(),
        (None, Some(limit)) => format!("compiled regex exceeds size limit of {limit} bytes"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_is_paid_once_and_a_refused_policy_pays_nothing() {
        let mut budget = RegexBudget::new(1 << 20);
        budget.begin();
        budget.regex(r"^/api/v\d+/[a-z]+$").unwrap();
        let once = budget.used();
        assert!(once > 0);
        budget.regex(r"^/api/v\d+/[a-z]+$").unwrap();
        assert_eq!(budget.used(), once, "the same source twice is paid once");
        budget.commit();

        budget.begin();
        budget.regex(r"\w+@\w+\.example$").unwrap();
        assert!(budget.used() > once);
        budget.rollback();
        assert_eq!(
            budget.used(),
            once,
            "the refused policy's pattern is taken back"
        );
    }

    #[test]
    fn past_the_budget_a_pattern_is_refused_and_the_rest_not_compiled() {
        let mut budget = RegexBudget::new(64 * 1024);
        budget.begin();
        let mut refusals = Vec::new();
        for i in 0..50 {
            // Distinct, each large (a Unicode class repeated).
            if let Err(r) = budget.regex(&format!(r"\w{{20}}{i}\w{{20}}")) {
                refusals.push(r);
            }
        }
        assert!(
            matches!(refusals.first(), Some(Refusal::OverBudget(_))),
            "{refusals:?}"
        );
        assert!(refusals[1..].iter().all(|r| *r == Refusal::Exhausted));
        assert!(budget.used() <= budget.limit());
        assert!(matches!(
            RegexBudget::unlimited().regex("("),
            Err(Refusal::Invalid(_))
        ));
    }
}
