//! History checkers.
//!
//! - `history`: operations with invoke/complete positions; unknown outcomes.
//! - `model`: sequential specifications (register, key-value with append).
//! - `wgl`: the linearizability search.
//! - `parse`: Jepsen's register log lines and EDN maps.
//! - `watch`: etcd's watch guarantees, and agreement between watchers.
//! - `lost`: acknowledged writes missing from the final read.
//! - `append`: strict serializability of list-append txns, by revision.

pub mod append;
pub mod history;
pub mod lost;
pub mod model;
pub mod parse;
pub mod synth;
pub mod watch;
pub mod wgl;

use std::time::{Duration, Instant};

pub use history::{Op, Outcome};
pub use wgl::Verdict;

/// Checks every partition (e.g. key) of a history independently within one
/// overall time budget. Not linearizable if any part is not; unknown if any
/// part ran out of time and none failed.
pub fn check_partitioned<M: model::Model>(
    parts: Vec<Vec<Op<M::Input, M::Output>>>,
    budget: Duration,
) -> Verdict {
    let deadline = Instant::now() + budget;
    let mut unknown = false;
    for part in parts {
        match wgl::check::<M>(&part, deadline) {
            Verdict::Linearizable => {}
            Verdict::Unknown => unknown = true,
            bad @ Verdict::NotLinearizable { .. } => return bad,
        }
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    }
}
