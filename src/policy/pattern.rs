//! matcho's `"#regex"` patterns, each compiled to the cheapest matcher with the same meaning.
//!
//! A compiled `regex::Regex` costs 8–40 KB whatever its size, and most patterns in access
//! policies are literals with anchors: `#^/fhir/Patient/`, `#read`, `#^(admin|nurse)$`.
//! Those shapes are recognised in the syntax tree of the regex crate's own parser, so they
//! mean exactly what the regex means, and are matched with `str` methods in a few bytes.
//! Every other pattern gets a full regex, shared by every policy that writes the same source.

use std::sync::Arc;

#[cfg(test)]
use super::budget::REGEX_SIZE_LIMIT;
use super::budget::{Refusal, RegexBudget};

use regex_automata::meta::Regex;
use regex_syntax::hir::{Hir, HirKind, Look};

#[derive(Debug)]
pub(crate) struct Pattern {
    source: Box<str>,
    matcher: Matcher,
}

#[derive(Debug)]
enum Matcher {
    Contains(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
    ExactOneOf(Box<[Box<str>]>),
    Regex(Arc<Regex>),
}

impl Pattern {
    /// A regex (not a literal) is paid for from `budget`.
    pub(crate) fn new(source: &str, budget: &mut RegexBudget) -> Result<Self, Refusal> {
        // A short literal is far inside the regex size limits; anything else, including a
        // source that does not parse, goes to the regex crate for its verdict and messages.
        // Compiling a regex takes tens of microseconds: skipping it is most of the load time
        // of a large configuration.
        let literal = regex_syntax::parse(source)
            .ok()
            .and_then(|hir| literal(&hir))
            .filter(|m| m.literal_len() <= MAX_LITERAL_BYTES);
        let matcher = match literal {
            Some(literal) => literal,
            None => Matcher::Regex(budget.regex(source)?),
        };
        Ok(Self {
            source: source.into(),
            matcher,
        })
    }

    // Always: the generic matcho evaluator is otherwise left calling it out of line.
    #[inline(always)]
    pub(crate) fn is_match(&self, s: &str) -> bool {
        match &self.matcher {
            Matcher::Contains(lit) => s.contains(&**lit),
            Matcher::Prefix(lit) => s.starts_with(&**lit),
            Matcher::Suffix(lit) => s.ends_with(&**lit),
            Matcher::Exact(lit) => s == &**lit,
            Matcher::ExactOneOf(lits) => lits.iter().any(|l| s == &**l),
            Matcher::Regex(re) => re.is_match(s),
        }
    }

