//! Who is calling: the User index, resolution of a token's user, and Users created on
//! first sight (docs/users.md).

mod naming;
mod resolve;
mod resolver;
mod store;
mod userinfo;

#[cfg(test)]
mod tests;

pub use crate::snapshot::{KnownUser, UserIndex, MAX_USER_BYTES};
pub use naming::{is_valid_name, user_name, MAX_NAME_LEN};
pub use resolve::{find_existing, plan, DataSource, Found, NameClaims, Plan, Resolution};
pub use resolver::{UserResolver, USERINFO_RETRY_AFTER};
pub use store::{manifest, FileUserStore, StoreError, UserStore, MANAGED_BY_LABEL, PROVIDER_LABEL};
pub use userinfo::{UserinfoClient, UserinfoError, MAX_USERINFO_BYTES, USERINFO_TIMEOUT};
