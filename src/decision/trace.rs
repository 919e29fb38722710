//! What `explain` shows: each step of one decision, like Aidbox's `__debug=policy`.

use serde::Serialize;

use super::{Decision, Outcome};
use crate::policy::Explanation;
use crate::token::{TokenError, TokenKind, ValidToken};
use crate::users::Found;

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
            claims: Some(serde_json::Value::Object((*token.claims).clone())),
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
    /// `found-by-name`, `found-by-identifier`, `created` or `none`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl UserStep {
    pub fn from_found<U: std::ops::Deref<Target = crate::users::User>>(
        found: Option<&(U, Found)>,
    ) -> Self {
        match found {
            None => UserStep {
                result: "none",
                user: None,
                detail: Some("no User by name (box_user or sub) or by identifier".into()),
            },
            Some((user, Found::ByName(name))) => UserStep {
                result: "found-by-name",
                user: Some(user.name.clone()),
                detail: Some(format!("name {name:?}")),
            },
            Some((user, Found::ByIdentifier { system, value })) => UserStep {
                result: "found-by-identifier",
                user: Some(user.name.clone()),
                detail: Some(format!("identifier {{system: {system}, value: {value}}}")),
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PolicyStep {
    pub policy: String,
    pub allowed: bool,
    pub explanation: Explanation,
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
            message: d.message.clone(),
            policy: d.policy.clone(),
        }
    }
}
