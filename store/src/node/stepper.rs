//! A member driven step by step instead of by its own thread. The
//! deterministic simulation owns every source of non-determinism, so it
//! decides when each member handles its queued inputs, ticks, and handles
//! a `Ready`; the code that runs is the production loop's (`raft_loop.rs`,
//! `apply.rs`), with a simulated clock and a fixed election timeout.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use raft::StateRole;

use super::opened::{ElectionTimeout, Opened};
use super::raft_loop::Loop;
use super::{AppliedEntry, Input, Node, Transport};
use crate::clock::Clock;
use crate::error::Result;

/// Raft's state as the invariant checks read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftView {
    pub id: u64,
    pub term: u64,
    pub vote: u64,
    pub leader_id: u64,
    pub is_leader: bool,
    pub commit: u64,
    pub applied: u64,
    /// The first index still in the log (after compaction), and the last.
    pub first_index: u64,
    pub last_index: u64,
}

/// A member whose loop runs only when told to.
pub struct Stepper {
    lp: Loop,
    stopped: bool,
}

impl Opened {
    /// Builds the member without starting a thread. Request ids start at
    /// `request_id_base` (the real loop takes them from the wall clock).
    pub fn start_stepped(
        self,
        transport: Arc<dyn Transport>,
        clock: Clock,
        request_id_base: u64,
    ) -> Result<(Arc<Node>, Stepper)> {
        let (node, mut lp) = self.build(transport, clock, ElectionTimeout::Fixed)?;
        node.next_request.store(request_id_base, Ordering::Relaxed);
        lp.applied_trace = Some(Vec::new());
        Ok((node, Stepper { lp, stopped: false }))
    }
}

impl Stepper {
    /// Handles every queued input (peer messages, proposals, reads).
    /// Returns how many there were.
    pub fn handle_inputs(&mut self) -> usize {
        let mut handled = 0;
        while !self.stopped {
            match self.lp.rx.try_recv() {
                Ok(Input::Stop) => self.stopped = true,
                Ok(input) => {
                    self.lp.handle(input);
                    handled += 1;
                }
                Err(_) => break,
            }
        }
        handled
    }

    /// One tick of raft's clock, lease expiry included.
    pub fn tick(&mut self) {
        if !self.stopped {
            let now = self.lp.now();
            self.lp.tick(now);
        }
    }

    /// Sends due reads and handles one `Ready` if there is one (the real
    /// loop's round, run after every batch of inputs). An error stops the
    /// member for good (the reason is the error), as it stops the real loop.
    pub fn ready(&mut self) -> std::result::Result<(), String> {
        if self.stopped {
            return Err("stopped".into());
        }
        if self.lp.round().is_err() {
            self.stopped = true;
            let fatal = self.lp.status.read().fatal.clone();
            return Err(fatal.unwrap_or_else(|| "stopped".into()));
        }
        Ok(())
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether inputs wait in the queue (the real loop's thread would wake).
    pub fn has_inputs(&self) -> bool {
        !self.stopped && !self.lp.rx.is_empty()
    }

    /// Whether raft has something to do (a `Ready`).
    pub fn has_ready(&mut self) -> bool {
        // A leaving leader never takes another `Ready` (see `Leaving`).
        !self.stopped && self.lp.leaving.is_none() && self.lp.raw.has_ready()
    }

    /// What a crash cannot take away: the term and vote last persisted,
    /// and the last synced entry. raft-rs's own view runs ahead of it
    /// between a step and the `Ready` that persists what the step did (a
    /// leader's new proposal, a higher term heard): those were never
    /// written, nor told to anyone, and a crash loses them rightly.
    pub fn persisted(&self) -> (u64, u64, u64) {
        let store = self.lp.raw.store();
        let hs = store.hard_state();
        (hs.term, hs.vote, store.synced_last_index())
    }

    pub fn view(&self) -> RaftView {
        let r = &self.lp.raw.raft;
        RaftView {
            id: self.lp.id,
            term: r.term,
            vote: r.vote,
            leader_id: r.leader_id,
            is_leader: r.state == StateRole::Leader,
            commit: r.raft_log.committed,
            applied: self.lp.applied,
            first_index: r.raft_log.first_index(),
            last_index: r.raft_log.last_index(),
        }
    }

    /// The term of the entry at `index`, if the log still holds it.
    pub fn log_term(&self, index: u64) -> Option<u64> {
        let log = &self.lp.raw.raft.raft_log;
        if index < log.first_index() || index > log.last_index() {
            return None;
        }
        log.term(index).ok()
    }

    /// The last log entry known to be on disk (synced, or found at open).
    pub fn synced_last_index(&self) -> u64 {
        self.lp.raw.store().synced_last_index()
    }

    /// The entries applied since the last call, in order.
    pub fn take_applied(&mut self) -> Vec<AppliedEntry> {
        self.lp
            .applied_trace
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The ReadIndex queue, for a trace: (waiting, in flight, answered).
    pub fn reads_state(&self) -> (usize, Option<u64>, Vec<u64>) {
        let r = &self.lp.reads;
        (
            r.pending.len(),
            r.inflight
                .as_ref()
                .map(|(ctx, _, w)| *ctx * 1000 + w.len() as u64),
            r.ready.iter().map(|(i, _)| *i).collect(),
        )
    }

    /// The voters in this member's configuration.
    pub fn voters(&self) -> Vec<u64> {
        self.lp.voters()
    }
}
