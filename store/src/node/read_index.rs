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
            self.pending.extend(waiting);
        }
        self.pending.retain(|r| !r.is_closed());
        if self.pending.is_empty() || !Self::answerable(raw) {
            return;
        }
        self.inflight_leader = leader;
        self.next_ctx += 1;
        raw.read_index(self.next_ctx.to_be_bytes().to_vec());
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
        let matches = matches!(&self.inflight, Some((c, _, _)) if c.to_be_bytes() == ctx);
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
