//! Resolving the User behind a validated token (semantics.md, "User and auto-creation").

use std::sync::Arc;

use super::User;
use crate::snapshot::Snapshot;
use crate::token::ValidToken;

/// How a user was found, for `explain` and the decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `box_user` or `sub` equals the User's name.
    ByName(String),
    /// The introspector's IdentityProvider system and `sub` match an identifier.
    ByIdentifier { system: String, value: String },
}

/// Steps 1 and 2: an existing User, by name then by identifier.
pub fn find_existing(snapshot: &Snapshot, token: &ValidToken) -> Option<(Arc<User>, Found)> {
    let name = token
        .claims
        .get("box_user")
        .and_then(serde_json::Value::as_str)
        .or_else(|| token.subject())?;
    if let Some(user) = snapshot.users.by_name(name) {
        return Some((user.clone(), Found::ByName(name.to_string())));
    }
    let sub = token.subject()?;
    let idp = snapshot
        .identity_providers
        .get(token.introspector.identity_provider.as_deref()?)?;
    let system = idp.spec.system.as_deref()?;
    snapshot.users.by_identifier(system, sub).map(|u| {
        (
            u.clone(),
            Found::ByIdentifier {
                system: system.to_string(),
                value: sub.to_string(),
            },
        )
    })
}
