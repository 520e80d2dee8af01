//! The simulated network: members send into an outbox; the world takes
//! each message out after the sender's loop ran and decides, from the
//! seed, whether it is dropped, duplicated, and when it arrives. Partitions
//! (two-way or one-way) are checked at delivery, so a message in flight
//! when a cut begins is lost, as on a real link.

use std::collections::BTreeSet;
use std::sync::Arc;

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::Rng;
use secretd_store::transport::Transport;
use std::sync::Mutex;

/// Messages one member sent and nobody has routed yet.
#[derive(Default)]
pub struct Outbox {
    msgs: Mutex<Vec<Message>>,
}

impl Outbox {
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.msgs.lock().expect("outbox lock"))
    }
}

/// One member's transport: everything goes to its outbox.
pub struct SimTransport(pub Arc<Outbox>);

impl Transport for SimTransport {
    fn send(&self, msgs: Vec<Message>) {
        self.0.msgs.lock().expect("outbox lock").extend(msgs);
    }

    fn update_peers(&self, _peers: Vec<(u64, String)>) {}
}

/// How the links behave right now.
pub struct Links {
    /// Messages dropped, per mille.
    pub drop_permille: u32,
    /// Messages delivered twice, per mille.
    pub duplicate_permille: u32,
    /// Delivery delay: a base plus up to `jitter_ms` (reorders messages).
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// (from, to) member slots whose messages are lost.
    pub cut: BTreeSet<(usize, usize)>,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            drop_permille: 0,
            duplicate_permille: 0,
            delay_ms: 1,
            jitter_ms: 4,
            cut: BTreeSet::new(),
        }
    }
}

impl Links {
    /// When each copy of a message arrives (none: dropped). Proposals a
    /// follower forwards are never duplicated: raft applies a duplicated
    /// `MsgPropose` twice (there are no client sessions in the log), so a
    /// transport must never resend one. The real transport never resends
    /// anything; the simulation found what happens otherwise (seed 1790,
    /// five members: a write applied a second time, over a newer one).
    pub fn fates(&self, rng: &mut StdRng, now_ms: u64, may_duplicate: bool) -> Vec<u64> {
        if rng.gen_range(0..1000) < self.drop_permille {
            return Vec::new();
        }
        let duplicate = rng.gen_range(0..1000) < self.duplicate_permille;
        let copies = if duplicate && may_duplicate { 2 } else { 1 };
        (0..copies)
            .map(|_| now_ms + self.delay_ms + rng.gen_range(0..=self.jitter_ms))
            .collect()
    }

    pub fn passes(&self, from: usize, to: usize) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Cuts `a` from `b` both ways.
    pub fn cut_both(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }
}
