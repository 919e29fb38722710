//! Users created from userinfo: the Aidbox tutorial "Keycloak: auto-create users" with a
//! stub realm, and a person's login at a real OpenID provider. (The tutorial through
//! Envoy is in `tests/envoy/users.rs`.)
//!
//! One test binary for the room; the harness is `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod labels;
mod oidc_provider;
mod tutorial;
