//! Where the configuration comes from: two producers of the same thing, side by side.
//!
//! - [`files`]: `--config` files and directories (and `--users-dir`), read again on change;
//! - [`cluster`]: the four kinds watched in the API server, with their namespace and
//!   generation; status and created Users written back; the status Lease.
//!
//! Each turns the [`Resource`](crate::resources::Resource)s it holds into a snapshot and
//! hands it over as a [`Loaded`] on a channel. Which one runs is `runtime`'s only choice.

pub mod cluster;
pub mod files;

use std::time::Duration;

use crate::resources::ConfigError;
use crate::snapshot::Snapshot;

/// A configuration a source compiled, or every error that kept it from compiling.
pub struct Loaded {
    pub compiled: Result<Snapshot, Vec<ConfigError>>,
    /// How many resources (or objects) it was built from.
    pub resources: usize,
    /// Objects refused on their own, each keeping the rest serving (the cluster only).
    pub refused: Option<usize>,
    /// How long reading and compiling took, when that is known.
    pub took: Option<Duration>,
    /// Only Users changed since the last one: worth no more than a debug line.
    pub users_only: bool,
}
