//! One simulated run: the members, their disks and clocks, the network,
//! the clients and the fault plan, driven by one event queue in virtual
//! time. Every choice (which message is lost, when a loop thread runs,
//! which member a client asks, what a crash keeps) comes from one of the
//! seed's random streams, so a seed replays bit for bit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secretd_jepsen::check::history::Outcome;
use secretd_jepsen::check::model::RegisterOp;
use secretd_store::clock::{Clock, SimTime};
use secretd_store::cluster::{self, Member as ClusterMember};
use secretd_store::db::{Db, MemDisk};
use secretd_store::mvcc::WriteResult;
use secretd_store::node::{JoinInfo, Node, NodeConfig, Reply, Stepper};
use secretd_store::snapshot;
use secretd_store::StoreError;

use crate::clients::{self, History, Pending, Poll, Waiting};
use crate::faults::{Fault, Planned};
use crate::invariants::Invariants;
use crate::net::{Links, Outbox, SimTransport};
use crate::trace::Trace;
use crate::Options;

const TOKEN: &str = "sim";
/// Virtual time origin: clocks may jump back this far.
const CLOCK_ORIGIN_MS: u64 = 1_000_000;
/// Virtual time given to the cluster to heal and converge after the faults.
const SETTLE_MS: u64 = 6_000;
/// Slack for the lease check: ticks, elections and apply lag.
const LEASE_SLACK_MS: u64 = 1_500;
/// Rounds a member's loop runs per scheduling, at most.
const ROUNDS_PER_RUN_MAX: usize = 32;
/// Events per run, at most (a livelock is a finding, not a hang).
const EVENTS_MAX: u64 = 2_000_000;

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

mod durability;
mod membership;
mod probes;
mod secrets;
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

