//! Resolving the User behind a validated token (docs/users.md, "Resolution"):
//! the pure steps. [`super::UserResolver`] adds creation on top.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{user_name, KnownUser, UserIndex};
use crate::resources::{Identifier, UserinfoSource};
use crate::snapshot::Snapshot;
use crate::snapshot::{namespace_of, qualified};
use crate::token::ValidToken;

/// How a user was found, for `explain` and the decision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `box_user` or `sub` equals the User's name.
    ByName(String),
    /// The introspector's IdentityProvider system and `sub` match an identifier.
    ByIdentifier { system: String, value: String },
}

/// What resolution came to.
#[derive(Debug, Clone)]
pub enum Resolution {
    Found(KnownUser, Found),
    /// Created now (or by a concurrent request for the same subject).
    Created(KnownUser),
    /// `explain`: creation would run, but explain never creates.
    WouldCreate(Plan),
    /// The userinfo call failed: no `user` this time.
    UserinfoFailed {
        name: String,
        error: String,
    },
    /// The store failed, or holds another user under this name: no `user` this time.
    CreateFailed {
        name: String,
        error: String,
    },
    /// No User, and none to create: why.
    None(Cow<'static, str>),
}

impl Resolution {
    pub fn user(&self) -> Option<&KnownUser> {
        match self {
            Resolution::Found(u, _) | Resolution::Created(u) => Some(u),
            _ => None,
        }
    }
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

/// Steps 1 and 2: an existing User, by name then by identifier. Each step looks in the
/// snapshot's index first, then in `overlay` (Users created since the snapshot was built).
pub fn find_existing(
    snapshot: &Snapshot,
    overlay: Option<&UserIndex>,
    token: &ValidToken,
    name_claims: NameClaims,
) -> Option<(KnownUser, Found)> {
    let indexes = std::iter::once(&*snapshot.users).chain(overlay);
    // From the cluster, a token names Users of its TokenIntrospector's namespace.
    let name = token
        .claims
        .get("box_user")
        .and_then(Value::as_str)
        .or_else(|| token.subject())
        .map(|name| match namespace_of(&token.introspector.name) {
            Some(ns) => Cow::Owned(qualified(Some(ns), name)),
            None => Cow::Borrowed(name),
        });
    let sub = token.subject();
    // Looked up directly: `provider` builds an error message when there is none, and this
    // runs on every decision.
    let system = token
        .introspector
        .identity_provider
        .as_deref()
        .and_then(|name| snapshot.identity_providers.get(name))
        .and_then(|p| p.spec.system.as_deref());
    // The token's own identifier: (the provider's system, its `sub`).
    let own = system.zip(sub);
    if let Some(name) = name {
        for index in indexes.clone() {
            if let Some(user) = index.by_name(&name) {
                let claimable = if user.identifiers().len() == 0 {
                    name_claims == NameClaims::Allowed
                } else {
                    // A User bound to a person is that person's alone: a token of the same
                    // provider naming someone else's User (`box_user`) must not get it.
                    own.is_some_and(|(system, sub)| user.has_identifier(system, sub))
                };
                if claimable {
                    return Some((user.clone(), Found::ByName(name.to_string())));
                }
            }
        }
    }
    let (system, sub) = own?;
    indexes
        .into_iter()
        .find_map(|index| index.by_identifier(system, sub))
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

/// Step 3, before anything is fetched: the User that would be created for this token.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub identifier: Identifier,
    pub provider: String,
    pub source: DataSource,
}

/// Where a created User's `data` comes from.
#[derive(Clone, PartialEq)]
pub enum DataSource {
    /// `userinfo-source: userinfo-endpoint`: `GET url` with `Authorization: <scheme> <token>`.
    Userinfo { url: String, scheme: String },
    /// `userinfo-source: id-token`: the validated token's own claims.
    Claims(Map<String, Value>),
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Userinfo { url, .. } => write!(f, "userinfo {url}"),
            DataSource::Claims(_) => f.write_str("the token's claims"),
        }
    }
}

/// Claims about the token rather than the person: freezing them into a User would only
/// record one token's lifetime.
const TOKEN_ONLY_CLAIMS: [&str; 8] = [
    "exp", "iat", "nbf", "jti", "nonce", "at_hash", "c_hash", "active",
];

/// Whether, and how, a User can be created for this token. `Err` says why not.
pub fn plan(snapshot: &Snapshot, token: &ValidToken) -> Result<Plan, String> {
    let sub = token
        .subject()
        .filter(|s| !s.is_empty())
        .ok_or("the token has no `sub`")?;
    let idp = provider(snapshot, token)?;
    if !idp.is_active() {
        return Err(format!(
            "IdentityProvider/{} is inactive: it creates no Users",
            idp.name
        ));
    }
    let system = idp
        .spec
        .system
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "IdentityProvider/{} has no `system` to identify Users by",
                idp.name
            )
        })?;
    let source = match idp.spec.userinfo_source {
        Some(UserinfoSource::IdToken) => DataSource::Claims(
            token
                .claims
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !TOKEN_ONLY_CLAIMS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        Some(UserinfoSource::UserinfoEndpoint) | None => DataSource::Userinfo {
            url: idp
                .spec
                .userinfo_endpoint
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    format!(
                        "IdentityProvider/{} has no `userinfo_endpoint` (or set `userinfo-source: id-token`)",
                        idp.name
                    )
                })?,
            scheme: idp
                .spec
                .userinfo_header
                .clone()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "Bearer".to_string()),
        },
    };
    Ok(Plan {
        // Created in the namespace of the TokenIntrospector that accepted the token.
        name: qualified(
            namespace_of(&token.introspector.name),
            &user_name(system, sub),
        ),
        identifier: Identifier {
            system: system.to_string(),
            value: sub.to_string(),
        },
        provider: idp.name.clone(),
        source,
    })
}

fn provider<'s>(
    snapshot: &'s Snapshot,
    token: &ValidToken,
) -> Result<&'s crate::snapshot::CompiledProvider, String> {
    let name = token
        .introspector
        .identity_provider
        .as_deref()
        .ok_or_else(|| {
            format!(
                "TokenIntrospector/{} has no identity_provider",
                token.introspector.name
            )
        })?;
    snapshot
        .identity_providers
        .get(name)
        .map(|p| &**p)
        .ok_or_else(|| format!("IdentityProvider/{name} is not defined"))
}
