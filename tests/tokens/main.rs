//! Token validation: JWKS and introspecting TokenIntrospectors against a stub identity
//! provider and a real OpenID provider, and the verified-token cache.
//!
//! One test binary for the room; the harness is `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod introspection;
mod jwks;
mod oidc_provider;
mod private_ca;