/// How long an operation run as a future may take before its outcome is
/// unknown.
const TASK_TIMEOUT_MS: u64 = 3_000;

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

    fn at(&mut self, time_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((time_ms, self.seq), ev);
    }

    /// Runs to the end; false if a violation stopped it early.
    pub fn run(&mut self) {
        let end_ms = self.opts.duration_ms + SETTLE_MS + 3_000;
        while let Some(((time_ms, _), ev)) = self.queue.pop_first() {
            if time_ms > end_ms || self.events >= EVENTS_MAX {
                break;
            }
            self.now_ms = time_ms;
            self.events += 1;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(ev)));
            if step.is_err() {
                let msg = crate::take_panic().unwrap_or_else(|| "(no message)".into());
                self.invariants
                    .violations
                    .push(format!("{} ms: panic: {msg}", self.now_ms));
            }
            if !self.invariants.violations.is_empty() {
                self.trace
                    .note(self.now_ms, "stopped at the first violation".into());
                return;
            }
            if self.events.is_multiple_of(256) {
                self.check_log_matching();
            }
        }
        self.finish();
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(slot) => {
                self.trace.event(self.now_ms, 1, slot as u64, 0);
                let m = &mut self.members[slot];
                m.time.set_ms(clock_ms(self.now_ms, m.offset_ms));
                if let Some(up) = &mut m.up {
                    up.stepper.tick();
                    self.schedule_run(slot);
                }
                let tick_ms = self.members[slot].cfg.tick_ms;
                self.at(self.now_ms + tick_ms, Ev::Tick(slot));
            }
            Ev::Run(slot) => {
                self.trace.event(self.now_ms, 2, slot as u64, 0);
                self.members[slot].run_scheduled = false;
                self.run_member(slot);
            }
            Ev::Deliver { from, to, msg } => self.deliver(from, to, *msg),
            Ev::Client(c) => self.client_turn(c),
            Ev::Lease => self.lease_turn(),
            Ev::Secret => self.secret_turn(),
            Ev::Probe => self.probe_turn(),
            Ev::KeySync => self.key_sync(),
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::RetryRemoval(i, slot) => {
                if self.active.contains(&i) {
                    self.remove_member(i, slot)
                }
            }
            Ev::Settle => self.settle(),
            Ev::CheckLeader => self.check_leader(),
            Ev::FinalReads => self.final_reads(),
        }
    }

    fn schedule_run(&mut self, slot: usize) {
        if !self.members[slot].run_scheduled {
            self.members[slot].run_scheduled = true;
            let delay = self.sched_rng.gen_range(0..=2);
            self.at(self.now_ms + delay, Ev::Run(slot));
        }
    }

    fn start_member(&mut self, slot: usize) {
        self.disrupted_ms = self.now_ms;
        let m = &mut self.members[slot];
        m.time.set_ms(clock_ms(self.now_ms, m.offset_ms));
        let db = Db::open_mem(m.disk.clone());
        let started = Node::open_on(m.cfg.clone(), db).and_then(|opened| {
            opened.start_stepped(
                Arc::new(SimTransport(m.outbox.clone())),
                Clock::simulated(m.time.clone()),
                // Unique across incarnations, as the wall clock makes them.
                ((self.now_ms + 1) << 24) | (slot as u64) << 16,
            )
        });
        match started {
            Ok((node, stepper)) => {
                if let Some(d) = m.at_crash.take() {
                    self.check_restart(slot, &d, &stepper);
                }
                let m = &mut self.members[slot];
                let objects = match self.secrets.objects(&node, &m.cfg.data_dir) {
                    Ok(o) => o,
                    Err(e) => {
                        self.invariants.violations.push(format!(
                            "{} ms: m{slot}'s keyring cannot load: {e}",
                            self.now_ms
                        ));
                        return;
                    }
                };
                m.up = Some(Up {
                    node,
                    objects,
                    stepper,
                    lease_seen: None,
                    noted_role: (0, false),
                    watcher: None,
                });
                self.watch_from_start(slot);
                self.schedule_run(slot);
                self.unlock_if_locked(slot);
            }
            Err(e) => self
                .invariants
                .violations
                .push(format!("{} ms: m{slot} cannot start: {e}", self.now_ms)),
        }
    }

    fn run_member(&mut self, slot: usize) {
        let now_ms = self.now_ms;
        let m = &mut self.members[slot];
        m.time.set_ms(clock_ms(now_ms, m.offset_ms));
        let Some(up) = &mut m.up else { return };
        let before = up.stepper.view();
        let voters_before = up.stepper.voters();
        let mut failed = None;
        // As the real loop: a round after every batch of inputs, with or
        // without a `Ready` (a round also sends waiting ReadIndex requests:
        // a single-voter leader has no other reason to round).
        for _ in 0..ROUNDS_PER_RUN_MAX {
            let handled = up.stepper.handle_inputs();
            let had_ready = up.stepper.has_ready();
            if let Err(e) = up.stepper.ready() {
                failed = Some(e);
                break;
            }
            if !had_ready && handled == 0 {
                break;
            }
        }
        let view = up.stepper.view();
        let applied = up.stepper.take_applied();
        let voters_after = up.stepper.voters();
        self.invariants
            .after_step(now_ms, &view, &applied, before.applied, &up.stepper);
        if let Some(e) = applied.iter().rev().find(|e| e.conf_change) {
            m.last_conf_index = e.index;
            if e.index > self.latest_conf.0 {
                self.latest_conf = (e.index, voters_after.clone());
            }
        }
        if voters_after != voters_before {
            m.prev_voters = voters_before;
            self.disrupted_ms = now_ms;
        }
        // Against what was last noted: a tick can change the term too.
        if up.noted_role != (view.term, view.is_leader) {
            up.noted_role = (view.term, view.is_leader);
            self.trace.note(
                now_ms,
                format!(
                    "m{slot} term {} {}",
                    view.term,
                    if view.is_leader {
                        "leader"
                    } else {
                        "follower/candidate"
                    }
                ),
            );
        }
        self.trace
            .event(now_ms, 3, view.commit, view.applied ^ (view.term << 40));
        // Before a removed member stops: its own log counts.
        let prev_voters = self.members[slot].prev_voters.clone();
        self.check_acknowledged(slot, &applied, &voters_after, &prev_voters);
        if let Some(e) = failed {
            if e == StoreError::Removed.to_string() {
                self.trace.note(
                    now_ms,
                    format!("m{slot} applied its own removal and stopped"),
                );
                self.members[slot].removed = true;
                self.route(slot);
                self.stop_removed(slot);
            } else {
                self.invariants
                    .violations
                    .push(format!("{now_ms} ms: m{slot} stopped: {e}"));
            }
        }
        self.check_lease(slot);
        self.drain_watcher(slot);
        self.route(slot);
        self.poll_clients();
        self.poll_tasks();
    }

    /// Takes what `slot` sent and schedules each message's fate.
    fn route(&mut self, from: usize) {
        for msg in self.members[from].outbox.take() {
            let Some(to) = self.slot_of(msg.to) else {
                continue;
            };
            let may_duplicate = msg.get_msg_type() != MessageType::MsgPropose;
            let fates = self
                .links
                .fates(&mut self.net_rng, self.now_ms, may_duplicate);
            if fates.is_empty() && msg.get_msg_type() == MessageType::MsgSnapshot {
                if let Some(up) = &self.members[from].up {
                    up.node.report_snapshot(msg.to, false);
                }
            }
            for at_ms in fates {
                self.at(
                    at_ms,
                    Ev::Deliver {
                        from,
                        to,
                        msg: Box::new(msg.clone()),
                    },
                );
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        self.trace.event(
            self.now_ms,
            4,
            ((from as u64) << 8) | to as u64,
            (msg.get_msg_type() as u64) << 48 ^ msg.term << 32 ^ msg.index,
        );
        // The real transport refuses a message for another member id (an
        // earlier incarnation of this slot).
        let passes = self.links.passes(from, to) && msg.to == self.members[to].id;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let Some(up) = &self.members[to].up else {
            return;
        };
        if is_snapshot {
            let index = msg.get_snapshot().get_metadata().index;
            let copied = passes
                && copy_snapshot(
                    &self.members[from].cfg.data_dir,
                    &self.members[to].cfg.data_dir,
                    index,
                );
            if copied {
                up.node.step(msg);
            }
            if let Some(sender) = &self.members[from].up {
                sender.node.report_snapshot(self.members[to].id, copied);
                self.schedule_run(from);
            }
        } else if passes {
            up.node.step(msg);
        } else {
            return;
        }
        self.schedule_run(to);
    }

    fn slot_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The up member that leads in the highest term, if any.
    fn leader_slot(&self) -> Option<usize> {
        self.up_members()
            .into_iter()
            .filter_map(|s| {
                let v = self.members[s].up.as_ref()?.stepper.view();
                v.is_leader.then_some((v.term, s))
            })
            .max()
            .map(|(_, s)| s)
    }

    fn up_members(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|s| self.members[*s].up.is_some())
            .collect()
    }

    fn check_log_matching(&mut self) {
        let ups = self.up_members();
        for (i, a) in ups.iter().enumerate() {
            for b in &ups[i + 1..] {
                let (sa, sb) = (&self.members[*a], &self.members[*b]);
                if let (Some(ua), Some(ub)) = (&sa.up, &sb.up) {
                    self.invariants
                        .check_log_matching(self.now_ms, &ua.stepper, &ub.stepper);
                }
            }
        }
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

fn copy_snapshot(from_dir: &Path, to_dir: &Path, index: u64) -> bool {
    let src: PathBuf = snapshot::file_path(&from_dir.join("snap"), index);
    let dir = to_dir.join("snap");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(&src, snapshot::file_path(&dir, index)))
        .is_ok()
}

// The workload and the faults.
impl World {
    fn pick_member(&mut self) -> Option<usize> {
        let ups = self.up_members();
        (!ups.is_empty()).then(|| ups[self.client_rng.gen_range(0..ups.len())])
    }

    fn client_turn(&mut self, c: usize) {
        if let Some(p) = self.clients[c].pending.take() {
            if self.now_ms < p.deadline_ms {
                self.clients[c].pending = Some(p); // a stale turn
                return;
            }
            self.trace.note(
                self.now_ms,
                format!("client {c}: {:?} on r{} timed out", p.input, p.key),
            );
            let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
            self.history.record(c as u64, p, outcome);
        }
        if self.settling {
            return;
        }
        self.issue(c, None);
    }

    /// Starts client `c`'s next operation (`read_of`: a final read of
    /// that key).
    fn issue(&mut self, c: usize, read_of: Option<(usize, usize)>) {
        let (key, input, member) = match read_of {
            Some((key, member)) => (key, RegisterOp::Read, Some(member)),
            None => {
                let key = self.client_rng.gen_range(0..clients::KEYS);
                let input = match self.client_rng.gen_range(0..10) {
                    0..=3 => RegisterOp::Read,
                    4..=7 => {
                        self.clients[c].next_value += 1;
                        RegisterOp::Write(self.clients[c].next_value)
                    }
                    _ => {
                        self.clients[c].next_value += 1;
                        let from = self.client_rng.gen_range(0..5);
                        RegisterOp::Cas(from, self.clients[c].next_value)
                    }
                };
                (key, input, self.pick_member())
            }
        };
        let Some(member) = member else {
            self.at(self.now_ms + 50, Ev::Client(c));
            return;
        };
        let Some(up) = &self.members[member].up else {
            return;
        };
        let submitted = match clients::request(key, &input) {
            Some(req) => up.node.submit(req, None).map(Waiting::Write),
            None => up.node.submit_read_index().map(Waiting::Read),
        };
        match submitted {
            Ok(waiting) => {
                let invoke = self.history.tick();
                let deadline_ms = self.now_ms + clients::OP_TIMEOUT_MS;
                self.clients[c].pending = Some(Pending {
                    key,
                    input,
                    invoke,
                    member,
                    deadline_ms,
                    waiting,
                });
                self.at(deadline_ms, Ev::Client(c));
                self.schedule_run(member);
            }
            Err(_) => self.at(self.now_ms + 10, Ev::Client(c)),
        }
    }

    fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(mut p) = self.clients[c].pending.take() else {
                continue;
            };
            let node = self.members[p.member].up.as_ref().map(|u| u.node.clone());
            let outcome = match clients::poll(&mut p, node.as_deref()) {
                Poll::Waiting => {
                    self.clients[c].pending = Some(p);
                    continue;
                }
                Poll::Done(out) => Some(Outcome::Ok(out)),
                Poll::Failed => None,
                Poll::Unknown => Some(Outcome::Unknown),
            };
            self.trace.event(self.now_ms, 5, c as u64, p.invoke);
            if self.trace.recording() {
                let applied = node
                    .as_ref()
                    .map(|_| self.members[p.member].up.as_ref().map(|u| u.stepper.view()));
                self.trace.detail(
                    self.now_ms,
                    format!(
                        "client {c} via m{}: {:?} on r{} (invoked #{}) -> {:?}; member {:?}",
                        p.member, p.input, p.key, p.invoke, outcome, applied
                    ),
                );
            }
            self.history.record(c as u64, p, outcome);
            if !self.settling {
                let think = self.client_rng.gen_range(1..30);
                self.at(self.now_ms + think, Ev::Client(c));
            }
        }
    }

    fn lease_turn(&mut self) {
        if self.settling {
            return;
        }
        self.at(self.now_ms + clients::LEASE_KEEPALIVE_MS, Ev::Lease);
        if let Some((member, mut rx, sent_ms)) = self.lease.pending.take() {
            let _ = member;
            match rx.try_recv() {
                Ok(Ok((WriteResult::LeaseGrant(_), _))) => {
                    self.lease.live = true;
                    self.lease.last_ack_ms = Some(sent_ms);
                }
                Ok(Ok((WriteResult::LeaseRenew(_), _))) => self.lease.last_ack_ms = Some(sent_ms),
                Ok(Err(secretd_store::StoreError::LeaseNotFound)) => {
                    // Gone (expired): keep going with a new one.
                    self.lease.id += 1;
                    self.lease.live = false;
                    self.lease.last_ack_ms = None;
                }
                _ => {}
            }
        }
        let Some(member) = self.pick_member() else {
            return;
        };
        let Some(up) = &self.members[member].up else {
            return;
        };
        let req = if self.lease.live {
            clients::lease_renew(self.lease.id)
        } else {
            // A fresh id for every grant attempt: an attempt whose answer
            // was lost may still land, expire and be revoked, and a member
            // catching up later must not take that revoke for one of the
            // lease the client holds.
            self.lease.id += 1;
            clients::lease_grant(self.lease.id)
        };
        if let Ok(rx) = up.node.submit(req, None) {
            self.lease.pending = Some((member, rx, self.now_ms));
            self.schedule_run(member);
        }
    }

    /// A lease revoked on `slot` while its client kept it alive is a bug,
    /// unless a leader's clock jumped forward by as much.
    fn check_lease(&mut self, slot: usize) {
        let id = self.lease.id;
        let Some(up) = &mut self.members[slot].up else {
            return;
        };
        let holds = up.node.mvcc().lessor().contains(id);
        if holds {
            up.lease_seen = Some(id);
            return;
        }
        if up.lease_seen != Some(id) {
            return;
        }
        up.lease_seen = None;
        let Some(ack_ms) = self.lease.last_ack_ms else {
            return;
        };
        let ttl_ms = clients::LEASE_TTL_S as u64 * 1000;
        let allowed_ms = ttl_ms.saturating_sub(LEASE_SLACK_MS + self.clock_forward_ms);
        let age_ms = self.now_ms.saturating_sub(ack_ms);
        if age_ms < allowed_ms {
            self.invariants.violations.push(format!(
                "{} ms: lease {id:x} revoked on m{slot} {age_ms} ms after a keepalive was \
                 acknowledged (TTL {ttl_ms} ms)",
                self.now_ms
            ));
        }
    }

    fn fault_start(&mut self, i: usize) {
        self.trace
            .note(self.now_ms, format!("fault #{i} starts: {}", self.plan[i]));
        self.active.insert(i);
        match self.plan[i].fault.clone() {
            Fault::Crash {
                member,
                keep_permille,
            } => {
                if let Some(up) = self.stop_member(member) {
                    let m = &mut self.members[member];
                    m.at_crash = Some(Durable::of(&up.stepper, m.last_conf_index));
                    let unsynced = m.disk.unsynced_batches();
                    let keep = unsynced * keep_permille as usize / 1000;
                    let keep = keep.min(self.crash_rng.gen_range(0..=unsynced));
                    let unsynced_bytes = m.disk.unsynced_file_bytes();
                    // Each log file keeps some prefix of its unsynced bytes,
                    // which may end mid-record (a torn write).
                    let rng = &mut self.crash_rng;
                    let mut kept_bytes = 0;
                    m.disk.crash(keep, &mut |extra| {
                        let k =
                            (extra * keep_permille as usize / 1000).min(rng.gen_range(0..=extra));
                        kept_bytes += k;
                        k
                    });
                    m.outbox.take();
                    self.trace.note(
                        self.now_ms,
                        format!(
                            "m{member} crashed: kept {keep} of {unsynced} unsynced batches, \
                             {kept_bytes} of {unsynced_bytes} unsynced log bytes"
                        ),
                    );
                }
            }
            Fault::ClockJump { member, by_ms } => self.jump_clock(member, by_ms),
            Fault::Membership { member } => self.remove_member(i, member),
            Fault::Shrink { member } => {
                if let Some(member) = member.or_else(|| self.leader_slot()) {
                    self.remove_member(i, member)
                }
            }
            Fault::RotateKek { member } => self.rotate_kek(member),
            Fault::Autolock { member, victim } => self.autolock_on(member, victim),
            _ => self.relink(),
        }
    }

    fn fault_end(&mut self, i: usize) {
        if !self.active.remove(&i) {
            return;
        }
        self.trace.note(self.now_ms, format!("fault #{i} ends"));
        match self.plan[i].fault.clone() {
            Fault::Crash { member, .. } => {
                if self.members[member].up.is_none() && !self.members[member].removed {
                    self.start_member(member);
                    self.trace.note(self.now_ms, format!("m{member} restarted"));
                }
            }
            Fault::ClockJump { member, by_ms } => self.jump_clock(member, -by_ms),
            Fault::Membership { member } => self.add_member_back(i, member),
            // Nothing comes back; the next membership change may begin.
            Fault::Shrink { .. } => {
                if self.changing.is_some_and(|(f, _)| f == i) {
                    self.changing = None;
                }
            }
            Fault::RotateKek { .. } => {}
            Fault::Autolock { member, .. } => self.autolock_off(member),
            _ => self.relink(),
        }
    }

    fn jump_clock(&mut self, member: usize, by_ms: i64) {
        self.members[member].offset_ms += by_ms;
        if by_ms > 0 {
            self.clock_forward_ms += by_ms as u64;
        }
    }

    /// The links as the active network faults make them.
    fn relink(&mut self) {
        let mut links = Links::default();
        let n = self.members.len();
        for i in &self.active {
            match &self.plan[*i].fault {
                Fault::Partition { side } => {
                    for a in side {
                        for b in (0..n).filter(|b| !side.contains(b)) {
                            links.cut_both(*a, b);
                        }
                    }
                }
                Fault::OneWay { from } => {
                    for b in (0..n).filter(|b| b != from) {
                        links.cut.insert((*from, b));
                    }
                }
                Fault::Lossy {
                    drop_permille,
                    duplicate_permille,
                    jitter_ms,
                } => {
                    links.drop_permille = links.drop_permille.max(*drop_permille);
                    links.duplicate_permille = links.duplicate_permille.max(*duplicate_permille);
                    links.jitter_ms = links.jitter_ms.max(*jitter_ms);
                }
                Fault::Crash { .. }
                | Fault::ClockJump { .. }
                | Fault::Membership { .. }
                | Fault::Shrink { .. }
                | Fault::RotateKek { .. }
                | Fault::Autolock { .. } => {}
            }
        }
        self.links = links;
    }

    /// The faults end, every member runs, clients stop: the cluster must
    /// converge.
    fn settle(&mut self) {
        self.trace
            .note(self.now_ms, "settling: every fault healed".into());
        self.settling = true;
        for i in self.active.clone() {
            self.fault_end(i);
        }
        self.links = Links::default();
    }

    /// A final read of every key through every member: acknowledged
    /// writes must all be there.
    fn final_reads(&mut self) {
        for s in self.up_members() {
            let up = self.members[s].up.as_ref().expect("up");
            let (v, voters) = (up.stepper.view(), up.stepper.voters());
            let line = format!(
                "m{s} ({:x}): term {} leader {:x} commit {} (of term {:?}) applied {}, last {}; voters {voters:x?}; reads {:?}",
                v.id,
                v.term,
                v.leader_id,
                v.commit,
                up.stepper.log_term(v.commit),
                v.applied,
                v.last_index,
                up.stepper.reads_state()
            );
            self.trace.note(self.now_ms, line);
        }
        let n = self.members.len();
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
                self.history.record(c as u64, p, outcome);
            }
        }
        self.final_secret_checks();
        // Extra client processes, one per (key, member).
        for key in 0..clients::KEYS {
            for member in 0..n {
                let c = self.clients.len();
                self.clients.push(Client {
                    pending: None,
                    next_value: 0,
                });
                self.issue(c, Some((key, member)));
            }
        }
    }

    /// After the last event: what is still open is unknown, and the
    /// members that applied as far must hold the same keyspace.
    fn finish(&mut self) {
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
                self.history.record(c as u64, p, outcome);
            }
        }
        let mut by_applied: BTreeMap<u64, Vec<(usize, Keyspace)>> = BTreeMap::new();
        for (slot, m) in self.members.iter().enumerate() {
            let Some(up) = &m.up else { continue };
            by_applied
                .entry(up.stepper.view().applied)
                .or_default()
                .push((slot, keyspace(&up.node)));
        }
        for (applied, states) in by_applied {
            if let Some((first, rest)) = states.split_first() {
                for (slot, kv) in rest {
                    if *kv != first.1 {
                        self.invariants.violations.push(format!(
                            "end: m{} and m{slot} applied to {applied} but hold different keyspaces",
                            first.0
                        ));
                    }
                }
            }
        }
        self.check_log_matching();
        self.check_watches();
    }
}

