//! Linearizable reads: raft-rs's ReadIndex, batched. At most one round is
//! in flight; readers that arrive meanwhile share the next round, and a
//! round unanswered for `READ_INDEX_RETRY` is sent again (raft-rs drops
//! ReadIndex silently without a leader, or before a new leader commits in
//! its term). A reader is answered once apply reaches the round's index.

use std::time::Instant;

use raft::RawNode;
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
    /// Rounds answered by the leader, waiting for apply to reach `index`.
    pub(super) ready: Vec<(u64, Vec<ReadWaiter>)>,
    pub(super) next_ctx: u64,
}

impl ReadQueue {
    pub(super) fn maybe_send(&mut self, raw: &mut RawNode<LogStore>, now: Instant) {
        if let Some((_, sent, _)) = &self.inflight {
            if now.saturating_duration_since(*sent) < READ_INDEX_RETRY {
                return;
            }
            // Lost (no leader, or a leader not yet committed in its term):
            // fold it into a new round.
            let (_, _, waiting) = self.inflight.take().expect("checked above");
            self.pending.extend(waiting);
        }
        self.pending.retain(|r| !r.is_closed());
        if self.pending.is_empty() {
            return;
        }
        self.next_ctx += 1;
        raw.read_index(self.next_ctx.to_be_bytes().to_vec());
        self.inflight = Some((self.next_ctx, now, std::mem::take(&mut self.pending)));
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
