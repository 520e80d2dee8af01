//! One member's raft node: a dedicated thread owns the `RawNode` and runs
//! the loop; everything else talks to it through a bounded channel.
//!
//! Each round drains up to `INPUTS_PER_ROUND_MAX` inputs (proposals, peer
//! messages, reads), ticks, then handles one `Ready` in raft-rs's order:
//! send the leader's messages, apply committed entries and persist new
//! entries and hard state in **one** `WriteBatch` with **one** fsync, then
//! publish the revision, wake watchers, answer clients, send the messages
//! that had to wait for persistence, and `advance`.
//!
//! Invariant: a client hears about a write only after the entry is committed
//! (durable on a quorum) and applied to a durable local batch.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::WriteBatch;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::RwLock;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType,
};
use raft::{Config, RawNode, ReadOnlyOption, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::cluster;
use crate::db::{u64_from, Db, CF_META};
use crate::error::{Result, StoreError};
use crate::lease;
use crate::log_store::LogStore;
use crate::membership::{self, Registry};
use crate::mvcc::{self, txn_checks, Applier, Mvcc, RevEvents, WriteResult};
use crate::pb::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType, Member, MemberAddResponse,
    MemberListResponse, MemberPromoteResponse, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use crate::pb::internal::{
    internal_request::Request, ConfChangeContext, InternalRequest, LeaseExpiry,
};
use crate::snapshot;
use crate::watch::WatchHub;

mod apply;
mod bootstrap;
pub mod entry;
mod raft_loop;
mod read_index;
mod stepper;

use bootstrap::install_snapshot;
pub use bootstrap::restore;
use raft_loop::{Applied, Loop, Waiter};
use read_index::ReadQueue;
pub use stepper::{RaftView, Stepper};

/// Inputs handled per loop round before a `Ready` is processed: bounds the
/// latency one round adds, while letting one fsync carry many proposals.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// Proposals and reads waiting to enter the loop.
pub(crate) const INPUT_QUEUE_MAX: usize = 16 * 1024;
/// A ReadIndex request unanswered this long is sent again (raft-rs drops
/// them silently while there is no leader, or before a new leader commits).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// Expired leases the leader proposes to revoke per tick (etcd revokes at
/// most 1000 per second).
const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// How close a learner must be to the leader's log to be promoted (etcd's).
const LEARNER_READY_FRACTION: f64 = 0.9;
/// How often a starting member retries publishing its name and client URLs.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

use crate::schema::meta::{
    APPLIED as META_APPLIED, CLUSTER_ID as META_CLUSTER_ID, FORCED_NEW_CLUSTER as META_FORCED,
    INSTALLING as META_INSTALLING, MEMBER_ID as META_MEMBER_ID,
};

/// Where a submitted write's outcome arrives.
pub type Reply<T> = oneshot::Receiver<Result<(T, ResponseHeader)>>;

/// What apply must still find for an etcd client's request
/// (`auth::AuthState::admits`); `None` for secretd's own writes and for
/// requests etcd checks nothing for.
pub type Fence = Option<crate::auth::AuthFence>;

pub use crate::transport::Transport;

/// What a member joining a running cluster learned from it before starting.
#[derive(Clone, Debug)]
pub struct JoinInfo {
    pub cluster_id: u64,
    pub member_id: u64,
    pub members: Vec<Member>,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    /// Members of a new cluster (`--initial-cluster`); ignored when the data
    /// directory already holds a member.
    pub initial_members: Vec<cluster::Member>,
    /// Set when this member joins a running cluster (`--initial-cluster-state
    /// existing`) with an empty data directory.
    pub join: Option<JoinInfo>,
    pub cluster_token: String,
    /// Client URLs this member publishes in the member list.
    pub client_urls: Vec<String>,
    /// Backend size past which writes that add data are refused and the
    /// NOSPACE alarm is raised (etcd's --quota-backend-bytes).
    pub quota_backend_bytes: i64,
    pub tick_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
    pub watch_progress_interval: Duration,
    /// Applied entries beyond the last log truncation that trigger another
    /// (etcd's --snapshot-count).
    pub snapshot_count: u64,
    /// Entries kept behind a truncation for slow followers to catch up from
    /// without a snapshot.
    pub snapshot_catchup_entries: u64,
    /// How long an unused simple token stays valid (etcd's
    /// --auth-token-ttl).
    pub auth_token_ttl: Duration,
    /// etcd's `--force-new-cluster`: make this (existing) member the only
    /// member of its cluster, keeping what it committed
    /// (`bootstrap::force_new_cluster`).
    pub force_new_cluster: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.etcd"),
            initial_members: Vec::new(),
            join: None,
            cluster_token: "etcd-cluster".into(),
            client_urls: Vec::new(),
            quota_backend_bytes: 2 << 30,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 1,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            request_timeout: Duration::from_secs(5),
            watch_progress_interval: Duration::from_secs(600),
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
            auth_token_ttl: Duration::from_secs(300),
            force_new_cluster: false,
        }
    }
}

