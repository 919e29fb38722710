//! portcullis: an external authorizer for Envoy and Istio, configured the Aidbox way.
//!
//! The request path: [`server`] (gRPC/HTTP edges) → [`decision`] (pipeline) →
//! [`token`] (validation), [`users`] (who), [`policy`] (engines), all reading one
//! immutable [`snapshot`] compiled from [`resources`] that a [`source`] produced.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod decision;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod resources;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod telemetry;
pub mod token;
pub mod users;

/// Code generated from `proto/`.
pub mod proto {
    pub mod admin {
        tonic::include_proto!("portcullis.admin.v1");
    }
}
