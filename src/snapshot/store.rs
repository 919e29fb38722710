use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Snapshot;

/// The serving snapshot. Readers take a cheap `Arc` clone; writers swap whole snapshots.
#[derive(Default)]
pub struct SnapshotStore {
    current: ArcSwapOption<Snapshot>,
}

impl SnapshotStore {
    /// `None` until the first configuration compiled: not ready, every request denied.
    pub fn load(&self) -> Option<Arc<Snapshot>> {
        self.current.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Some(Arc::new(snapshot)));
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }
}