/// One entry as a member applied it (recorded only for the simulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    /// CRC-32 of the entry's data: enough to tell two entries apart.
    pub data_hash: u32,
    /// A configuration change (applied or refused).
    pub conf_change: bool,
    /// This member told a waiting client it succeeded.
    pub acknowledged: bool,
    /// A digest of what applying it came to (the result's kind, refusal,
    /// or the revision it produced): equal on every member that applies
    /// the same entry, or the members diverged.
    pub result_hash: u64,
}

/// What the loop publishes about itself for Status and response headers.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    pub leader: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub is_leader: bool,
    pub is_learner: bool,
    /// Set when the loop stopped on a storage error: the member serves no
    /// more requests.
    pub fatal: Option<String>,
    /// Raft entries made durable per fsync, cumulative (for benchmarks).
    pub entries_persisted: u64,
    pub fsyncs: u64,
    /// Backend size, refreshed every tick (what the quota is checked against).
    pub db_size_bytes: i64,
}

enum Input {
    Propose {
        id: u64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(WriteResult, ResponseHeader)>>,
    },
    Step(Box<Message>),
    ReadIndex(oneshot::Sender<Result<()>>),
    ConfChange {
        id: u64,
        cc: ConfChangeV2,
        context: Vec<u8>,
        promote: Option<u64>,
        reply: Waiter,
    },
    TransferLeader {
        target: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A backup: a state snapshot file in `dir`, for Maintenance.Snapshot.
    Backup {
        dir: PathBuf,
        reply: oneshot::Sender<Result<PathBuf>>,
    },
    Unreachable(u64),
    SnapshotReport(u64, bool),
    Stop,
}

/// Handle to a running member. Cheap to share behind an `Arc`.
pub struct Node {
    id: u64,
    cluster_id: u64,
    registry: Arc<RwLock<Registry>>,
    alarms: Arc<RwLock<BTreeSet<(u64, i32)>>>,
    auth: Arc<Auth>,
    cfg: NodeConfig,
    tx: Sender<Input>,
    mvcc: Arc<Mvcc>,
    db: Arc<Db>,
    hub: Arc<WatchHub>,
    status: Arc<RwLock<NodeStatus>>,
    next_request: AtomicU64,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set when this member found itself outvoted by its peers' hashes,
    /// before (or without) a CORRUPT alarm naming it being committed.
    found_damaged: std::sync::atomic::AtomicBool,
    /// The loop's transport, asked which peers may run an older release.
    transport: Arc<dyn Transport>,
}

impl Node {
    /// Opens (or bootstraps) the member in `cfg.data_dir` and starts its
    /// loop. Must be called inside a tokio runtime (the watch hub spawns).
    pub fn start(cfg: NodeConfig, transport: Arc<dyn Transport>) -> Result<Arc<Node>> {
        Node::open(cfg)?.start(transport)
    }

    /// Opens (or bootstraps) the member's storage and decides its ids,
    /// without starting anything: the caller builds its transport from
    /// `Opened`'s ids and members, then starts the node on it.
    pub fn open(cfg: NodeConfig) -> Result<Opened> {
        if cfg.force_new_cluster && !cfg.data_dir.exists() {
            return Err(nothing_to_force(&cfg));
        }
        if cfg.data_dir.exists() {
            crate::disk::check(&cfg.data_dir)?;
        }
        let db = Db::open(&cfg.data_dir)?;
        Node::open_on(cfg, db)
    }

