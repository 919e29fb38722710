//! Through real Envoy, with the configurations `deploy/examples/envoy/` ships: the walking
//! skeleton, what a client can and cannot make portcullis believe, claims and Users sent
//! to the upstream, and tokens of a real OpenID provider.
//!
//! Needs Envoy (and node for the OpenID provider): `scripts/install-test-deps.sh`. Fails
//! without them, never skips. One test binary for the room; the harness is
//! `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod claims_to_upstream;
mod e2e;
mod hardening;
mod oidc_provider;
mod tenancy;
mod try_envoy;
mod users;