    /// The source as written, without the leading `#`.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }
}

/// Literals up to this long are matched without a regex.
const MAX_LITERAL_BYTES: usize = 4096;

impl Matcher {
    fn literal_len(&self) -> usize {
        match self {
            Matcher::Contains(l) | Matcher::Prefix(l) | Matcher::Suffix(l) | Matcher::Exact(l) => {
                l.len()
            }
            Matcher::ExactOneOf(ls) => ls.iter().map(|l| l.len()).sum(),
            Matcher::Regex(_) => 0,
        }
    }
}

/// The literal matcher equal to `hir`, if it is one: `lit`, `^lit`, `lit$`, `^lit$` or
/// `^(lit|lit…)$`, with any `x*`-style repetition on an unanchored end dropped (`/p/.*` is
/// "contains `/p/`": a repetition that may match nothing changes nothing where the match may
/// start or stop anywhere).
fn literal(hir: &Hir) -> Option<Matcher> {
    let mut parts: &[Hir] = match hir.kind() {
        HirKind::Concat(parts) => parts,
        _ => std::slice::from_ref(hir),
    };
    let start = matches!(
        parts.first().map(Hir::kind),
        Some(HirKind::Look(Look::Start))
    );
    if start {
        parts = &parts[1..];
    }
    let end = matches!(parts.last().map(Hir::kind), Some(HirKind::Look(Look::End)));
    if end {
        parts = &parts[..parts.len() - 1];
    }
    if !start {
        while parts.first().is_some_and(may_repeat_zero_times) {
            parts = &parts[1..];
        }
    }
    if !end {
        while parts.last().is_some_and(may_repeat_zero_times) {
            parts = &parts[..parts.len() - 1];
        }
    }
    let one = match parts {
        [] => Some(String::new()),
        [only] => text(only),
        _ => None,
    };
    match (one, start, end) {
        (Some(lit), false, false) => Some(Matcher::Contains(lit.into())),
        (Some(lit), true, false) => Some(Matcher::Prefix(lit.into())),
        (Some(lit), false, true) => Some(Matcher::Suffix(lit.into())),
        (Some(lit), true, true) => Some(Matcher::Exact(lit.into())),
        (None, true, true) => {
            let [only] = parts else { return None };
            let HirKind::Alternation(branches) = ungrouped(only).kind() else {
                return None;
            };
            let lits: Option<Vec<Box<str>>> = branches
                .iter()
                .map(|b| text(b).map(String::into_boxed_str))
                .collect();
            Some(Matcher::ExactOneOf(lits?.into()))
        }
        (None, _, _) => None,
    }
}

fn may_repeat_zero_times(hir: &Hir) -> bool {
    matches!(hir.kind(), HirKind::Repetition(r) if r.min == 0)
}

/// The string a literal (possibly in a group) stands for.
fn text(hir: &Hir) -> Option<String> {
    match ungrouped(hir).kind() {
        HirKind::Empty => Some(String::new()),
        HirKind::Literal(lit) => String::from_utf8(lit.0.to_vec()).ok(),
        _ => None,
    }
}

fn ungrouped(mut hir: &Hir) -> &Hir {
    while let HirKind::Capture(group) = hir.kind() {
        hir = &group.sub;
    }
    hir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(src: &str) -> Matcher {
        Pattern::new(src, &mut RegexBudget::unlimited())
            .unwrap()
            .matcher
    }

    impl PartialEq for Matcher {
        fn eq(&self, other: &Self) -> bool {
            format!("{self:?}") == format!("{other:?}")
        }
    }

    #[test]
    fn anchored_literals_need_no_regex() {
        let lit = |s: &str| s.into();
        assert_eq!(matcher("read"), Matcher::Contains(lit("read")));
        assert_eq!(matcher("^/r1/"), Matcher::Prefix(lit("/r1/")));
        assert_eq!(matcher("\\.pdf$"), Matcher::Suffix(lit(".pdf")));
        assert_eq!(matcher("^admin$"), Matcher::Exact(lit("admin")));
        assert_eq!(matcher("\\Aadmin\\z"), Matcher::Exact(lit("admin")));
        assert_eq!(matcher("/Patient/.*"), Matcher::Contains(lit("/Patient/")));
        assert_eq!(
            matcher(".*/Patient/.*"),
            Matcher::Contains(lit("/Patient/"))
        );
        assert_eq!(matcher("^/fhir/.*"), Matcher::Prefix(lit("/fhir/")));
        assert_eq!(matcher(""), Matcher::Contains(lit("")));
        assert_eq!(matcher("^$"), Matcher::Exact(lit("")));
        assert_eq!(
            matcher("^(admin|practitioner)$"),
            Matcher::ExactOneOf(vec![lit("admin"), lit("practitioner")].into())
        );
    }

    #[test]
    fn other_shapes_keep_a_regex() {
        for src in [
            "^/fhir/.*$", // `.` stops at a newline: not just a prefix
            "(?i)^admin$",
            "(?m)^admin",
            "^/r[0-9]+/",
            "a|b",
            "^a+",
            "\\bread\\b",
        ] {
            assert!(
                matches!(matcher(src), Matcher::Regex(_)),
                "{src} must stay a regex"
            );
        }
    }

    /// Whatever the matcher chosen, it answers as the regex does.
    #[test]
    fn every_matcher_agrees_with_the_regex() {
        let patterns = [
            "read",
            "^/r1/",
            "\\.pdf$",
            "^admin$",
            "/Patient/.*",
            ".*/Patient/.*",
            "^/fhir/.*",
            "^/fhir/.*$",
            "",
            "^$",
            "^(admin|practitioner)$",
            "^(?:a|bc|)$",
            "(?i)^admin$",
            "(?m)^admin$",
            "x*read",
            "^x*read",
            "read.*$",
            "é+",
            "^é$",
        ];
        let haystacks = [
            "",
            "read",
            "scope read write",
            "READ",
            "/r1/x",
            "x/r1/",
            "a.pdf",
            "a.pdf\n",
            "admin",
            "Admin",
            "admin\n",
            "\nadmin",
            "practitioner",
            "/fhir/Patient/1",
            "/fhir/Patient/1\nx",
            "bc",
            "a",
            "xxread",
            "é",
            "éé",
        ];
        for src in patterns {
            let pattern = Pattern::new(src, &mut RegexBudget::unlimited()).unwrap();
            let regex = regex::Regex::new(src).unwrap();
            for h in haystacks {
                assert_eq!(
                    pattern.is_match(h),
                    regex.is_match(h),
                    "pattern {src:?} on {h:?} ({:?})",
                    pattern.matcher
                );
            }
        }
    }

    #[test]
    fn invalid_and_oversized_patterns_are_refused() {
        assert!(Pattern::new("(", &mut RegexBudget::unlimited()).is_err());
        assert!(Pattern::new("a{1000}{1000}", &mut RegexBudget::unlimited()).is_err());
        // A literal too long for the literal matchers still meets the regex size limit.
        assert!(Pattern::new(
            &"x".repeat(2 * MAX_LITERAL_BYTES),
            &mut RegexBudget::unlimited()
        )
        .is_ok());
        assert!(
            Pattern::new(&"x".repeat(REGEX_SIZE_LIMIT), &mut RegexBudget::unlimited()).is_err()
        );
    }
}
