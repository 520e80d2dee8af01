//! An in-memory network: members running in one process hand raft messages
//! straight to each other's input queue, through seeded faults (dropped
//! messages, one-way cuts). Snapshots travel as their files, copied from
//! the sender's snapshot directory to the receiver's, as `api::peer`
//! streams them. What it is for: whole clusters inside a test (raft-rs's
//! `five_mem_node` style), with no ports, TLS or gRPC in the way.
//!
//! Delivery is immediate and in order per sender; the faults, not the
//! timing, are what the seed decides.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{Message, MessageType};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::node::Node;
use crate::snapshot;
use crate::transport::Transport;

/// Faults the network applies, drawn from one seeded generator.
struct Faults {
    rng: StdRng,
    /// Messages dropped, per million.
    drop_ppm: u32,
    /// (from, to) pairs whose messages never arrive.
    cut: HashSet<(u64, u64)>,
}

/// Members by id, and the faults between them.
pub struct MemNetwork {
    nodes: RwLock<HashMap<u64, Weak<Node>>>,
    faults: Mutex<Faults>,
    /// Members that say they speak an older peer wire (`set_wire`); the
    /// rest speak this release's.
    wires: RwLock<HashMap<u64, u32>>,
}

impl MemNetwork {
    pub fn new(seed: u64) -> Arc<MemNetwork> {
        Arc::new(MemNetwork {
            nodes: RwLock::new(HashMap::new()),
            faults: Mutex::new(Faults {
                rng: StdRng::seed_from_u64(seed),
                drop_ppm: 0,
                cut: HashSet::new(),
            }),
            wires: RwLock::new(HashMap::new()),
        })
    }

    /// Member `id` now says it speaks peer wire `wire` (`None`: this
    /// release's): what the others propose while it may run an older
    /// release (`Transport::peers_below`).
    pub fn set_wire(&self, id: u64, wire: Option<u32>) {
        let mut wires = self.wires.write();
        match wire {
            Some(w) => wires.insert(id, w),
            None => wires.remove(&id),
        };
    }

    /// The transport member `id` sends through.
    pub fn transport(self: &Arc<Self>, id: u64) -> Arc<MemTransport> {
        Arc::new(MemTransport {
            from: id,
            net: self.clone(),
        })
    }

    /// Makes a started member reachable (until it is dropped or replaced).
    pub fn attach(&self, node: &Arc<Node>) {
        self.nodes.write().insert(node.id(), Arc::downgrade(node));
    }

    pub fn detach(&self, id: u64) {
        self.nodes.write().remove(&id);
    }

    /// Drops this fraction of messages from now on (0.0 to 1.0).
    pub fn set_drop_rate(&self, rate: f64) {
        assert!((0.0..=1.0).contains(&rate));
        self.faults.lock().drop_ppm = (rate * 1e6) as u32;
    }

    /// Cuts (or heals) every message from `from` to `to`.
    pub fn set_cut(&self, from: u64, to: u64, cut: bool) {
        let mut f = self.faults.lock();
        if cut {
            f.cut.insert((from, to));
        } else {
            f.cut.remove(&(from, to));
        }
    }

    /// Isolates `id` from every other member, both ways (or heals it).
    pub fn isolate(&self, id: u64, cut: bool) {
        let others: Vec<u64> = self
            .nodes
            .read()
            .keys()
            .copied()
            .filter(|o| *o != id)
            .collect();
        for o in others {
            self.set_cut(id, o, cut);
            self.set_cut(o, id, cut);
        }
    }

    fn passes(&self, from: u64, to: u64) -> bool {
        let mut f = self.faults.lock();
        if f.cut.contains(&(from, to)) {
            return false;
        }
        let drop_ppm = f.drop_ppm;
        drop_ppm == 0 || f.rng.gen_range(0..1_000_000) >= drop_ppm
    }

    fn node(&self, id: u64) -> Option<Arc<Node>> {
        self.nodes.read().get(&id).and_then(Weak::upgrade)
    }

    /// A snapshot message: the file goes first, then the message, then
    /// the sender hears whether it arrived (raft waits for that).
    fn deliver_snapshot(&self, from: &Arc<Node>, to: &Arc<Node>, m: Message) {
        let index = m.get_snapshot().get_metadata().index;
        let src = snapshot::file_path(&from.snapshot_dir(), index);
        let dir = to.snapshot_dir();
        let copied = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::copy(&src, snapshot::file_path(&dir, index)))
            .is_ok();
        if copied {
            to.step(m);
        }
        from.report_snapshot(to.id(), copied);
    }
}

/// One member's side of the network.
pub struct MemTransport {
    from: u64,
    net: Arc<MemNetwork>,
}

impl Transport for MemTransport {
    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            let Some(node) = self.net.node(to) else {
                continue; // not started, or stopped: raft retransmits
            };
            if !self.net.passes(self.from, to) {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    if let Some(me) = self.net.node(self.from) {
                        me.report_snapshot(to, false);
                    }
                }
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                if let Some(me) = self.net.node(self.from) {
                    self.net.deliver_snapshot(&me, &node, m);
                }
                continue;
            }
            node.step(m);
        }
    }

    fn update_peers(&self, _peers: Vec<(u64, String)>) {}

    fn peers_below(&self, wire: u32) -> Vec<u64> {
        let wires = self.net.wires.read();
        wires
            .iter()
            .filter(|(id, w)| **id != self.from && **w < wire)
            .map(|(id, _)| *id)
            .collect()
    }
}
