//! One simulated run: the members, their disks and clocks, the network,
//! the clients and the fault plan, driven by one event queue in virtual
//! time. Every choice (which message is lost, when a loop thread runs,
//! which member a client asks, what a crash keeps) comes from one of the
//! seed's random streams, so a seed replays bit for bit.
//!
//! This file sets a run up (the members, their configuration, the first
//! events) and holds the world's state; the rest is in rooms:
//! `step` (the event loop and each member's loop), `deliver` (messages
//! between members), `register` and `lease` (the clients), `faults` (the
//! plan's faults applied), `membership`, `secrets`, `probes`, `watch`
//! (their workloads and checks), `durability` (what a crash must keep),
//! `tasks` (futures of the real APIs) and `end` (final reads and checks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secretd_store::clock::SimTime;
use secretd_store::cluster::{self, Member as ClusterMember};
use secretd_store::db::MemDisk;
use secretd_store::mvcc::WriteResult;
use secretd_store::node::{JoinInfo, Node, NodeConfig, Reply, Stepper};
use secretd_store::StoreError;

use crate::clients::{History, Pending};
use crate::faults::Planned;
use crate::invariants::Invariants;
use crate::net::{Links, Outbox};
use crate::trace::Trace;
use crate::Options;

const TOKEN: &str = "sim";
/// Virtual time origin: clocks may jump back this far.
const CLOCK_ORIGIN_MS: u64 = 1_000_000;
/// Virtual time given to the cluster to heal and converge after the faults.
const SETTLE_MS: u64 = 6_000;

/// Something that happens at a moment of virtual time.
enum Ev {
    Tick(usize),
    /// A member's loop thread gets the CPU.
    Run(usize),
    Deliver {
        from: usize,
        to: usize,
        msg: Box<Message>,
    },
    Client(usize),
    Lease,
    /// The secrets client's turn.
    Secret,
    /// The limit-probing client's turn.
    Probe,
    /// Every member's keyring syncs (what `Keys::spawn_sync` does).
    KeySync,
    FaultStart(usize),
    FaultEnd(usize),
    /// The operator tries a refused removal again (fault, member slot).
    RetryRemoval(usize, usize),
    Settle,
    /// `durability::LEADER_WITHIN_MS` after settling: is there a leader?
    CheckLeader,
    FinalReads,
}

mod deliver;
mod durability;
mod end;
mod faults;
mod lease;
mod membership;
mod probes;
mod register;
mod secrets;
mod step;
mod tasks;
mod watch;

use durability::Durable;