// Futures of the real APIs (membership changes, secrets), polled by the world.
impl World {
    fn spawn(&mut self, f: impl std::future::Future<Output = Done> + 'static, on_timeout: Done) {
        self.spawn_on(Vec::new(), f, on_timeout);
    }

    /// `spawn`, for a future that holds the state of members `slots`.
    fn spawn_on(
        &mut self,
        slots: Vec<usize>,
        f: impl std::future::Future<Output = Done> + 'static,
        on_timeout: Done,
    ) {
        self.tasks.push((
            self.now_ms + TASK_TIMEOUT_MS,
            Box::pin(f),
            on_timeout,
            slots,
        ));
    }

    /// A member's process ends (crash, restart, removal): so does every
    /// future working on its state, coming to its timeout outcome.
    fn stop_member(&mut self, slot: usize) -> Option<Up> {
        let up = self.members[slot].up.take();
        self.disrupted_ms = self.now_ms;
        let mut i = 0;
        while i < self.tasks.len() {
            if self.tasks[i].3.contains(&slot) {
                self.give_up_task(i);
            } else {
                i += 1;
            }
        }
        up
    }

    /// Polls every future once, in order (a no-op waker: the world polls
    /// after each step instead of being woken); one past its time comes
    /// to its timeout outcome.
    fn poll_tasks(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut i = 0;
        while i < self.tasks.len() {
            if let std::task::Poll::Ready(done) = self.tasks[i].1.as_mut().poll(&mut cx) {
                drop(self.tasks.remove(i));
                self.task_done(done);
            } else if self.now_ms >= self.tasks[i].0 {
                self.give_up_task(i);
            } else {
                i += 1;
            }
        }
        // What the futures asked of a member (a proposal, a ReadIndex)
        // wakes its loop, as the channel wakes the real loop's thread;
        // otherwise each waited for the member's next tick (the final
        // secrets check of seeds 7800093 and 7800862 ran out of time so).
        for slot in self.up_members() {
            let queued = self.members[slot]
                .up
                .as_ref()
                .is_some_and(|u| u.stepper.has_inputs());
            if queued {
                self.schedule_run(slot);
            }
        }
    }

    /// Drops future `i` unfinished: it comes to its timeout outcome.
    fn give_up_task(&mut self, i: usize) {
        let (_, task, on_timeout, _) = self.tasks.remove(i);
        drop(task);
        self.task_done(on_timeout);
    }

    fn task_done(&mut self, done: Done) {
        match done {
            Done::Secret(d) => self.secret_done(d),
            Done::Probe {
                slot,
                what,
                refused_with,
                got,
            } => self.probe_done(slot, what, refused_with, got),
            other => self.membership_done(other),
        }
    }
}

/// Every key and value a member holds, in order.
type Keyspace = Vec<(Vec<u8>, Vec<u8>)>;

fn keyspace(node: &Node) -> Keyspace {
    let req = secretd_store::pb::etcdserverpb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    match node.mvcc().range(&req) {
        Ok((resp, _)) => resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        Err(_) => Vec::new(),
    }
}
