//! The edges: gRPC (ext_authz v3, health, admin), HTTP (health, metrics, ext_authz) and
//! the explain page on the admin listener. They translate to and from
//! [`crate::decision`] and hold no decision logic.

pub mod admin;
pub mod explain_page;
pub mod grpc;
pub mod http;
