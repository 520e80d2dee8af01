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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
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
            // Two removals at once could leave a 3-node cluster one member.
            let removals = [&fault, &second]
                .iter()
                .filter(|f| matches!(f, Fault::Member(_) | Fault::Corrupt(_)))
                .count();
            if removals < 2 && (node_of(&second).is_none() || node_of(&second) != node_of(&fault)) {
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

/// How long damage may go unfound after the damaged node restarts.
const CORRUPT_FOUND_WITHIN_MS: u64 = 30_000;

/// Overlapping slots: this many in that many.
const OVERLAP_ONE_IN: (u32, u32) = (1, 3);

/// One fault of `kind`, its targets drawn from `rng`. (A leader's
/// fallback is the shuffle's first node, drawn anyway: adding draws would
/// change every seed's schedule.)
fn draw(rng: &mut StdRng, kind: Kind, n: usize, disk_node: Option<usize>) -> Fault {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let fallback = order[0];
    let target = |rng: &mut StdRng| {
        if rng.gen_bool(0.5) {
            Target::Leader { fallback }
        } else {
            Target::Node(rng.gen_range(0..n))
        }
    };
    match kind {
        Kind::Partition => Fault::Partition(match rng.gen_range(0..5) {
            0 => Shape::Halves(order),
            1 => Shape::IsolateLeader { fallback },
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
        Kind::Corrupt => Fault::Corrupt(order[0]),
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
        | Fault::Corrupt(i)
        | Fault::Keys(KeysFault::Rotate(i) | KeysFault::Autolock(i)) => Some(*i),
        _ => None,
    }
}

/// What the nemesis did to the cluster and is not undone yet. An entry is
/// cleared only when its undo worked, so a later heal retries the rest.
#[derive(Default)]
struct Damage {
    partitioned: bool,
    killed: BTreeSet<usize>,
    paused: BTreeSet<usize>,
    clocks: BTreeSet<usize>,
    removed: Option<Removed>,
    disk_full: bool,
    autolocked: bool,
    /// A CORRUPT alarm may be raised (by the leader's periodic check): the
    /// heal disarms it once the damaged member is rebuilt.
    corrupt_alarm: bool,
}

/// A member removed from the cluster (its data wiped), to be added back.
struct Removed {
    node: usize,
    /// Its new peer URL, once chosen: chosen once, since choosing again
    /// would give back the removed member's URL, and so its ID.
    peer_url: Option<String>,
}

/// The nodes, through a lock a panicked holder did not poison for good
/// (a free function: it borrows the field, not the whole nemesis).
fn lock(nodes: &Mutex<Nodes>) -> std::sync::MutexGuard<'_, Nodes> {
    nodes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bounds of one heal: passes, and time, after which what is still undone
/// is left to the next heal (or reported, after the final one).
const HEAL_PASSES_MAX: u32 = 40;
const HEAL_BUDGET_MS: u64 = 30_000;
const HEAL_RETRY_MS: u64 = 500;

/// What a heal did, and what it could not undo.
pub struct Healed {
    /// For the history (`heal`/`final-heal` events).
    pub desc: serde_json::Value,
    /// Each fault still in place, with why; empty when all is undone.
    pub left: Vec<String>,
}

/// What the passes of one heal did, for its description.
#[derive(Default)]
struct HealLog {
    restarted: Vec<usize>,
    readded: Vec<usize>,
    /// What each keys pass found or did, in order.
    keys: Vec<String>,
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

    pub async fn start(&mut self, f: &Fault) -> Result<serde_json::Value> {
        let n = self.n();
        let desc = match f {
            Fault::Partition(shape) => {
                // Recorded before the rules go in: a rule added before an
                // error must be flushed too.
                self.damage.partitioned = true;
                let (groups, target) = self.partition(shape, n).await?;
                let name = match shape {
                    Shape::Halves(_) => "halves",
                    Shape::IsolateLeader { .. } => "isolate-leader",
                    Shape::Bridge(_) => "bridge",
                    Shape::Ring(_) => "ring",
                    Shape::OneWay(_) => "one-way (from the node)",
                };
                json!({"fault": "partition", "shape": name, "groups": groups, "target": target})
            }
            Fault::Kill(t) => {
                let (i, target) = self.resolve(t).await;
                lock(&self.nodes).kill(i);
                self.damage.killed.insert(i);
                json!({"fault": "kill", "node": i + 1, "target": target})
            }
            Fault::Pause(t) => {
                let (i, target) = self.resolve(t).await;
                lock(&self.nodes).pause(i);
                self.damage.paused.insert(i);
                json!({"fault": "pause", "node": i + 1, "target": target})
            }
            Fault::ClockStep(i, off) => {
                self.damage.clocks.insert(*i);
                lock(&self.nodes).set_clock_offset(*i, *off)?;
                json!({"fault": "clock-step", "node": i + 1, "offset_s": off})
            }
            Fault::ClockStrobe(i, off) => {
                let nodes = self.nodes.clone();
                let (i, off) = (*i, *off);
                self.strobe = Some(tokio::spawn(async move {
                    let mut on = false;
                    loop {
                        on = !on;
                        let _ = lock(&nodes).set_clock_offset(i, if on { off } else { 0 });
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }));
                self.damage.clocks.insert(i);
                json!({"fault": "clock-strobe", "node": i + 1, "offset_s": off})
            }
            Fault::Member(i) => {
                let removed = self.remove_member(*i).await?;
                if removed {
                    self.damage.removed = Some(Removed {
                        node: *i,
                        peer_url: None,
                    });
                }
                json!({"fault": "member-remove", "node": i + 1, "removed": removed})
            }
            Fault::Disk => {
                let i = lock(&self.nodes).disk_node().unwrap_or(0);
                self.damage.disk_full = true;
                lock(&self.nodes).fill_disk(i)?;
                json!({"fault": "disk-full", "node": i + 1})
            }
            Fault::Keys(k) => self.keys_fault(k).await?,
            Fault::Corrupt(i) => self.corrupt(*i).await?,
        };
        Ok(desc)
    }

    /// Damages node `i`'s keyspace while it is stopped, restarts it, and
    /// waits for the damage to be found: the node refusing to start
    /// (initial check) or a CORRUPT alarm naming it (the leader's periodic
    /// check). Found or not, the node is then removed with its data and
    /// re-added by the heal, as an operator repairs it. Not found in time
    /// is a verdict of its own.
    async fn corrupt(&mut self, i: usize) -> Result<serde_json::Value> {
        let damaged = {
            let mut nodes = lock(&self.nodes);
            nodes.kill(i);
            let d = nodes.damage_record(i);
            nodes.start(i)?;
            d?
        };
        self.damage.corrupt_alarm = true;
        let name = format!("n{}", i + 1);
        let t0 = Instant::now();
        let found = loop {
            if !lock(&self.nodes).alive(i) {
                break Some("refused to start");
            }
            if self.alarm_names(i, &name).await {
                break Some("CORRUPT alarm");
            }
            if t0.elapsed() >= Duration::from_millis(CORRUPT_FOUND_WITHIN_MS) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if found.is_none() {
            self.crashes.push(format!(
                "{name}: a damaged record ({damaged}) was not found within {} s",
                CORRUPT_FOUND_WITHIN_MS / 1000
            ));
        }
        let removed = self.remove_member(i).await?;
        if removed {
            self.damage.removed = Some(Removed {
                node: i,
                peer_url: None,
            });
        } else {
            lock(&self.nodes).kill(i);
            self.damage.killed.insert(i);
        }
        Ok(
            json!({"fault": "corrupt-record", "node": i + 1, "damaged": damaged,
            "found": found, "found_after_ms": t0.elapsed().as_millis() as u64, "removed": removed}),
        )
    }

    /// The CORRUPT alarms member `via` lists, if it answers.
    async fn corrupt_alarms(&self, via: usize) -> Option<Vec<etcd::AlarmMember>> {
        let get = etcd::AlarmRequest {
            action: etcd::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: etcd::AlarmType::Corrupt as i32,
        };
        let mut m = etcd::maintenance_client::MaintenanceClient::new(self.clients.channel(via));
        match tokio::time::timeout(Duration::from_secs(2), m.alarm(get)).await {
            Ok(Ok(r)) => Some(r.into_inner().alarms),
            _ => None,
        }
    }

    /// Whether a member other than `i` lists a CORRUPT alarm for `name`.
    async fn alarm_names(&self, i: usize, name: &str) -> bool {
        for via in (0..self.n()).filter(|&v| v != i) {
            let Some(id) = self.clients.member_id(via, name).await else {
                continue;
            };
            if let Some(alarms) = self.corrupt_alarms(via).await {
                return alarms.iter().any(|a| a.member_id == id);
            }
        }
        false
    }

    /// Disarms every CORRUPT alarm through any member; whether it worked.
    async fn disarm_corrupt(&self) -> bool {
        for via in 0..self.n() {
            let Some(alarms) = self.corrupt_alarms(via).await else {
                continue;
            };
            let mut m = etcd::maintenance_client::MaintenanceClient::new(self.clients.channel(via));
            let mut all = true;
            for a in alarms {
                let off = etcd::AlarmRequest {
                    action: etcd::alarm_request::AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                all &= matches!(
                    tokio::time::timeout(Duration::from_secs(5), m.alarm(off)).await,
                    Ok(Ok(_))
                );
            }
            return all;
        }
        false
    }

    async fn keys_fault(&mut self, k: &KeysFault) -> Result<serde_json::Value> {
        let urls = self.clients.urls.clone();
        let keys = self
            .keys
            .as_mut()
            .ok_or_else(|| anyhow!("the keys nemesis is not enabled"))?;
        Ok(match k {
            KeysFault::Rotate(i) => {
                let retired = keys.rotate(&urls[*i]).await?;
                json!({"fault": "keys-rotate", "node": i + 1, "destroyed": retired})
            }
            KeysFault::Autolock(i) => {
                // From the attempt on: a command that failed or timed out
                // may still have switched autolock on, and the heal finds
                // out from the members either way.
                self.damage.autolocked = true;
                keys.autolock_on(&urls).await?;
                let mut nodes = lock(&self.nodes);
                nodes.kill(*i);
                nodes.start(*i)?;
                // Locked when it comes back, unless it had not followed the
                // lock yet: the heal asks the members which they are.
                json!({"fault": "keys-autolock", "node": i + 1, "restarted": true})
            }
        })
    }

    /// Puts the shape's rules in; the groups (1-based) and, for a shape
    /// aimed at the leader, how its node was chosen.
    async fn partition(
        &self,
        shape: &Shape,
        n: usize,
    ) -> Result<(Vec<Vec<usize>>, Option<&'static str>)> {
        let one = |v: &[usize]| v.iter().map(|x| x + 1).collect::<Vec<_>>();
        Ok(match shape {
            Shape::Halves(order) => {
                let (a, b) = order.split_at(n / 2);
                self.net.split(a, b)?;
                (vec![one(a), one(b)], None)
            }
            Shape::IsolateLeader { fallback } => {
                let (l, target) = self.leader_or(*fallback).await;
                let rest: Vec<usize> = (0..n).filter(|&x| x != l).collect();
                self.net.split(&[l], &rest)?;
                (vec![vec![l + 1], one(&rest)], Some(target))
            }
            Shape::Bridge(order) => {
                let bridge = order[0];
                let rest = &order[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.net.split(a, b)?;
                (vec![one(a), vec![bridge + 1], one(b)], None)
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
                (vec![one(order)], None)
            }
            Shape::OneWay(t) => {
                let (from, target) = self.resolve(t).await;
                for to in (0..n).filter(|&x| x != from) {
                    self.net.drop_link(from, to)?;
                }
                (vec![vec![from + 1]], Some(target))
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
                    lock(&self.nodes).forget(i)?;
                    return Ok(true);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(false)
    }

    /// One attempt at adding a removed member back and starting it. An
    /// add whose answer was lost may have landed: a member list that
    /// already shows its peer URL leaves only the start.
    async fn add_member_back(&self, r: &mut Removed) -> Result<()> {
        let n = self.n();
        let others: Vec<usize> = (0..n).filter(|&x| x != r.node).collect();
        let url = match &r.peer_url {
            Some(u) => u.clone(),
            None => {
                let u = lock(&self.nodes).prepare_rejoin(r.node, &others);
                r.peer_url = Some(u.clone());
                u
            }
        };
        let mut last = anyhow!("no other member answered");
        for &via in &others {
            if self.clients.has_peer_url(via, &url).await == Some(true) {
                return lock(&self.nodes).start(r.node);
            }
            let added = self
                .clients
                .cluster(via)
                .member_add(etcd::MemberAddRequest {
                    peer_ur_ls: vec![url.clone()],
                    is_learner: false,
                })
                .await;
            match added {
                Ok(_) => return lock(&self.nodes).start(r.node),
                Err(e) => last = anyhow!("MemberAdd through n{}: {}", via + 1, e.message()),
            }
        }
        Err(last)
    }

    /// Undoes every fault, restarts dead nodes and notes those that died
    /// without being killed; passes repeat, within bounds, until nothing
    /// is left undone. What is left stays recorded for the next heal.
    pub async fn heal(&mut self) -> Healed {
        if let Some(s) = self.strobe.take() {
            s.abort();
        }
        // Nodes that may be found dead without having crashed.
        let mut excused = self.damage.killed.clone();
        if self.damage.disk_full {
            excused.extend(lock(&self.nodes).disk_node());
        }
        let t0 = Instant::now();
        let mut log = HealLog::default();
        let mut passes = 0;
        let left = loop {
            passes += 1;
            let left = self.heal_pass(&mut excused, &mut log).await;
            let spent =
                passes >= HEAL_PASSES_MAX || t0.elapsed() >= Duration::from_millis(HEAL_BUDGET_MS);
            if left.is_empty() || spent || super::interrupted() {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(HEAL_RETRY_MS)).await;
        };
        let one = |v: &[usize]| v.iter().map(|x| x + 1).collect::<Vec<_>>();
        Healed {
            desc: json!({
                "restarted": one(&log.restarted),
                "re-added": one(&log.readded),
                "keys": log.keys,
                "passes": passes,
                "left": left,
            }),
            left,
        }
    }

    /// Whether autolock may still be on (the last heal could not make
    /// every member report it off and unlocked).
    pub fn autolock_left(&self) -> bool {
        self.damage.autolocked
    }

    /// One pass over the damage record: each undo that works clears its
    /// entry; the rest come back as reasons.
    async fn heal_pass(&mut self, excused: &mut BTreeSet<usize>, log: &mut HealLog) -> Vec<String> {
        let mut left = Vec::new();
        if self.damage.partitioned {
            match self.net.heal() {
                Ok(()) => self.damage.partitioned = false,
                Err(e) => left.push(format!("partition: rules not flushed: {e:#}")),
            }
        }
        let clocks = std::mem::take(&mut self.damage.clocks);
        for i in clocks {
            if let Err(e) = lock(&self.nodes).set_clock_offset(i, 0) {
                left.push(format!("clock: n{} not reset: {e:#}", i + 1));
                self.damage.clocks.insert(i);
            }
        }
        if self.damage.disk_full {
            let nodes = lock(&self.nodes);
            if let Some(i) = nodes.disk_node() {
                nodes.free_disk(i);
            }
            drop(nodes);
            self.damage.disk_full = false;
        }
        let paused = std::mem::take(&mut self.damage.paused);
        for i in paused {
            lock(&self.nodes).resume(i);
        }
        if let Some(mut r) = self.damage.removed.take() {
            match self.add_member_back(&mut r).await {
                Ok(()) => log.readded.push(r.node),
                Err(e) => {
                    left.push(format!("member: n{} not added back: {e:#}", r.node + 1));
                    self.damage.removed = Some(r);
                }
            }
        }
        let removed = self.damage.removed.as_ref().map(|r| r.node);
        for i in (0..self.n()).filter(|&i| Some(i) != removed) {
            let mut nodes = lock(&self.nodes);
            if nodes.alive(i) {
                // Killed, then restarted by another fault (autolock's).
                self.damage.killed.remove(&i);
                continue;
            }
            if !excused.contains(&i) {
                self.crashes.push(format!(
                    "n{} exited without being killed (at {:.1} s)",
                    i + 1,
                    self.rec.elapsed_ns() as f64 / 1e9
                ));
            }
            match nodes.start(i) {
                Ok(()) => {
                    // Running again: dying from here on is a crash.
                    excused.remove(&i);
                    self.damage.killed.remove(&i);
                    log.restarted.push(i);
                }
                Err(e) => {
                    excused.insert(i);
                    self.damage.killed.insert(i);
                    left.push(format!("n{} not restarted: {e:#}", i + 1));
                }
            }
        }
        if self.damage.corrupt_alarm && self.damage.removed.is_none() {
            if self.disarm_corrupt().await {
                self.damage.corrupt_alarm = false;
            } else {
                left.push("corrupt: CORRUPT alarms not disarmed".into());
            }
        }
        if self.damage.autolocked {
            let members: Vec<usize> = (0..self.n()).filter(|&i| Some(i) != removed).collect();
            let pass = match self.keys.as_mut() {
                Some(keys) => keys.heal_pass(&self.clients, &members).await,
                None => None,
            };
            match pass {
                None => {
                    self.damage.autolocked = false;
                    log.keys.push("every member unlocked, autolock off".into());
                }
                Some(why) => {
                    log.keys.push(why.clone());
                    left.push(format!("keys: {why}"));
                }
            }
        }
        left
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
            Fault::Corrupt(_) => "corrupt",
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

    /// Issue 30's seeds keep the schedules they failed with (a change to
    /// the draws would silently make them test something else).
    #[test]
    fn issue_30_seeds_keep_their_schedules() {
        let short = |p: &[Planned]| {
            p.iter()
                .map(|p| {
                    let also = p.also.as_ref().map(|(_, f)| format!("+{f:?}"));
                    format!("{} {:?}{}", p.at_ms, p.fault, also.unwrap_or_default())
                })
                .collect::<Vec<_>>()
        };
        let kinds = Kind::parse_list("keys,kill").unwrap();
        assert_eq!(
            short(&plan(88101, &kinds, 5, 60_000, None)),
            [
                "3000 Kill(Node(2))",
                "11344 Kill(Leader { fallback: 0 })",
                "22242 Keys(Rotate(0))",
                "31131 Kill(Leader { fallback: 3 })+Keys(Autolock(3))",
                "38395 Keys(Rotate(0))",
                "45881 Kill(Leader { fallback: 2 })+Keys(Autolock(2))",
            ]
        );
        let kinds = Kind::parse_list("keys").unwrap();
        let p = short(&plan(89102, &kinds, 5, 60_000, None));
        assert_eq!(
            &p[..2],
            ["3000 Keys(Autolock(0))", "12136 Keys(Autolock(2))"]
        );
    }

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
