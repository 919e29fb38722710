//! What one scope's policies may spend on compiled regex programs (`--max-regex-bytes`,
//! design.md "Bounded cost of configuration"). Each namespace, the root included, has a
//! budget of its own: a team at its budget never makes another team's policy invalid.
//!
//! A pattern is paid for once per scope, by the first policy that writes it; identical
//! patterns share one compiled program across scopes and snapshots ([`super::pattern`]).
//! A policy that is refused pays nothing: its charges are taken back.
//!
//! Here too is the cache of compiled programs that every scope and snapshot shares.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use regex_automata::meta::{BuildError, Regex};

/// Compiled-regex limits: a hostile pattern is rejected when configuration loads instead of
/// costing memory on every replica. Matching itself is linear in the regex crate.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
    /// See [`RegexBudget::record`].
    record: Option<Vec<(Arc<str>, usize)>>,
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
            record: None,
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

    /// From now on, notes every pattern a policy takes, paid for now or before, and what it
    /// cost: what [`RegexBudget::repay`] takes to charge the same policy again without
    /// compiling it. Ended by [`RegexBudget::take_record`].
    pub fn record(&mut self) {
        self.record = Some(Vec::new());
    }

    /// The patterns noted since [`RegexBudget::record`], which it ends.
    pub fn take_record(&mut self) -> Vec<(Arc<str>, usize)> {
        self.record.take().unwrap_or_default()
    }

    /// Pays for the patterns of a policy compiled before (its [`RegexBudget::take_record`]),
    /// as compiling it again here would: each one not paid yet, in order, unless it costs
    /// more than is left. Then nothing is paid, and `false` says to compile it to learn why.
    pub fn repay(&mut self, record: &[(Arc<str>, usize)]) -> bool {
        self.begin();
        for (source, cost) in record {
            if self.paid.contains_key(source) {
                continue;
            }
            if *cost > self.limit.saturating_sub(self.used) {
                self.rollback();
                return false;
            }
            self.used += cost;
            self.paid.insert(source.clone(), *cost);
            self.journal.push(source.clone());
        }
        self.commit();
        true
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
                return Err(self.over());
            }
            Err(e) => return Err(Refusal::Invalid(describe(&e))),
        };
        if already {
            if let Some(record) = &mut self.record {
                let (source, cost) = self.paid.get_key_value(source).expect("paid");
                record.push((source.clone(), *cost));
            }
            return Ok(re);
        }
        let cost = re.memory_usage();
        if cost > left {
            return Err(self.over());
        }
        let source: Arc<str> = source.into();
        self.used += cost;
        self.paid.insert(source.clone(), cost);
        if let Some(record) = &mut self.record {
            record.push((source.clone(), cost));
        }
        self.journal.push(source);
        Ok(re)
    }

    /// The refusal of a pattern over what is left. Its size is not named: a pattern over
    /// is known by its full cost when a copy of it is alive, and only as "more than is
    /// left" when its compilation stops at that limit, and the message must not depend on
    /// which.
    fn over(&mut self) -> Refusal {
        self.exhausted = true;
        Refusal::OverBudget(format!(
            "compiled, this regex takes more than the {} bytes left of the namespace's budget \
             of {} bytes of regex programs, {} of them used by its other policies \
             (--max-regex-bytes)",
            self.limit.saturating_sub(self.used),
            self.limit,
            self.used
        ))
    }
}

/// One compiled regex per source, for every policy (and every snapshot) that uses it,
/// compiled under `size_limit` (at most [`REGEX_SIZE_LIMIT`]). The lock is not held while
/// compiling: the webhook and a reload compile side by side.
pub(crate) fn shared(source: &str, size_limit: usize) -> Result<Arc<Regex>, Box<BuildError>> {
    static SHARED: LazyLock<Mutex<HashMap<String, Weak<Regex>>>> = LazyLock::new(Default::default);
    let cached = |shared: &HashMap<String, Weak<Regex>>| shared.get(source).and_then(Weak::upgrade);
    if let Some(re) = cached(&SHARED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(re);
    }
    // As the regex crate configures it (`RegexBuilder`), with our limits. Only the NFA's
    // limit follows what the caller has left (it fails fast); the optional engines' limits
    // are fixed, so that a pattern's program, and what it costs, is the same whether it
    // is compiled now or shared from an earlier compilation under another limit.
    let config = Regex::config()
        .nfa_size_limit(Some(size_limit))
        .onepass_size_limit(Some(REGEX_SIZE_LIMIT))
        .dfa_size_limit(Some(REGEX_SIZE_LIMIT))
        .hybrid_cache_capacity(REGEX_SIZE_LIMIT);
    let built = Arc::new(
        Regex::builder()
            .configure(config)
            .build(source)
            .map_err(Box::new)?,
    );
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    // Compiled meanwhile by another: one copy serves both.
    if let Some(re) = cached(&shared) {
        return Ok(re);
    }
    let re = built;
    // Forget patterns no snapshot uses any more, now and then.
    if shared.len() >= 1024 && shared.len().is_power_of_two() {
        shared.retain(|_, re| re.strong_count() > 0);
    }
    shared.insert(source.to_owned(), Arc::downgrade(&re));
    Ok(re)
}

/// A build error as the regex crate would word it.
fn describe(e: &BuildError) -> String {
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

    /// What a pattern costs does not depend on what a budget has left, nor on whether a
    /// copy compiled under another limit is alive: else a policy that fits one load is
    /// refused by the next (a reload that keeps a policy compiled against one that
    /// compiles it again), or a scope's verdict hangs on another scope's patterns.
    #[test]
    fn a_pattern_costs_the_same_under_any_limit_compiled_or_shared() {
        let source = r"^/cost-test/r[0-9]+/a$";
        let full = {
            let mut budget = RegexBudget::unlimited();
            budget.regex(source).unwrap();
            budget.used()
        };
        let refused_below_and_paid_in_full = |shared: bool| {
            for limit in (1..8).map(|eighths| full * eighths / 8).chain([full - 1]) {
                let mut budget = RegexBudget::new(limit);
                budget.begin();
                let paid = budget.regex(source).map(|_| budget.used());
                assert!(
                    matches!(paid, Err(Refusal::OverBudget(_))),
                    "a {full}-byte pattern under a {limit}-byte budget (shared: {shared}): {paid:?}"
                );
            }
            let mut budget = RegexBudget::new(full);
            budget.regex(source).unwrap();
            assert_eq!(budget.used(), full, "shared: {shared}");
        };
        // Each compiled afresh: nothing holds the pattern between two budgets.
        refused_below_and_paid_in_full(false);
        let alive = RegexBudget::unlimited().regex(source).unwrap();
        refused_below_and_paid_in_full(true);
        drop(alive);
    }
}
