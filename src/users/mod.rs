//! Who is calling: the User index and resolution of a token's user.

mod index;
mod resolve;

pub use index::{User, UserIndex};
pub use resolve::{find_existing, Found};
