//! Faults. The whole schedule (when, what, against which node, which
//! partition shape) is drawn from the run's seed before the run starts, so
//! a seed reproduces its fault schedule; only "the leader" is resolved when
//! the fault starts. Quiet, fault (sometimes two overlapping), heal,
//! repeat; then a final heal.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

use super::client::{pb::etcdserverpb as etcd, Clients};
use super::history::Recorder;
use super::keys::KeysState;
use super::net::Net;
use super::nodes::Nodes;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Partition,
    Kill,
    Pause,
    Clock,
    Member,
    Disk,
    Keys,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Partition,
        Kind::Kill,
        Kind::Pause,
        Kind::Clock,
        Kind::Member,
        Kind::Disk,
        Kind::Keys,
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
        }
    }

    /// `partition,kill` or `all`.
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
                None => bail!(
                    "unknown nemesis {w:?}: choose from partition, kill, pause, clock, member, disk, keys, all"
                ),
            }
        }
        Ok(out.into_iter().collect())
    }
}

#[derive(Clone, Debug)]
pub enum Target {
    Leader,
    Node(usize),
}

#[derive(Clone, Debug)]
pub enum Shape {
    /// The shuffled nodes cut in two halves.
    Halves(Vec<usize>),
    IsolateLeader,
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

const FIRST_FAULT_MS: u64 = 3000;
const QUIET_MS: (u64, u64) = (2000, 4000);
const FAULT_MS: (u64, u64) = (4000, 8000);
/// Time left at the end with no fault, before the final heal.
const TAIL_MS: u64 = 2000;

/// The fault schedule for a run of `time_limit_ms` on `n` nodes. About one
/// slot in three (when several kinds are enabled) overlaps a second fault
/// of another kind with the first, started a quarter to half-way through
/// it and healed with it: a partition during a pause, a kill during a
/// membership change.
pub fn plan(
    seed: u64,
    kinds: &[Kind],
    n: usize,
    time_limit_ms: u64,
    disk_node: Option<usize>,
) -> Vec<Planned> {
    let mut rng: StdRng = rand::SeedableRng::seed_from_u64(seed ^ 0x6e656d65);
    let mut out = Vec::new();
    let mut t = FIRST_FAULT_MS;
    if kinds.is_empty() {
        return out;
    }
    loop {
        let duration_ms = rng.gen_range(FAULT_MS.0..=FAULT_MS.1);
        if t + duration_ms + TAIL_MS > time_limit_ms {
            return out;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let fault = draw(&mut rng, kind, n, disk_node);
        let mut also = None;
        if kinds.len() > 1 && rng.gen_ratio(OVERLAP_ONE_IN.0, OVERLAP_ONE_IN.1) {
            let others: Vec<Kind> = kinds.iter().copied().filter(|k| *k != kind).collect();
            let second_kind = others[rng.gen_range(0..others.len())];
            let second = draw(&mut rng, second_kind, n, disk_node);
            let offset_ms = rng.gen_range(duration_ms / 4..=duration_ms / 2);
            // Two faults aimed at the same node by name would undo or
            // confuse each other (restart what the other removed).
            if node_of(&second).is_none() || node_of(&second) != node_of(&fault) {
                also = Some((offset_ms, second));
            }
        }
        out.push(Planned {
            at_ms: t,
            duration_ms,
            fault,
            also,
        });
        t += duration_ms + rng.gen_range(QUIET_MS.0..=QUIET_MS.1);
    }
}

/// Overlapping slots: this many in that many.
const OVERLAP_ONE_IN: (u32, u32) = (1, 3);

/// One fault of `kind`, its targets drawn from `rng`.
fn draw(rng: &mut StdRng, kind: Kind, n: usize, disk_node: Option<usize>) -> Fault {
    let target = |rng: &mut StdRng| {
        if rng.gen_bool(0.5) {
            Target::Leader
        } else {
            Target::Node(rng.gen_range(0..n))
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    match kind {
        Kind::Partition => Fault::Partition(match rng.gen_range(0..5) {
            0 => Shape::Halves(order),
            1 => Shape::IsolateLeader,
            2 => Shape::Bridge(order),
            3 => Shape::Ring(order),
            _ => Shape::OneWay(target(rng)),
        }),
        Kind::Kill => Fault::Kill(target(rng)),
        Kind::Pause => Fault::Pause(target(rng)),
        Kind::Clock => {
            let offset = rng.gen_range(5..=120) * if rng.gen_bool(0.5) { 1 } else { -1 };
            if rng.gen_bool(0.5) {
                Fault::ClockStep(order[0], offset)
            } else {
                Fault::ClockStrobe(order[0], offset)
            }
        }
        Kind::Member => Fault::Member(order[0]),
        Kind::Disk => match disk_node {
            Some(_) => Fault::Disk,
            None => Fault::Kill(target(rng)),
        },
        Kind::Keys => Fault::Keys(if rng.gen_bool(0.5) {
            KeysFault::Rotate(order[0])
        } else {
            KeysFault::Autolock(order[0])
        }),
    }
}

/// The node a fault names, if it names one (not "the leader").
fn node_of(f: &Fault) -> Option<usize> {
    match f {
        Fault::Kill(Target::Node(i))
        | Fault::Pause(Target::Node(i))
        | Fault::Partition(Shape::OneWay(Target::Node(i)))
        | Fault::ClockStep(i, _)
        | Fault::ClockStrobe(i, _)
        | Fault::Member(i)
        | Fault::Keys(KeysFault::Rotate(i) | KeysFault::Autolock(i)) => Some(*i),
        _ => None,
    }
}

/// What the nemesis did to the cluster, for healing it.
#[derive(Default)]
struct Damage {
    partitioned: bool,
    killed: BTreeSet<usize>,
    paused: BTreeSet<usize>,
    clocks: BTreeSet<usize>,
    removed: Option<usize>,
    disk_full: bool,
    autolocked: bool,
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
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn resolve(&self, t: &Target) -> usize {
        match t {
            Target::Node(i) => *i,
            Target::Leader => self.clients.leader().await.unwrap_or(0),
        }
    }

    pub async fn start(&mut self, f: &Fault) -> Result<serde_json::Value> {
        let n = self.n();
        let desc = match f {
            Fault::Partition(shape) => {
                let groups = self.partition(shape, n).await?;
                self.damage.partitioned = true;
                let name = match shape {
                    Shape::Halves(_) => "halves",
                    Shape::IsolateLeader => "isolate-leader",
                    Shape::Bridge(_) => "bridge",
                    Shape::Ring(_) => "ring",
                    Shape::OneWay(_) => "one-way (from the node)",
                };
                json!({"fault": "partition", "shape": name, "groups": groups})
            }
            Fault::Kill(t) => {
                let i = self.resolve(t).await;
                self.nodes.lock().unwrap_or_else(|e| e.into_inner()).kill(i);
                self.damage.killed.insert(i);
                json!({"fault": "kill", "node": i + 1})
            }
            Fault::Pause(t) => {
                let i = self.resolve(t).await;
                self.nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pause(i);
                self.damage.paused.insert(i);
                json!({"fault": "pause", "node": i + 1})
            }
            Fault::ClockStep(i, off) => {
                self.nodes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_clock_offset(*i, *off)?;
                self.damage.clocks.insert(*i);
                json!({"fault": "clock-step", "node": i + 1, "offset_s": off})
            }
            Fault::ClockStrobe(i, off) => {
                let nodes = self.nodes.clone();
                let (i, off) = (*i, *off);
                self.strobe = Some(tokio::spawn(async move {
                    let mut on = false;
                    loop {
                        on = !on;
                        let _ = nodes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .set_clock_offset(i, if on { off } else { 0 });
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }));
                self.damage.clocks.insert(i);
                json!({"fault": "clock-strobe", "node": i + 1, "offset_s": off})
            }
            Fault::Member(i) => {
                let removed = self.remove_member(*i).await?;
                if removed {
                    self.damage.removed = Some(*i);
                }
                json!({"fault": "member-remove", "node": i + 1, "removed": removed})
            }
            Fault::Disk => {
                let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
                let i = nodes.disk_node().unwrap_or(0);
                nodes.fill_disk(i)?;
                self.damage.disk_full = true;
                json!({"fault": "disk-full", "node": i + 1})
            }
            Fault::Keys(k) => self.keys_fault(k).await?,
        };
        Ok(desc)
    }

    async fn keys_fault(&mut self, k: &KeysFault) -> Result<serde_json::Value> {
        let urls = self.clients.urls.clone();
        let keys = self
            .keys
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the keys nemesis is not enabled"))?;
        Ok(match k {
            KeysFault::Rotate(i) => {
                let retired = keys.rotate(&urls[*i]).await?;
                json!({"fault": "keys-rotate", "node": i + 1, "destroyed": retired})
            }
            KeysFault::Autolock(i) => {
                keys.autolock_on(&urls).await?;
                self.damage.autolocked = true;
                let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
                nodes.kill(*i);
                nodes.start(*i)?;
                json!({"fault": "keys-autolock", "restarted-locked": i + 1})
            }
        })
    }

    async fn partition(&self, shape: &Shape, n: usize) -> Result<Vec<Vec<usize>>> {
        let one = |v: &[usize]| v.iter().map(|x| x + 1).collect::<Vec<_>>();
        Ok(match shape {
            Shape::Halves(order) => {
                let (a, b) = order.split_at(n / 2);
                self.net.split(a, b)?;
                vec![one(a), one(b)]
            }
            Shape::IsolateLeader => {
                let l = self.clients.leader().await.unwrap_or(0);
                let rest: Vec<usize> = (0..n).filter(|&x| x != l).collect();
                self.net.split(&[l], &rest)?;
                vec![vec![l + 1], one(&rest)]
            }
            Shape::Bridge(order) => {
                let bridge = order[0];
                let rest = &order[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.net.split(a, b)?;
                vec![one(a), vec![bridge + 1], one(b)]
            }
            Shape::Ring(order) => {
                for (pos, &x) in order.iter().enumerate() {
                    for (qos, &y) in order.iter().enumerate() {
                        let d = pos.abs_diff(qos);
                        let neighbour = d <= 1 || d == n - 1;
                        if !neighbour {
                            self.net.drop_link(y, x)?;
                        }
                    }
                }
                vec![one(order)]
            }
            Shape::OneWay(t) => {
                let from = self.resolve(t).await;
                for to in (0..n).filter(|&x| x != from) {
                    self.net.drop_link(from, to)?;
                }
                vec![vec![from + 1]]
            }
        })
    }

    async fn remove_member(&self, i: usize) -> Result<bool> {
        let name = format!("n{}", i + 1);
        let n = self.n();
        for _ in 0..10 {
            for via in (0..n).filter(|&v| v != i) {
                let Some(id) = self.clients.member_id(via, &name).await else {
                    continue;
                };
                let r = self
                    .clients
                    .cluster(via)
                    .member_remove(etcd::MemberRemoveRequest { id })
                    .await;
                if r.is_ok() {
                    self.nodes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget(i)?;
                    return Ok(true);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(false)
    }

    async fn add_member_back(&self, i: usize) -> Result<()> {
        let n = self.n();
        let others: Vec<usize> = (0..n).filter(|&x| x != i).collect();
        let url = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prepare_rejoin(i, &others);
        for _ in 0..40 {
            for &via in &others {
                let r = self
                    .clients
                    .cluster(via)
                    .member_add(etcd::MemberAddRequest {
                        peer_ur_ls: vec![url.clone()],
                        is_learner: false,
                    })
                    .await;
                if r.is_ok() {
                    return self
                        .nodes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .start(i);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("could not add n{} back to the cluster", i + 1)
    }

    /// Undoes every fault, restarts dead nodes, and notes nodes that died
    /// without being killed.
    pub async fn heal(&mut self) -> Result<serde_json::Value> {
        if let Some(s) = self.strobe.take() {
            s.abort();
        }
        let d = std::mem::take(&mut self.damage);
        if d.partitioned {
            self.net.heal()?;
        }
        for &i in &d.clocks {
            self.nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_clock_offset(i, 0)?;
        }
        if d.disk_full {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = nodes.disk_node() {
                nodes.free_disk(i);
            }
        }
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            for &i in &d.paused {
                nodes.resume(i);
            }
        }
        let mut readded = Vec::new();
        if let Some(i) = d.removed {
            self.add_member_back(i).await?;
            readded.push(i + 1);
        }
        let mut restarted = Vec::new();
        let disk_node = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .disk_node();
        for i in 0..self.n() {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            if !nodes.alive(i) {
                let expected = d.killed.contains(&i) || (d.disk_full && disk_node == Some(i));
                if !expected {
                    self.crashes.push(format!(
                        "n{} exited without being killed (at {:.1} s)",
                        i + 1,
                        self.rec.elapsed_ns() as f64 / 1e9
                    ));
                }
                nodes.start(i)?;
                restarted.push(i + 1);
            }
        }
        let mut unlocked = serde_json::Value::Null;
        if d.autolocked {
            let urls = self.clients.urls.clone();
            if let Some(keys) = self.keys.as_mut() {
                unlocked = match keys.heal(&urls).await {
                    Ok(()) => json!("unlocked, autolock off"),
                    Err(e) => json!({"error": e.to_string()}),
                };
            }
        }
        Ok(json!({"restarted": restarted, "re-added": readded, "keys": unlocked}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(f: &Fault) -> &'static str {
        match f {
            Fault::Partition(_) => "partition",
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::ClockStep(..) | Fault::ClockStrobe(..) => "clock",
            Fault::Member(_) => "member",
            Fault::Disk => "disk",
            Fault::Keys(_) => "keys",
        }
    }

    fn describe(p: &[Planned]) -> String {
        format!("{p:?}")
    }

    #[test]
    fn a_seed_reproduces_its_schedule() {
        let all = Kind::parse_list("all").unwrap();
        let a = plan(42, &all, 5, 120_000, Some(2));
        assert!(a.len() >= 5, "{a:?}");
        let b = plan(7, &all, 5, 600_000, Some(2));
        assert!(
            b.iter().any(|p| p.also.is_some()),
            "some slots overlap: {b:?}"
        );
        for p in &b {
            if let Some((off, f)) = &p.also {
                assert!(*off < p.duration_ms, "{p:?}");
                assert_ne!(
                    format!("{:?}", kind_of(f)),
                    format!("{:?}", kind_of(&p.fault))
                );
            }
        }
        assert_eq!(describe(&a), describe(&plan(42, &all, 5, 120_000, Some(2))));
        assert_ne!(describe(&a), describe(&plan(43, &all, 5, 120_000, Some(2))));
        // Faults never overlap and end before the tail.
        for w in a.windows(2) {
            assert!(w[0].at_ms + w[0].duration_ms < w[1].at_ms);
        }
        let last = a.last().unwrap();
        assert!(last.at_ms + last.duration_ms + TAIL_MS <= 120_000);
    }

    #[test]
    fn nemesis_names_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Kind::parse_list("kill,partition").unwrap(),
            vec![Kind::Partition, Kind::Kill]
        );
        assert_eq!(Kind::parse_list("all").unwrap().len(), 7);
        let e = Kind::parse_list("partition,flood").unwrap_err().to_string();
        assert!(e.contains("unknown nemesis \"flood\""), "{e}");
    }
}