    /// `open` on a database the caller opened (the simulation's, on a
    /// simulated disk). Snapshot files still live under `cfg.data_dir`.
    pub fn open_on(cfg: NodeConfig, db: Arc<Db>) -> Result<Opened> {
        let mut log = LogStore::open(db.clone())?;
        // Before `identity`, which would bootstrap a new cluster here.
        if cfg.force_new_cluster && !log.is_initialized() {
            return Err(nothing_to_force(&cfg));
        }
        let (id, cluster_id) = bootstrap::identity(&db, &mut log, &cfg)?;
        let snap_dir = cfg.data_dir.join("snap");
        if let Some(v) = db.get(CF_META, META_INSTALLING)? {
            let index = u64_from(&v, "installing snapshot index")?;
            tracing::warn!(index, "a snapshot install was interrupted; redoing it");
            install_snapshot(&db, &mut log, &snapshot::file_path(&snap_dir, index), None)?;
        }
        // After the install is redone: it can move the log and the
        // configuration.
        let forced = bootstrap::force_flag(&db, &mut log, id, cfg.force_new_cluster)?;
        let applied = match db.get(CF_META, META_APPLIED)? {
            Some(v) => u64_from(&v, "applied index")?,
            None => 0,
        };
        Ok(Opened {
            cfg,
            db,
            log,
            id,
            cluster_id,
            snap_dir,
            applied,
            forced,
        })
    }
}

/// Whether `data_dir` holds a member's identity (its member and cluster
/// ids). A member that was to join a running cluster and stopped before
/// it saved them has a database but no identity: it must ask the running
/// members again, never bootstrap a cluster of its own (it once came back
/// under a new cluster id, killed between creating its database and
/// saving its ids).
pub fn holds_member(data_dir: &std::path::Path) -> Result<bool> {
    if !data_dir.join("db").exists() {
        return Ok(false);
    }
    let db = Db::open(data_dir)?;
    Ok(db.get(CF_META, META_MEMBER_ID)?.is_some())
}

/// `--force-new-cluster` on a data directory that holds no member.
pub fn nothing_to_force(cfg: &NodeConfig) -> StoreError {
    StoreError::InvalidArgument(format!(
        "--force-new-cluster: {} holds no member (empty or missing, or a member that joined and \
         never received its first snapshot), so there is nothing to recover: give it the data \
         directory of a surviving member",
        cfg.data_dir.display()
    ))
}

/// A member's storage, opened and with its ids decided, not yet running.
pub struct Opened {
    cfg: NodeConfig,
    db: Arc<Db>,
    log: LogStore,
    id: u64,
    cluster_id: u64,
    snap_dir: PathBuf,
    applied: u64,
    /// Set by `--force-new-cluster`: the index of its last configuration
    /// change.
    forced: Option<u64>,
}

impl Opened {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The members as this member last applied them.
    pub fn members(&self) -> Result<Vec<Member>> {
        Ok(Registry::load(&self.db)?.list())
    }

    pub fn snapshot_dir(&self) -> PathBuf {
        self.snap_dir.clone()
    }

    /// Starts the raft loop on `transport`. Must be called inside a tokio
    /// runtime (the watch hub spawns).
    pub fn start(self, transport: Arc<dyn Transport>) -> Result<Arc<Node>> {
        let name = self.cfg.name.clone();
        let (node, lp) = self.build(transport, Clock::real(), ElectionTimeout::Randomized)?;
        let handle = std::thread::Builder::new()
            .name(format!("raft-{name}"))
            .spawn(move || lp.run())
            .map_err(|e| StoreError::Storage(format!("cannot start raft thread: {e}")))?;
        *node.thread.lock() = Some(handle);
        tokio::spawn(publish_attributes(Arc::downgrade(&node)));
        Ok(node)
    }

