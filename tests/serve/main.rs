//! `portcullis serve` at its edges, without Envoy: ext_authz over gRPC and HTTP, health,
//! `/metrics` and decision spans, identity-provider faults, and the admin listener (the
//! operator API and the explain page, in a real headless Chromium).
//!
//! One test binary for the room; the harness is `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod admin_explain;
mod authorization_headers;
mod costly;
mod decision_metrics;
mod explain_page;
mod faults;
mod forwarded;
mod health;
mod quickstart;
mod shadow;
