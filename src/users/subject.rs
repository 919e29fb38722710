//! [`Subject`]: what [`find`](super::find) and [`create`](super::UserResolver::create) know
//! of a validated token, as plain data. The decision pipeline builds it from its snapshot
//! and token (`decision/user.rs`).

use serde_json::Value;

use crate::resources::IdentityProviderSpec;

/// The caller a validated token names. (No `Debug`: the claims are personal data.)
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// `box_user`, else `sub`: the User name step 1 looks for.
    pub name: Option<&'a str>,
    /// `sub`.
    pub sub: Option<&'a str>,
    /// The TokenIntrospector that accepted the token, for messages.
    pub introspector: &'a str,
    /// Its namespace, from the cluster: Users are found by name, and created, there.
    pub namespace: Option<&'a str>,
    /// Its IdentityProvider.
    pub provider: ProviderRef<'a>,
    /// The token's claims (a JSON object): a created User's `data` with
    /// `userinfo-source: id-token`.
    pub claims: &'a Value,
}

/// The IdentityProvider of the introspector that accepted the token.
#[derive(Debug, Clone, Copy)]
pub enum ProviderRef<'a> {
    /// The introspector names none.
    Unnamed,
    /// It names one the configuration does not define.
    Undefined(&'a str),
    Defined(Provider<'a>),
}

/// An IdentityProvider as the configuration holds it.
#[derive(Debug, Clone, Copy)]
pub struct Provider<'a> {
    pub name: &'a str,
    pub spec: &'a IdentityProviderSpec,
    /// An inactive provider creates no Users.
    pub active: bool,
}

impl<'a> Subject<'a> {
    /// The system of the provider: the token's own identifier is `(system, sub)`.
    pub fn system(&self) -> Option<&'a str> {
        match self.provider {
            ProviderRef::Defined(p) => p.spec.system.as_deref(),
            _ => None,
        }
    }
}
