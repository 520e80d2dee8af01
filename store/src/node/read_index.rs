//! Linearizable reads: raft-rs's ReadIndex, batched. At most one round is
//! in flight; readers that arrive meanwhile share the next round. raft-rs
//! drops a ReadIndex silently when the member knows no leader, or when it
//! leads but has not yet committed in its term, so a round waits for both
//! instead of being sent into the void (a restarted or new member asks
//! before its first heartbeat, and losing that round cost a whole retry,
//! half a second, on every restart and join). A round goes out again at
//! once when the leader changes under it, and after `READ_INDEX_RETRY` if
//! unanswered (a new leader elsewhere may drop it for the same reason).
//! A reader is answered once apply reaches the round's index.
//!
//! A round's context names its member as well as its number: the leader
//! keeps one pending read per context and ignores a second with the same
//! one, so two members' rounds numbered alike (every member counts from 1
//! after a start) left one of them unanswered until its retry.

use std::time::Instant;

use raft::{RawNode, StateRole, INVALID_ID};
use tokio::sync::oneshot;

use super::READ_INDEX_RETRY;
use crate::error::Result;
use crate::log_store::LogStore;

pub(super) type ReadWaiter = oneshot::Sender<Result<()>>;

/// Linearizable reads waiting for a ReadIndex round. At most one round is
/// in flight; everything that arrives meanwhile shares the next one.
#[derive(Default)]
pub(super) struct ReadQueue {
    pub(super) pending: Vec<ReadWaiter>,
    /// The round in flight: its context, when it was sent, its readers.
    pub(super) inflight: Option<(u64, Instant, Vec<ReadWaiter>)>,
    /// The leader the round in flight was sent to.
    inflight_leader: u64,
    /// Rounds answered by the leader, waiting for apply to reach `index`.
    pub(super) ready: Vec<(u64, Vec<ReadWaiter>)>,
    pub(super) next_ctx: u64,
    /// This member's id, the first half of every round's context.
    me: u64,
    /// Rounds that went unanswered until their retry (etcd's
    /// `slow_read_indexes`).
    pub(super) slow_rounds: u64,
}

/// A round's context: the member's id, then the round's number.
fn context(me: u64, round: u64) -> Vec<u8> {
    [me.to_be_bytes(), round.to_be_bytes()].concat()
}

impl ReadQueue {
    pub(super) fn maybe_send(&mut self, raw: &mut RawNode<LogStore>, now: Instant) {
        let leader = raw.raft.leader_id;
        if let Some((_, sent, _)) = &self.inflight {
            let moved = leader != self.inflight_leader;
            if !moved && now.saturating_duration_since(*sent) < READ_INDEX_RETRY {
                return;
            }
            // Lost (sent to a leader that is gone, or to one that had not
            // committed in its term): fold it into a new round.
            let (_, _, waiting) = self.inflight.take().expect("checked above");
            if !moved {
                self.slow_rounds += 1;
                crate::metrics::SLOW_READ_INDEXES.inc();
            }
            self.pending.extend(waiting);
        }
        self.pending.retain(|r| !r.is_closed());
        if self.pending.is_empty() || !Self::answerable(raw) {
            return;
        }
        self.inflight_leader = leader;
        self.next_ctx += 1;
        self.me = raw.raft.id;
        raw.read_index(context(self.me, self.next_ctx));
        self.inflight = Some((self.next_ctx, now, std::mem::take(&mut self.pending)));
    }

    /// Whether raft-rs would act on a ReadIndex now rather than drop it.
    fn answerable(raw: &RawNode<LogStore>) -> bool {
        match raw.raft.state {
            StateRole::Leader => raw.raft.commit_to_current_term(),
            _ => raw.raft.leader_id != INVALID_ID,
        }
    }

    pub(super) fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let matches = matches!(&self.inflight, Some((c, _, _)) if context(self.me, *c) == ctx);
        if matches {
            let (_, _, waiting) = self.inflight.take().expect("checked above");
            self.ready.push((index, waiting));
        }
    }

    pub(super) fn release(&mut self, applied: u64) {
        let (done, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready)
            .into_iter()
            .partition(|(i, _)| *i <= applied);
        self.ready = wait;
        for (_, waiting) in done {
            for r in waiting {
                let _ = r.send(Ok(()));
            }
        }
    }
}