    /// The handle and its loop, not yet running.
    fn build(
        self,
        transport: Arc<dyn Transport>,
        clock: Clock,
        election: ElectionTimeout,
    ) -> Result<(Arc<Node>, Loop)> {
        let Opened {
            cfg,
            db,
            mut log,
            id,
            cluster_id,
            snap_dir,
            applied,
            forced,
        } = self;
        let mvcc = Mvcc::open_with_clock(db.clone(), clock)?;
        let registry = Arc::new(RwLock::new(Registry::load(&db)?));
        let alarms = Arc::new(RwLock::new(membership::load_alarms(&db)?));
        let auth = Arc::new(Auth::load(&db, cfg.auth_token_ttl)?);
        log.set_snapshots(snap_dir.clone(), mvcc.clone());
        log.set_applied(applied);
        let hub = WatchHub::start(mvcc.clone(), cfg.watch_progress_interval);

        let raw = raft_node(&cfg, id, applied, log, election)?;

        let (tx, rx) = bounded(INPUT_QUEUE_MAX);
        let status = Arc::new(RwLock::new(NodeStatus {
            applied_index: applied,
            ..Default::default()
        }));
        let node = Arc::new(Node {
            id,
            cluster_id,
            registry: registry.clone(),
            alarms: alarms.clone(),
            auth: auth.clone(),
            cfg: cfg.clone(),
            tx,
            mvcc: mvcc.clone(),
            db: db.clone(),
            hub: hub.clone(),
            status: status.clone(),
            next_request: AtomicU64::new(initial_request_counter()),
            thread: parking_lot::Mutex::new(None),
            found_damaged: Default::default(),
            transport: transport.clone(),
        });
        let lp = Loop {
            raw,
            db,
            applier: Applier::new(mvcc),
            hub,
            transport,
            rx,
            status,
            waiters: HashMap::new(),
            reads: ReadQueue::default(),
            id,
            cluster_id,
            applied,
            tick: Duration::from_millis(cfg.tick_ms),
            snap_dir,
            registry,
            alarms,
            auth,
            membership_changed: true,
            removed: false,
            conf_in_batch: false,
            leaving: None,
            held_removal_reply: None,
            refused_entries: 0,
            snapshot_count: cfg.snapshot_count.max(1),
            catchup_entries: cfg.snapshot_catchup_entries,
            applied_trace: None,
            forced,
            campaign_alone: false,
        };
        Ok((node, lp))
    }
}

impl Node {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn members(&self) -> Vec<Member> {
        self.registry.read().list()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    /// The clock this member's loop and leases run on.
    pub fn clock(&self) -> &Clock {
        self.mvcc.clock()
    }

    /// The member's database, for read-only inspection (tests, tools).
    /// Writing to it behind the loop's back breaks every invariant.
    pub fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// etcd's users, roles and tokens, as of the last applied entry.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    pub fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }

    pub fn status(&self) -> NodeStatus {
        self.status.read().clone()
    }

    pub fn db_size_bytes(&self) -> i64 {
        self.db.size_bytes()
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.status.read().term,
        }
    }

    /// Hands a message from a peer to raft. Dropped if the loop is
    /// saturated: raft retransmits.
    pub fn step(&self, msg: Message) {
        let _ = self.tx.try_send(Input::Step(Box::new(msg)));
    }
    pub fn report_unreachable(&self, peer: u64) {
        let _ = self.tx.try_send(Input::Unreachable(peer));
    }

    /// Tells raft whether a snapshot reached `peer`.
    pub fn report_snapshot(&self, peer: u64, delivered: bool) {
        let _ = self.tx.send_timeout(
            Input::SnapshotReport(peer, delivered),
            Duration::from_secs(1),
        );
    }

    /// Where snapshot files are written and received.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("snap")
    }

    /// Stops the raft loop and waits for it to finish its current round.
    pub fn stop(&self) {
        let _ = self.tx.send_timeout(Input::Stop, Duration::from_secs(1));
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }

