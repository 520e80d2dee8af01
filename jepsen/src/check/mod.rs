//! History checkers.
//!
//! - `history`: operations with invoke/complete positions; unknown outcomes.
//! - `model`: sequential specifications (register, key-value with append).
//! - `wgl`: the linearizability search.
//! - `parse`: Jepsen's register log lines and EDN maps.
//! - `watch`: etcd's watch guarantees, and agreement between watchers.
//! - `lost`: acknowledged writes missing from the final read.
//! - `append`: strict serializability of list-append txns, by revision.
//! - `synth`: synthetic histories of any size, for measuring the search.

pub mod append;
#[cfg(test)]
mod corpus_tests;
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

/// Steps each partition's search takes per turn.
const TURN_STEPS: u64 = 4096;

/// Checks every partition (e.g. key) of a history independently within one
/// overall time budget, the partitions taking turns, so one that fails
/// decides the history even while another is still searching (Porcupine
/// runs them in parallel for the same reason). Not linearizable if any part
/// is not; unknown if any part ran out of time and none failed.
pub fn check_partitioned<M: model::Model>(
    parts: Vec<Vec<Op<M::Input, M::Output>>>,
    budget: Duration,
) -> Verdict {
    let deadline = Instant::now() + budget;
    let mut searches: Vec<wgl::Search<M>> = parts.iter().map(|p| wgl::Search::new(p)).collect();
    let mut unknown = false;
    while !searches.is_empty() {
        let mut i = 0;
        while i < searches.len() {
            match searches[i].run(TURN_STEPS) {
                None => i += 1,
                Some(Verdict::Linearizable) => {
                    searches.swap_remove(i);
                }
                Some(Verdict::Unknown) => {
                    unknown = true;
                    searches.swap_remove(i);
                }
                Some(bad @ Verdict::NotLinearizable { .. }) => return bad,
            }
        }
        if Instant::now() >= deadline {
            return Verdict::Unknown;
        }
    }
    if unknown {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    }
}
