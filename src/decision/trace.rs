//! What `explain` shows: each step of one decision, like Aidbox's `__debug=policy`.

use serde::Serialize;

use super::{Decision, Outcome};
use crate::policy::Explanation;
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
    /// `found-by-name`, `found-by-identifier`, `created`, `would-create`,
    /// `userinfo-failed`, `create-failed` or `none`.
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
            message: d.message.to_string(),
            policy: d.policy.clone(),
        }
    }
}