    fn send_input(&self, input: Input) -> Result<()> {
        match self.tx.try_send(input) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::TooManyRequests),
            Err(TrySendError::Disconnected(_)) => Err(self.stopped_error()),
        }
    }

    fn stopped_error(&self) -> StoreError {
        match &self.status.read().fatal {
            Some(f) => StoreError::Storage(f.clone()),
            None => StoreError::Stopped,
        }
    }

    /// Proposes a write and waits until it is committed and applied here.
    pub async fn propose(&self, request: Request) -> Result<(WriteResult, ResponseHeader)> {
        self.propose_checked(request, None).await
    }

    /// Peers that may run an older release (`Transport::older_peers`).
    pub fn older_peers(&self) -> Vec<u64> {
        self.transport.older_peers()
    }

    fn refuse_if_older_members(&self) -> Result<()> {
        let older = self.older_peers();
        if older.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = older.iter().map(|id| format!("{id:x}")).collect();
        Err(StoreError::OlderMembers(ids.join(", ")))
    }

    /// `propose` for an etcd client's request whose permissions were
    /// checked at auth revision `fence` (see `auth::Auth::check_fence`).
    pub async fn propose_checked(
        &self,
        request: Request,
        fence: Fence,
    ) -> Result<(WriteResult, ResponseHeader)> {
        let rx = self.submit(request, fence)?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Hands a write to the loop without waiting: the receiver hears once
    /// it is applied here (or refused). What `propose_checked` waits on,
    /// and what the simulation polls.
    pub fn submit(&self, request: Request, fence: Fence) -> Result<Reply<WriteResult>> {
        // d63c56e stops at an entry it cannot decode: no auth entry while
        // a member may still run it (README, "Upgrades").
        if matches!(request, Request::Auth(_)) {
            self.refuse_if_older_members()?;
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let decode_check = entry::needs_decode_check(&request);
        let data = InternalRequest {
            id,
            proposer: self.id,
            request: Some(request),
            auth_revision: None,
            auth_fence: fence,
        }
        .encode_to_vec();
        if data.len() > self.cfg.max_request_bytes {
            return Err(StoreError::RequestTooLarge);
        }
        // Apply's own decoder is the judge of what may be committed.
        if decode_check {
            entry::check_decodes(&data)?;
        }
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::Propose { id, data, reply })?;
        Ok(rx)
    }

    /// Proposes `data` as an entry as it is, past every admission check:
    /// what an older member, or a request admission wrongly let through,
    /// can put in the log. For the tests that apply survives it.
    #[cfg(test)]
    pub(crate) fn submit_raw(&self, data: Vec<u8>) -> Result<Reply<WriteResult>> {
        let id = entry::ids_of_undecodable(&data).map_or(0, |(id, _)| id);
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::Propose { id, data, reply })?;
        Ok(rx)
    }

    /// The next request id this member will use (tests build raw entries).
    #[cfg(test)]
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Asks for a ReadIndex round without waiting (see `read_index`).
    pub fn submit_read_index(&self) -> Result<oneshot::Receiver<Result<()>>> {
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::ReadIndex(reply))?;
        Ok(rx)
    }

    /// Waits until this member has applied everything committed when the
    /// call was made (ReadIndex, batched with concurrent callers).
    pub async fn read_index(&self) -> Result<()> {
        let rx = self.submit_read_index()?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        self.check_serving()?;
        if !req.serializable {
            self.read_index().await?;
        }
        let (mut resp, rev) = self.mvcc.range(&req)?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    /// A member whose keyspace was found damaged serves no reads from it:
    /// named in a CORRUPT alarm, or outvoted by its peers' hashes.
    pub fn check_serving(&self) -> Result<()> {
        if self.found_damaged.load(Ordering::Relaxed)
            || membership::corrupt_member(&self.alarms.read(), self.id)
        {
            return Err(StoreError::MemberDamaged);
        }
        Ok(())
    }

    /// Records that this member's keyspace disagrees with its peers'
    /// (`check_serving` refuses reads from now until restart).
    pub fn mark_damaged(&self) {
        self.found_damaged.store(true, Ordering::Relaxed);
    }

    /// Raises CORRUPT naming `member` through raft, as etcd's corruption
    /// checker does (`Maintenance.Alarm` checks the caller; this does not).
    pub async fn raise_corrupt(&self, member: u64) -> Result<()> {
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: member,
            alarm: AlarmType::Corrupt as i32,
        };
        self.propose(Request::Alarm(raise)).await.map(|_| ())
    }

    /// etcd's quota: refuse a write that adds data while NOSPACE is raised,
    /// or that would take the backend past the quota (and then raise it).
    async fn check_quota(&self, request_bytes: usize) -> Result<()> {
        if membership::nospace_raised(&self.alarms.read()) {
            return Err(StoreError::NoSpace);
        }
        let size = self.status.read().db_size_bytes;
        if size.saturating_add(request_bytes as i64) <= self.cfg.quota_backend_bytes {
            return Ok(());
        }
        tracing::warn!(
            size,
            quota = self.cfg.quota_backend_bytes,
            "backend quota exceeded; raising NOSPACE"
        );
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Request::Alarm(raise)).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
        Err(StoreError::NoSpace)
    }

    /// Maintenance.Alarm: list, raise or clear alarms, as etcd 3.5's
    /// applier does: a list ignores the member id (every member's alarms,
    /// of one type or, for NONE, all); a raise or clear names one member by
    /// id, any id (0 included, which no member has), and answers the alarm
    /// it raised or cleared, if any; raising NONE does nothing.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<Vec<AlarmMember>> {
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => Ok(self
                .alarms
                .read()
                .iter()
                .filter(|(_, t)| req.alarm == AlarmType::None as i32 || *t == req.alarm)
                .map(|(m, t)| AlarmMember {
                    member_id: *m,
                    alarm: *t,
                })
                .collect()),
            Ok(AlarmAction::Activate) if req.alarm == AlarmType::None as i32 => Ok(Vec::new()),
            Ok(_) => match self.propose(Request::Alarm(req)).await? {
                (WriteResult::Alarms(a), _) => Ok(a),
                (other, _) => Err(unexpected(other)),
            },
            Err(_) => Err(StoreError::InvalidArgument("unknown alarm action".into())),
        }
    }

    /// Raised alarms as Status reports them.
    pub fn alarm_errors(&self) -> Vec<String> {
        self.alarms
            .read()
            .iter()
            .map(|(m, t)| {
                format!(
                    "memberID:{m} alarm:{}",
                    AlarmType::try_from(*t)
                        .map(|a| a.as_str_name())
                        .unwrap_or("UNKNOWN")
                )
            })
            .collect()
    }

    /// Gives back space held by deleted and compacted data.
    pub async fn defragment(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.defragment())
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))??;
        self.status.write().db_size_bytes = self.db.size_bytes();
        Ok(())
    }

    pub async fn put(&self, req: PutRequest, fence: Fence) -> Result<PutResponse> {
        txn_checks::validate_put(&req)?;
        self.check_quota(req.key.len() + req.value.len()).await?;
        propose_as!(self, Request::Put(req), Put, fence)
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        fence: Fence,
    ) -> Result<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        propose_as!(self, Request::DeleteRange(req), DeleteRange, fence)
    }

    pub async fn txn(&self, req: TxnRequest, fence: Fence) -> Result<TxnResponse> {
        txn_checks::validate_txn(&req, self.cfg.max_txn_ops)?;
        if txn_checks::is_read_only(&req) {
            self.check_serving()?;
            if !txn_checks::is_serializable(&req) {
                self.read_index().await?;
            }
            let (mut resp, rev) = self.mvcc.txn_readonly(&req)?;
            resp.header = Some(self.header(rev));
            return Ok(resp);
        }
        if txn_checks::has_put(&req) {
            self.check_quota(req.encoded_len()).await?;
        }
        propose_as!(self, Request::Txn(req), Txn, fence)
    }
    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse> {
        if linearizable {
            self.read_index().await?;
        }
        Ok(MemberListResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            members: self.members(),
        })
    }

    async fn conf_change(
        &self,
        change: ConfChangeType,
        node_id: u64,
        member: Option<Member>,
        promote: bool,
    ) -> Result<(Vec<Member>, ResponseHeader)> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let context = ConfChangeContext {
            request_id: id,
            proposer: self.id,
            member,
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = node_id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::ConfChange {
            id,
            cc,
            context,
            promote: promote.then_some(node_id),
            reply,
        })?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(Ok((WriteResult::Members(ms), h)))) => Ok((ms, h)),
            Ok(Ok(Ok((other, _)))) => Err(unexpected(other)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The id a member with these peer URLs has in this cluster (derived
    /// with the cluster token, as the member itself derives it).
    pub fn member_id_for(&self, peer_urls: &[String]) -> Result<u64> {
        let token = self
            .db
            .get(CF_META, membership::META_TOKEN)?
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        Ok(cluster::member_id(peer_urls, &token))
    }

    /// Adds a member (as a learner if asked). Its id is derived from its
    /// peer URLs and the cluster token, as the new member derives it.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse> {
        if peer_urls.is_empty() {
            return Err(StoreError::InvalidArgument(
                "member add needs at least one peer URL".into(),
            ));
        }
        let id = self.member_id_for(&peer_urls)?;
        {
            let reg = self.registry.read();
            if reg.with_peer_url(&peer_urls).is_some() {
                return Err(StoreError::PeerUrlExists);
            }
            if reg.get(id).is_some() {
                return Err(StoreError::MemberExists);
            }
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: peer_urls,
            client_ur_ls: Vec::new(),
            is_learner,
        };
        let change = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let (members, h) = self
            .conf_change(change, id, Some(member.clone()), false)
            .await?;
        Ok(MemberAddResponse {
            header: Some(h),
            member: Some(member),
            members,
        })
    }

    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse> {
        if self.registry.read().get(id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        let (members, h) = self
            .conf_change(ConfChangeType::RemoveNode, id, None, false)
            .await?;
        Ok(MemberRemoveResponse {
            header: Some(h),
            members,
        })
    }

    /// Promotes a learner that has caught up. Must run on the leader (the
    /// caller forwards on `NotLeader`).
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse> {
        match self.registry.read().get(id) {
            None => return Err(StoreError::MemberNotFound),
            Some(m) if !m.is_learner => return Err(StoreError::MemberNotLearner),
            Some(_) => {}
        }
        let (members, h) = self
            .conf_change(ConfChangeType::AddNode, id, None, true)
            .await?;
        Ok(MemberPromoteResponse {
            header: Some(h),
            members,
        })
    }

    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse> {
        if self
            .registry
            .read()
            .with_peer_url(&peer_urls)
            .is_some_and(|m| m.id != id)
        {
            return Err(StoreError::PeerUrlExists);
        }
        match self
            .propose(Request::MemberUpdate(MemberUpdateRequest {
                id,
                peer_ur_ls: peer_urls,
            }))
            .await?
        {
            (WriteResult::Members(members), h) => Ok(MemberUpdateResponse {
                header: Some(h),
                members,
            }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Moves leadership to `target` (etcd's MoveLeader); must run on the
    /// leader. Returns once `target` leads, or times out.
    pub async fn move_leader(&self, target: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::TransferLeader { target, reply })?;
        rx.await.map_err(|_| self.stopped_error())??;
        let deadline = Instant::now() + self.cfg.request_timeout;
        while self.status.read().leader != target {
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Writes a consistent snapshot of this member's state (etcd's
    /// Maintenance.Snapshot) and returns its file; the caller streams and
    /// then deletes it.
    pub async fn backup(&self) -> Result<PathBuf> {
        let dir = self.cfg.data_dir.join("backup");
        let _ = std::fs::remove_dir_all(&dir); // leftovers of an interrupted stream
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::Backup { dir, reply })?;
        rx.await.map_err(|_| self.stopped_error())?
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let ms = (3 * self.cfg.election_ticks as u64 / 2) * self.cfg.tick_ms;
        ms.div_ceil(1000).max(1) as i64
    }

    pub async fn lease_grant(&self, ttl: i64, id: i64, fence: Fence) -> Result<LeaseGrantResponse> {
        if ttl > lease::TTL_MAX_SECS {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.min_lease_ttl_secs());
        self.check_quota(16).await?;
        // The proposer picks the id, so every member applies the same one.
        let id = if id != 0 {
            id
        } else {
            (rand::random::<u64>() >> 1).max(1) as i64
        };
        propose_as!(
            self,
            Request::LeaseGrant(LeaseGrantRequest { ttl, id }),
            LeaseGrant,
            fence
        )
    }

    pub async fn lease_revoke(&self, id: i64, fence: Fence) -> Result<LeaseRevokeResponse> {
        propose_as!(
            self,
            Request::LeaseRevoke(LeaseRevokeRequest { id }),
            LeaseRevoke,
            fence
        )
    }

    /// A keep-alive: restarts the lease's TTL on every member.
    pub async fn lease_renew(&self, id: i64, fence: Fence) -> Result<LeaseKeepAliveResponse> {
        propose_as!(
            self,
            Request::LeaseRenew(LeaseKeepAliveRequest { id }),
            LeaseRenew,
            fence
        )
    }

    /// Remaining TTL (-1 if the lease is gone), as of a linearizable read.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        self.read_index().await?;
        let lessor = self.mvcc.lessor();
        let mut resp = LeaseTimeToLiveResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        };
        if let Some(l) = lessor.get(id) {
            resp.ttl = lessor
                .remaining_secs(id, self.mvcc.clock().now())
                .unwrap_or(0);
            resp.granted_ttl = l.ttl_secs;
            if keys {
                resp.keys = l.keys.iter().cloned().collect();
            }
        }
        Ok(resp)
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse> {
        self.read_index().await?;
        let leases = self
            .mvcc
            .lessor()
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(LeaseLeasesResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            leases,
        })
    }

    pub async fn compact(
        &self,
        req: CompactionRequest,
        fence: Fence,
    ) -> Result<CompactionResponse> {
        // Fail fast on what is already known; apply re-checks in log order.
        let compacted = self.mvcc.compact_revision();
        if req.revision <= compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        if req.revision > self.mvcc.current_revision() {
            return Err(StoreError::FutureRevision);
        }
        propose_as!(self, Request::Compaction(req), Compaction, fence)
    }
}

/// Proposes `$req` and unwraps the `WriteResult::$kind` it must produce,
/// with the response header set.
macro_rules! propose_as {
    ($node:expr, $req:expr, $kind:ident) => {
        propose_as!($node, $req, $kind, None)
    };
    ($node:expr, $req:expr, $kind:ident, $fence:expr) => {
        match $node.propose_checked($req, $fence).await? {
            (WriteResult::$kind(mut r), h) => {
                r.header = Some(h);
                Ok(r)
            }
            (other, _) => Err(unexpected(other)),
        }
    };
}
use propose_as;

fn unexpected(r: WriteResult) -> StoreError {
    StoreError::Storage(format!("apply returned a mismatched result: {r:?}"))
}

fn require(db: &Db, key: &[u8]) -> Result<Vec<u8>> {
    db.get(CF_META, key)?.ok_or_else(|| {
        StoreError::Storage(format!(
            "data directory has a raft log but no {:?} record",
            String::from_utf8_lossy(key)
        ))
    })
}

/// Request ids only need to be unique among this process's waiters and the
/// entries it may still re-apply from before a restart: start from the
/// clock so a restarted process does not reuse recent ids.
/// raft-rs's node over the opened log, with our settings (etcd's: pre-vote,
/// check-quorum, ReadIndex in safe mode). A sole voter campaigns at once.
/// How long a member waits before campaigning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElectionTimeout {
    /// Raft's default: drawn anew from [election, 2 × election) ticks.
    Randomized,
    /// Exactly `election_ticks` every time. raft-rs draws from the
    /// thread's own generator, which the simulation cannot seed, so it
    /// gives each member a different fixed timeout instead.
    Fixed,
}

fn raft_node(
    cfg: &NodeConfig,
    id: u64,
    applied: u64,
    log: LogStore,
    election: ElectionTimeout,
) -> Result<RawNode<LogStore>> {
    let (min_election_tick, max_election_tick) = match election {
        ElectionTimeout::Randomized => (0, 0), // raft-rs's defaults
        ElectionTimeout::Fixed => (cfg.election_ticks, cfg.election_ticks + 1),
    };
    let raft_cfg = Config {
        min_election_tick,
        max_election_tick,
        id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg
        .validate()
        .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
    let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => id));
    let mut raw =
        RawNode::new(&raft_cfg, log, &logger).map_err(|e| StoreError::Storage(e.to_string()))?;
    // A sole voter need not wait out an election timeout to lead.
    let voters = raw.store().conf_state().voters.clone();
    if voters == [id] && raw.store().conf_state().learners.is_empty() {
        raw.campaign()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
    }
    Ok(raw)
}

fn initial_request_counter() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << 20
}

/// Publishes this member's name and client URLs once the cluster can take
/// a write (etcd does the same), retrying until they are in the registry.
async fn publish_attributes(node: std::sync::Weak<Node>) {
    loop {
        tokio::time::sleep(PUBLISH_RETRY).await;
        let Some(node) = node.upgrade() else { return };
        let published = node
            .registry
            .read()
            .get(node.id)
            .is_some_and(|m| m.name == node.cfg.name && m.client_ur_ls == node.cfg.client_urls);
        if published {
            return;
        }
        if node.registry.read().get(node.id).is_none() || node.status().leader == 0 {
            continue; // not (yet) a member, or no leader to take the write
        }
        let attrs = Member {
            id: node.id,
            name: node.cfg.name.clone(),
            peer_ur_ls: Vec::new(),
            client_ur_ls: node.cfg.client_urls.clone(),
            is_learner: false,
        };
        if let Err(e) = node.propose(Request::MemberAttrs(attrs)).await {
            tracing::debug!(error = %e, "publishing member attributes; will retry");
        }
    }
}

/// Routes raft-rs's slog records into `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record,
        _: &slog::OwnedKVList,
    ) -> std::result::Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            _ => tracing::trace!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}
