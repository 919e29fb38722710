//! The configuration as its author meets it, against the real binary: `validate`,
//! `explain` and `portcullis test` (policy tests), and `serve` reloading files on change.
//!
//! One test binary for the room; the harness is `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod examples;
mod hostile;
mod lifecycle;
mod policy_tests;
mod tenancy;
mod traps;
