//! The edges: gRPC (ext_authz v3, health, admin), HTTP (health, metrics, ext_authz) and
//! the explain page on the admin listener, and HTTPS (the admission webhook). They
//! translate to and from [`crate::decision`] and [`crate::cluster::admission`] and hold no
//! decision logic.

pub mod admin;
pub mod coalesce;
pub mod explain_page;
pub mod grpc;
pub mod http;
pub mod tls;
pub mod trace;
pub mod webhook;