/// What an operation run as a future came to.
enum Done {
    Removed {
        slot: usize,
        ok: bool,
    },
    Added {
        slot: usize,
        member_id: u64,
        join: Option<JoinInfo>,
    },
    MembershipTimedOut,
    Secret(secrets::SecretDone),
    Probe {
        slot: usize,
        what: String,
        refused_with: Option<StoreError>,
        got: Option<Result<(), StoreError>>,
    },
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = Done>>>;

/// A running incarnation of a member.
struct Up {
    node: Arc<Node>,
    /// The secrets object store and keyring over `node`.
    objects: Arc<secretd_secrets::store::ObjectStore>,
    stepper: Stepper,
    /// The lease this incarnation has been seen to hold.
    lease_seen: Option<i64>,
    /// The (term, leading) last written to the trace.
    noted_role: (u64, bool),
    /// This incarnation's watcher: its log's index and its stream.
    watcher: Option<(usize, secretd_store::watch::WatchInbox)>,
}

struct Member {
    /// The member's raft id (a new one each time it joins again).
    id: u64,
    /// How many times it was removed and joined again.
    generation: u32,
    /// Removed from the cluster and not (yet) back.
    removed: bool,
    cfg: NodeConfig,
    disk: Arc<MemDisk>,
    time: Arc<SimTime>,
    offset_ms: i64,
    outbox: Arc<Outbox>,
    up: Option<Up>,
    run_scheduled: bool,
    /// What the member had made durable when it crashed: raft state and
    /// the last log entry, which it must still have after the restart.
    at_crash: Option<Durable>,
    /// The last configuration change this incarnation applied, and the
    /// voters before it.
    last_conf_index: u64,
    prev_voters: Vec<u64>,
}

struct Client {
    pending: Option<Pending>,
    next_value: i64,
}

struct LeaseClient {
    id: i64,
    /// Granted and acknowledged.
    live: bool,
    last_ack_ms: Option<u64>,
    pending: Option<(usize, Reply<WriteResult>, u64)>,
}

pub struct World {
    opts: Options,
    _dir: tempfile::TempDir,
    now_ms: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    members: Vec<Member>,
    links: Links,
    plan: Vec<Planned>,
    active: BTreeSet<usize>,
    net_rng: StdRng,
    sched_rng: StdRng,
    client_rng: StdRng,
    crash_rng: StdRng,
    /// The limit-probing client's stream (its own, so that it changes no
    /// other draw).
    probe_rng: StdRng,
    probes_sent: u64,
    clients: Vec<Client>,
    lease: LeaseClient,
    /// Sum of every forward clock step so far: leases may expire that much
    /// early on a leader whose clock jumped.
    clock_forward_ms: u64,
    settling: bool,
    /// Futures in flight: the virtual time they give up at, what they come
    /// to then, and the member slots whose state they hold (a member that
    /// crashes takes them with it: a dead process writes no more files).
    tasks: Vec<(u64, Task, Done, Vec<usize>)>,
    /// The secrets workload and the keyring faults.
    secrets: secrets::SecretsState,
    /// Every watcher's log, for the watch checker at the end.
    watch_logs: Vec<secretd_jepsen::check::watch::WatcherLog>,
    /// The newest configuration any member applied: (the change's index,
    /// the voters after it). What liveness is judged against: a member
    /// that missed the change still counts the voters before it.
    latest_conf: (u64, Vec<u64>),
    /// When a member last stopped, started or changed configuration: the
    /// liveness check counts from the later of this and the settling.
    disrupted_ms: u64,
    /// The membership fault whose removal or re-join is under way, and
    /// its slot: one at a time, and only that fault's end adds it back.
    changing: Option<(usize, usize)>,
    pub history: History,
    pub invariants: Invariants,
    pub trace: Trace,
    events: u64,
}

impl World {
    pub fn new(seed: u64, opts: &Options, plan: Vec<Planned>) -> std::io::Result<World> {
        // Snapshot and keyring files: on tmpfs where there is one, so their
        // fsyncs cost nothing.
        let shm = Path::new("/dev/shm");
        let mut b = tempfile::Builder::new();
        b.prefix("secretd-sim");
        let dir = if shm.is_dir() {
            b.tempdir_in(shm)
        } else {
            b.tempdir()
        }?;
        let mut sched_rng = StdRng::seed_from_u64(seed ^ 0x5c4e_d001);
        let members = cluster_members(opts.nodes);
        let members = members
            .iter()
            .enumerate()
            .map(|(slot, m)| {
                // Fixed per member and different: raft-rs's own randomised
                // timeout cannot be seeded.
                let election_ticks = 10 + 2 * slot + sched_rng.gen_range(0..2);
                Member::new(m.id, member_config(m, &members, dir.path(), election_ticks))
            })
            .collect();
        let clients = (0..opts.clients)
            .map(|c| Client {
                pending: None,
                next_value: (c as i64 + 1) * 1_000_000,
            })
            .collect();
        let mut w = World {
            opts: opts.clone(),
            _dir: dir,
            now_ms: 0,
            seq: 0,
            queue: BTreeMap::new(),
            members,
            links: Links::default(),
            plan,
            active: BTreeSet::new(),
            net_rng: StdRng::seed_from_u64(seed ^ 0x0e7_7000),
            sched_rng,
            client_rng: StdRng::seed_from_u64(seed ^ 0xc11e_0700),
            crash_rng: StdRng::seed_from_u64(seed ^ 0xc4a5_4000),
            probe_rng: StdRng::seed_from_u64(seed ^ 0x9b0b_e500),
            probes_sent: 0,
            clients,
            lease: LeaseClient {
                id: 1,
                live: false,
                last_ack_ms: None,
                pending: None,
            },
            clock_forward_ms: 0,
            settling: false,
            tasks: Vec::new(),
            secrets: secrets::SecretsState::default(),
            watch_logs: Vec::new(),
            changing: None,
            disrupted_ms: 0,
            latest_conf: (0, Vec::new()),
            history: History::new(),
            invariants: Invariants::default(),
            trace: Trace::new(opts.record),
            events: 0,
        };
        w.setup();
        Ok(w)
    }

