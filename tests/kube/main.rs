//! Kubernetes mode and what deploy/ and charts/ ship: the cluster end to end against the
//! in-repo fake API server (and that fake itself, checked with kube-rs's client), the
//! admission webhook, the CRDs, the manifests and the Helm chart; and docs/walkthrough.md,
//! step by step (with a real Envoy for its two curls).
//!
//! One test binary for the room; the harness is `tests/support/`, shared by every room.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod crds;
mod fake_apiserver;
mod manifests;
mod tenancy;
mod users_on_demand;
mod walkthrough;
mod webhook;
