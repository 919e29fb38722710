//! The edges: gRPC (ext_authz v3, health, admin) and HTTP (health, metrics, ext_authz).
//! They translate to and from [`crate::decision`] and hold no decision logic.

pub mod admin;
pub mod grpc;
pub mod http;
