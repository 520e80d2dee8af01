//! The damage record: what the nemesis did to the cluster and is not
//! undone yet. Faults add to it, heals clear it entry by entry, and what
//! the final heal could not clear is reported with the run's verdict.

use std::collections::BTreeSet;

/// What the nemesis did to the cluster and is not undone yet. An entry is
/// cleared only when its undo worked, so a later heal retries the rest.
#[derive(Default)]
pub(super) struct Damage {
    pub(super) partitioned: bool,
    pub(super) killed: BTreeSet<usize>,
    pub(super) paused: BTreeSet<usize>,
    pub(super) clocks: BTreeSet<usize>,
    pub(super) removed: Option<Removed>,
    pub(super) disk_full: bool,
    pub(super) autolocked: bool,
    /// A CORRUPT alarm may be raised (by the leader's periodic check): the
    /// heal disarms it once the damaged member is rebuilt.
    pub(super) corrupt_alarm: bool,
}

/// A member removed from the cluster (its data wiped), to be added back.
pub(super) struct Removed {
    pub(super) node: usize,
    /// Its new peer URL, once chosen: chosen once, since choosing again
    /// would give back the removed member's URL, and so its ID.
    pub(super) peer_url: Option<String>,
}