    fn setup(&mut self) {
        for slot in 0..self.members.len() {
            self.start_member(slot);
            let phase = self.sched_rng.gen_range(0..100);
            self.at(phase, Ev::Tick(slot));
        }
        for c in 0..self.clients.len() {
            let start = 500 + self.client_rng.gen_range(0..500);
            self.at(start, Ev::Client(c));
        }
        self.at(2_000, Ev::Lease);
        self.at(1_500, Ev::Secret);
        self.at(1_800, Ev::Probe);
        self.at(2_000, Ev::KeySync);
        for i in 0..self.plan.len() {
            let keep = self
                .opts
                .keep_faults
                .as_ref()
                .is_none_or(|k| k.contains(&i));
            if keep {
                self.at(self.plan[i].at_ms, Ev::FaultStart(i));
                self.at(self.plan[i].until_ms, Ev::FaultEnd(i));
            }
        }
        self.at(self.opts.duration_ms, Ev::Settle);
        self.at(
            self.opts.duration_ms + durability::LEADER_WITHIN_MS,
            Ev::CheckLeader,
        );
        self.at(self.opts.duration_ms + SETTLE_MS, Ev::FinalReads);
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

impl Member {
    fn new(id: u64, cfg: NodeConfig) -> Member {
        Member {
            id,
            generation: 0,
            removed: false,
            cfg,
            disk: MemDisk::new(),
            time: SimTime::new(CLOCK_ORIGIN_MS),
            offset_ms: 0,
            outbox: Arc::new(Outbox::default()),
            up: None,
            run_scheduled: false,
            at_crash: None,
            last_conf_index: 0,
            prev_voters: Vec::new(),
        }
    }
}

/// A member's configuration: fast ticks are not needed (time is virtual),
/// small snapshot thresholds are (so crashes and joins meet snapshots).
fn member_config(
    m: &ClusterMember,
    all: &[ClusterMember],
    dir: &Path,
    election_ticks: usize,
) -> NodeConfig {
    NodeConfig {
        name: m.name.clone(),
        data_dir: dir.join(&m.name),
        initial_members: all.to_vec(),
        cluster_token: TOKEN.into(),
        client_urls: vec![format!("http://{}.sim:2379", m.name)],
        tick_ms: 100,
        election_ticks,
        heartbeat_ticks: 1,
        snapshot_count: 200,
        snapshot_catchup_entries: 50,
        max_request_bytes: crate::probes::MAX_REQUEST_BYTES,
        max_txn_ops: crate::probes::MAX_TXN_OPS,
        ..Default::default()
    }
}

fn cluster_members(n: usize) -> Vec<ClusterMember> {
    (0..n)
        .map(|i| {
            let peer_urls = vec![format!("http://m{i}.sim:2380")];
            ClusterMember {
                id: cluster::member_id(&peer_urls, TOKEN),
                name: format!("m{i}"),
                peer_urls,
            }
        })
        .collect()
}

fn clock_ms(now_ms: u64, offset_ms: i64) -> u64 {
    (CLOCK_ORIGIN_MS + now_ms).saturating_add_signed(offset_ms)
}
