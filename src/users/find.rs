//! [`find`]: steps 1 and 2 of resolution (docs/users.md, "Resolution"), pure: a User by
//! name, then by identifier.

use std::borrow::Cow;

use super::{KnownUser, Subject, UserIndex};
use crate::resources::qualified;

/// How a user was found, for `explain` and the decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `box_user` or `sub` equals the User's name.
    ByName(String),
    /// The introspector's IdentityProvider system and `sub` match an identifier.
    ByIdentifier { system: String, value: String },
}

/// Whether step 1 may hand a User without identifiers to whoever names it (Aidbox's way).
///
/// A User with identifiers is found by name only by a token that carries one of them; a
/// User without any has nothing to check, so naming it (`sub` or `box_user`) is enough:
/// that trusts every issuer that lets a caller choose either claim. `IdentifiedOnly`
/// (`--claim-users-by-name=false`) refuses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NameClaims {
    #[default]
    Allowed,
    IdentifiedOnly,
}

/// Steps 1 and 2: an existing User of the accepting introspector's namespace, by name then
/// by identifier; another namespace's User is never found. Each step looks in
/// `serving` (the snapshot's index) first, then in `overlay` (Users created since the
/// snapshot was built).
pub fn find(
    serving: &UserIndex,
    overlay: Option<&UserIndex>,
    subject: &Subject<'_>,
    name_claims: NameClaims,
) -> Option<(KnownUser, Found)> {
    let indexes = std::iter::once(serving).chain(overlay);
    // From the cluster, a token names Users of its TokenIntrospector's namespace.
    let name = subject.name.map(|name| match subject.namespace {
        Some(ns) => Cow::Owned(qualified(Some(ns), name)),
        None => Cow::Borrowed(name),
    });
    // The token's own identifier: (the provider's system, its `sub`).
    let own = subject.system().zip(subject.sub);
    if let Some(name) = name {
        for index in indexes.clone() {
            if let Some(user) = index.by_name(&name) {
                if claimable(user, own, name_claims) {
                    return Some((user.clone(), Found::ByName(name.to_string())));
                }
            }
        }
    }
    let (system, sub) = own?;
    indexes
        .into_iter()
        .find_map(|index| index.by_identifier(subject.namespace, system, sub))
        .map(|u| {
            (
                u.clone(),
                Found::ByIdentifier {
                    system: system.to_string(),
                    value: sub.to_string(),
                },
            )
        })
}

/// Whether step 1 hands `user`, named by the token, to the token whose own identifier is
/// `own` (`(system, sub)`).
pub(super) fn claimable(
    user: &KnownUser,
    own: Option<(&str, &str)>,
    name_claims: NameClaims,
) -> bool {
    if user.identifiers().len() == 0 {
        name_claims == NameClaims::Allowed
    } else {
        // A User bound to a person is that person's alone: a token of the same provider
        // naming someone else's User (`box_user`) must not get it.
        own.is_some_and(|(system, sub)| user.has_identifier(system, sub))
    }
}
