//! Faults. The whole schedule (when, what, against which node, which
//! partition shape) is drawn from the run's seed before the run starts, so
//! a seed reproduces its fault schedule. "The leader" is a role in that
//! schedule, resolved when the fault starts (the leader is the cluster's
//! choice, not the seed's; the fault event records which node it was, or
//! that none was known and the node the seed drew instead was hit).
//! Quiet, fault (sometimes two overlapping), heal, repeat; then a final
//! heal.
//!
//! A heal undoes what the damage record says and clears each entry only
//! once its undo worked; it repeats, within bounds, until nothing is left.
//! Whatever is still undone is carried to the next heal, and what the
//! final heal could not undo is reported with the run's verdict: a fault
//! left in place must not pass for an anomaly of secretd.
//!
//! - `plan`: the schedule, drawn from the seed.
//! - `faults`: starting each fault (and recording its damage).
//! - `damage`: the record of what is not undone yet.
//! - `heal`: undoing what the record says.

mod damage;
mod faults;
mod heal;
mod plan;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};

use super::client::Clients;
use super::history::Recorder;
use super::keys::KeysState;
use super::net::Net;
use super::nodes::Nodes;
use damage::Damage;
pub use heal::Healed;
pub use plan::plan;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Partition,
    Kill,
    Pause,
    Clock,
    Member,
    Disk,
    Keys,
    Corrupt,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Partition,
        Kind::Kill,
        Kind::Pause,
        Kind::Clock,
        Kind::Member,
        Kind::Disk,
        Kind::Keys,
        Kind::Corrupt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Partition => "partition",
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Clock => "clock",
            Kind::Member => "member",
            Kind::Disk => "disk",
            Kind::Keys => "keys",
            Kind::Corrupt => "corrupt",
        }
    }

    /// Every nemesis name, comma-separated (for messages).
    pub fn names() -> String {
        Kind::ALL.map(Kind::name).join(", ")
    }

    /// `partition,kill` or `all`, in any order and with repeats: the set,
    /// in the fixed order of [`Kind::ALL`], so the same set gives the same
    /// schedule and the same run folder however it was spelled.
    pub fn parse_list(s: &str) -> Result<Vec<Kind>> {
        let mut out = BTreeSet::new();
        for w in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if w == "all" {
                out.extend(Kind::ALL);
                continue;
            }
            match Kind::ALL.iter().find(|k| k.name() == w) {
                Some(k) => {
                    out.insert(*k);
                }
                None => bail!("unknown nemesis {w:?}: choose from {}, all", Kind::names()),
            }
        }
        if out.is_empty() {
            bail!("no nemesis given: choose from {}, all", Kind::names());
        }
        Ok(out.into_iter().collect())
    }
}

#[derive(Clone, Debug)]
pub enum Target {
    /// Whichever node leads when the fault starts; `fallback` (drawn from
    /// the seed) when no leader is known then.
    Leader {
        fallback: usize,
    },
    Node(usize),
}

#[derive(Clone, Debug)]
pub enum Shape {
    /// The shuffled nodes cut in two halves.
    Halves(Vec<usize>),
    /// The leader cut off from the rest; `fallback` as for
    /// [`Target::Leader`].
    IsolateLeader { fallback: usize },
    /// Two halves that both reach the bridge node (the first).
    Bridge(Vec<usize>),
    /// Each node reaches only its two neighbours in this order.
    Ring(Vec<usize>),
    /// Packets from the first node to every other are dropped; the other
    /// direction works.
    OneWay(Target),
}

#[derive(Clone, Debug)]
pub enum Fault {
    Partition(Shape),
    Kill(Target),
    Pause(Target),
    /// Step node's wall clock by this many seconds.
    ClockStep(usize, i64),
    /// Flip node's wall clock between 0 and this offset every 250 ms.
    ClockStrobe(usize, i64),
    Member(usize),
    Disk,
    Keys(KeysFault),
    /// One record of this stopped node's keyspace rewritten with a bit
    /// flipped (RocksDB's checksums intact); it must be found before it is
    /// served, and the node is rebuilt from its peers.
    Corrupt(usize),
}

/// The keys nemesis's faults (`keys.rs`).
#[derive(Clone, Debug)]
pub enum KeysFault {
    /// `secretctl cluster rotate-key` through this node.
    Rotate(usize),
    /// Autolock on, then this node restarted (it comes back locked).
    Autolock(usize),
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
    /// A second fault started this many ms into the first, healed with it.
    pub also: Option<(u64, Fault)>,
}

/// The nodes, through a lock a panicked holder did not poison for good
/// (a free function: it borrows the field, not the whole nemesis).
fn lock(nodes: &Mutex<Nodes>) -> std::sync::MutexGuard<'_, Nodes> {
    nodes.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Nemesis {
    pub net: Arc<Net>,
    pub nodes: Arc<Mutex<Nodes>>,
    pub clients: Clients,
    pub rec: Recorder,
    damage: Damage,
    strobe: Option<tokio::task::JoinHandle<()>>,
    /// Unexpected process exits found while healing: (node, when).
    pub crashes: Vec<String>,
    /// The keys nemesis's tool and what it did (when it is enabled).
    pub keys: Option<KeysState>,
}

impl Nemesis {
    pub fn new(
        net: Arc<Net>,
        nodes: Arc<Mutex<Nodes>>,
        clients: Clients,
        rec: Recorder,
        keys: Option<KeysState>,
    ) -> Nemesis {
        Nemesis {
            net,
            nodes,
            clients,
            rec,
            damage: Damage::default(),
            strobe: None,
            crashes: Vec::new(),
            keys,
        }
    }

    fn n(&self) -> usize {
        lock(&self.nodes).len()
    }

    /// The node a target names now, and how it was chosen.
    async fn resolve(&self, t: &Target) -> (usize, &'static str) {
        match t {
            Target::Node(i) => (*i, "named"),
            Target::Leader { fallback } => self.leader_or(*fallback).await,
        }
    }

    async fn leader_or(&self, fallback: usize) -> (usize, &'static str) {
        match self.clients.leader().await {
            Some(l) => (l, "leader"),
            None => (fallback, "leader unknown: the seed's fallback"),
        }
    }

    /// Whether autolock may still be on (the last heal could not make
    /// every member report it off and unlocked).
    pub fn autolock_left(&self) -> bool {
        self.damage.autolocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_names_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Kind::parse_list("kill,partition").unwrap(),
            vec![Kind::Partition, Kind::Kill]
        );
        assert_eq!(Kind::parse_list("all").unwrap().len(), 8);
        let e = Kind::parse_list(" , ").unwrap_err().to_string();
        assert!(e.contains("no nemesis given"), "{e}");
        let e = Kind::parse_list("partition,flood").unwrap_err().to_string();
        assert!(e.contains("unknown nemesis \"flood\""), "{e}");
    }
}
