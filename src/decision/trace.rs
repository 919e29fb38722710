//! What `explain` shows: each step of one decision, like Aidbox's `__debug=policy`.

use serde::Serialize;

use super::costly::Judged;
use super::{Decision, Outcome};
use crate::policy::Explanation;
use crate::snapshot::CompiledPolicy;
use crate::token::{TokenError, TokenKind, ValidToken};
use crate::users::{Found, Resolution};

#[derive(Debug, Default, Serialize)]
pub struct Trace {
    pub token: TokenStep,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserStep>,
    pub policies: Vec<PolicyStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionStep>,
}

#[derive(Debug, Default, Serialize)]
pub struct TokenStep {
    /// `none` (anonymous), `valid` or `refused`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The validated claims (never the token itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<serde_json::Value>,
}

impl TokenStep {
    pub fn valid(token: &ValidToken) -> Self {
        TokenStep {
            result: "valid",
            kind: Some(match token.kind {
                TokenKind::Jwt => "jwt",
                TokenKind::Opaque => "opaque",
            }),
            introspector: Some(token.introspector.name.clone()),
            reason: None,
            claims: Some((*token.claims).clone()),
        }
    }

    pub fn refused(e: &TokenError) -> Self {
        TokenStep {
            result: "refused",
            reason: Some(e.to_string()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UserStep {
    /// `found-by-name`, `found-by-identifier`, `created`, `would-create`,
    /// `userinfo-failed`, `create-failed`, `create-limited` or `none`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl UserStep {
    pub fn from_resolution(resolution: &Resolution) -> Self {
        let (result, user, detail) = match resolution {
            Resolution::Found(user, Found::ByName(name)) => {
                ("found-by-name", Some(user.name().to_owned()), format!("name {name:?}"))
            }
            Resolution::Found(user, Found::ByIdentifier { system, value }) => (
                "found-by-identifier",
                Some(user.name().to_owned()),
                format!("identifier {{system: {system}, value: {value}}}"),
            ),
            Resolution::Created(user) => (
                "created",
                Some(user.name().to_owned()),
                "created on first sight of this subject".to_string(),
            ),
            Resolution::WouldCreate(plan) => (
                "would-create",
                Some(plan.name.clone()),
                format!(
                    "serve --create-users would create it with identifier {{system: {}, value: {}}} and data from {:?} of IdentityProvider/{}; explain creates nothing",
                    plan.identifier.system, plan.identifier.value, plan.source, plan.provider
                ),
            ),
            Resolution::UserinfoFailed { name, error } => {
                ("userinfo-failed", Some(name.clone()), error.clone())
            }
            Resolution::CreateFailed { name, error } => {
                ("create-failed", Some(name.clone()), error.clone())
            }
            Resolution::Limited { name, why, .. } => {
                ("create-limited", Some(name.clone()), why.clone())
            }
            Resolution::LookupFailed(failure) => {
                ("lookup-failed", None, failure.error.clone())
            }
            Resolution::None(why) => ("none", None, why.to_string()),
        };
        UserStep {
            result,
            user,
            detail: Some(detail),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PolicyStep {
    pub policy: String,
    /// Whether it allows the request: never for a dry-run policy.
    pub allowed: bool,
    /// Only for a dry-run policy (`portcullis.dev/dry-run: "true"`): what it would do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRunStep>,
    /// The engine's own word: for a dry-run policy, what it would have done.
    pub explanation: Explanation,
}

/// What a dry-run policy would have done, were it enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DryRunStep {
    pub would_allow: bool,
}

#[derive(Debug, Serialize)]
pub struct DecisionStep {
    pub allowed: bool,
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl From<&Decision> for DecisionStep {
    fn from(d: &Decision) -> Self {
        DecisionStep {
            allowed: d.outcome == Outcome::Allow,
            status: d.http_status(),
            reason: d.reason,
            message: d.message.to_string(),
            policy: d.policy.clone(),
        }
    }
}

/// Where a decision's steps say what they did: the `explain` trace, or nowhere.
pub(super) struct TraceSink<'t>(Option<&'t mut Trace>);

impl<'t> TraceSink<'t> {
    pub(super) fn new(trace: Option<&'t mut Trace>) -> Self {
        Self(trace)
    }

    pub(super) fn explaining(&self) -> bool {
        self.0.is_some()
    }

    pub(super) fn token(&mut self, step: impl FnOnce() -> TokenStep) {
        if let Some(t) = self.0.as_deref_mut() {
            t.token = step();
        }
    }

    pub(super) fn user(&mut self, step: impl FnOnce() -> UserStep) {
        if let Some(t) = self.0.as_deref_mut() {
            t.user = Some(step());
        }
    }

    /// The candidate's judgement, as the engine gave it (a dry-run policy's too: the caller
    /// knows that it never allows); when explaining, why, into the trace.
    #[inline]
    pub(super) fn record(&mut self, candidate: &CompiledPolicy, judged: Judged) -> bool {
        let (Some(t), Some(explanation)) = (self.0.as_deref_mut(), judged.explanation) else {
            return judged.allowed;
        };
        let allowed = judged.allowed;
        t.policies.push(PolicyStep {
            policy: candidate.name.clone(),
            allowed: allowed && !candidate.dry_run,
            dry_run: candidate.dry_run.then_some(DryRunStep {
                would_allow: allowed,
            }),
            explanation,
        });
        allowed
    }
}

impl Trace {
    /// The trace as a tree for people: each step on its line, each failed comparison as
    /// `path: expected X, found Y`, and the matches users trip on (`null = null` through a
    /// `.path` reference, `$not` on an absent field) marked `note`.
    pub fn to_tree(&self) -> String {
        let mut out = String::new();
        let t = &self.token;
        match t.result {
            "valid" => {
                let kind = t.kind.unwrap_or("token");
                let by = t.introspector.as_deref().unwrap_or("?");
                out.push_str(&format!("token: valid {kind} (TokenIntrospector/{by})\n"));
                if let Some(claims) = &t.claims {
                    out.push_str(&format!("  claims: {claims}\n"));
                }
            }
            "refused" => {
                let why = t.reason.as_deref().unwrap_or("");
                out.push_str(&format!("token: refused: {why}\n"));
            }
            _ => out.push_str("token: none (anonymous)\n"),
        }
        if let Some(u) = &self.user {
            let name = u
                .user
                .as_deref()
                .map(|n| format!(" User/{n}"))
                .unwrap_or_default();
            let detail = u.detail.as_deref().unwrap_or("");
            out.push_str(&format!("user: {}{name}: {detail}\n", u.result));
        }
        if !self.policies.is_empty() {
            out.push_str("policies (in evaluation order):\n");
        }
        for p in &self.policies {
            explanation(&mut out, 1, &p.policy, &p.explanation, p.dry_run);
        }
        if let Some(d) = &self.decision {
            let word = if d.allowed { "ALLOW" } else { "DENY" };
            let by = d
                .policy
                .as_deref()
                .map(|p| format!(" by AccessPolicy/{p}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "decision: {word} {} ({}){by}: {}\n",
                d.status, d.reason, d.message
            ));
        }
        out
    }
}

/// A dry-run policy denies, and says what it would have done: `p: denies (allow) (dry-run:
/// would allow)`.
fn explanation(
    out: &mut String,
    depth: usize,
    name: &str,
    e: &Explanation,
    dry_run: Option<DryRunStep>,
) {
    let pad = "  ".repeat(depth);
    let verdict = if e.allowed && dry_run.is_none() {
        "allows"
    } else {
        "denies"
    };
    out.push_str(&format!("{pad}{name}: {verdict} ({})", e.engine));
    if let Some(d) = dry_run {
        let would = if d.would_allow { "allow" } else { "deny" };
        out.push_str(&format!(" (dry-run: would {would})"));
    }
    out.push('\n');
    for m in &e.errors {
        let at = if m.path.is_empty() {
            "(the request)"
        } else {
            &m.path
        };
        out.push_str(&format!(
            "{pad}  {at}: expected {}, found {}",
            m.expected, m.but
        ));
        if let Some(note) = &m.note {
            out.push_str(&format!(" ({note})"));
        }
        out.push('\n');
    }
    for m in &e.notes {
        let note = m.note.as_deref().unwrap_or("matched, perhaps not as meant");
        out.push_str(&format!(
            "{pad}  note: {}: {note} (expected {}, found {})\n",
            m.path, m.expected, m.but
        ));
    }
    for (i, child) in e.children.iter().enumerate() {
        explanation(out, depth + 1, &format!("[{i}]"), child, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, EvalContext};
    use serde_json::json;

    #[test]
    fn the_tree_names_the_failed_path_and_the_pitfalls() {
        let ctx = json!({"request-method": "post", "jwt": {"role": "viewer"}});
        let eval = EvalContext::new(&ctx);
        let policy = |body| compile(&body).unwrap().explain(&eval);
        let trace = Trace {
            token: TokenStep {
                result: "valid",
                kind: Some("jwt"),
                introspector: Some("t".into()),
                reason: None,
                claims: Some(json!({"role": "viewer"})),
            },
            user: None,
            policies: vec![
                PolicyStep {
                    policy: "admins".into(),
                    allowed: false,
                    dry_run: None,
                    explanation: policy(
                        json!({"engine": "matcho", "matcho": {"jwt": {"role": "admin"}}}),
                    ),
                },
                PolicyStep {
                    policy: "odd".into(),
                    allowed: true,
                    dry_run: None,
                    explanation: policy(json!({"engine": "complex", "or": [
                        {"engine": "matcho", "matcho": {"request-method": "get"}},
                        {"engine": "matcho", "matcho": {"jwt": {"team": {"$not": "red"}}}}
                    ]})),
                },
            ],
            decision: Some(DecisionStep {
                allowed: true,
                status: 200,
                reason: "allowed",
                message: "allowed".into(),
                policy: Some("odd".into()),
            }),
        };
        let tree = trace.to_tree();
        let expected_lines = [
            "token: valid jwt (TokenIntrospector/t)",
            "  admins: denies (matcho)",
            "    jwt.role: expected \"admin\", found \"viewer\"",
            "  odd: allows (complex)",
            "    [0]: denies (matcho)",
            "      request-method: expected \"get\", found \"post\"",
            "    [1]: allows (matcho)",
            "decision: ALLOW 200 (allowed) by AccessPolicy/odd: allowed",
        ];
        for line in expected_lines {
            assert!(
                tree.lines().any(|l| l == line),
                "missing {line:?} in:\n{tree}"
            );
        }
        assert!(
            tree.lines().any(|l| l.starts_with("      note: jwt.team")),
            "the $not on an absent field is noted:\n{tree}"
        );
    }
}
