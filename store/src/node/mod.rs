//! One member's raft node: a dedicated thread owns the `RawNode` and runs
//! the loop; everything else talks to it through a bounded channel.
//!
//! Each round drains up to `INPUTS_PER_ROUND_MAX` inputs (proposals, peer
//! messages, reads), ticks, then handles one `Ready` in raft-rs's order:
//! send the leader's messages, apply committed entries into one unsynced
//! RocksDB `WriteBatch` (a configuration change's batch is synced), append
//! new entries and hard state to the raft-log segments with **one**
//! fdatasync, then publish the revision, wake watchers, answer clients,
//! send the messages that had to wait for persistence, and `advance`.
//! Applied state that a crash loses is applied again from the synced log.
//!
//! Invariant: a client hears about a write only after the entry is committed
//! (durable on a quorum) and applied to a durable local batch.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::RwLock;
use prost::Message as _;
use raft::eraftpb::{ConfChangeV2, Message};
use tokio::sync::oneshot;

use crate::auth::Auth;
use crate::clock::Clock;
use crate::cluster;
use crate::db::{u64_from, Db, CF_META};
use crate::error::{Result, StoreError};
use crate::log_store::LogStore;
use crate::membership::Registry;
use crate::mvcc::{Mvcc, WriteResult};
use crate::pb::etcdserverpb::{Member, ResponseHeader};
use crate::pb::internal::{internal_request::Request, InternalRequest};
use crate::snapshot;
use crate::watch::WatchHub;

mod alarms;
mod apply;
mod bootstrap;
pub mod entry;
mod kv;
mod leases;
mod members;
mod opened;
mod raft_loop;
mod read_index;
mod stepper;

use bootstrap::install_snapshot;
pub use bootstrap::restore;
pub use opened::Opened;
use raft_loop::Waiter;
pub use stepper::{RaftView, Stepper};

/// Inputs handled per loop round before a `Ready` is processed: bounds the
/// latency one round adds, while letting one fsync carry many proposals.
const INPUTS_PER_ROUND_MAX: usize = 4096;
/// Proposals and reads waiting to enter the loop.
pub(crate) const INPUT_QUEUE_MAX: usize = 16 * 1024;
/// A ReadIndex request unanswered this long is sent again (raft-rs drops
/// them silently while there is no leader, or before a new leader commits).
const READ_INDEX_RETRY: Duration = Duration::from_millis(500);
/// Backups a member writes at once (more are refused as too many).
const BACKUPS_AT_ONCE_MAX: usize = 2;
/// Expired leases the leader proposes to revoke per tick (etcd revokes at
/// most 1000 per second).
const LEASE_REVOKES_PER_TICK_MAX: usize = 100;
/// How close a learner must be to the leader's log to be promoted (etcd's).
const LEARNER_READY_FRACTION: f64 = 0.9;
/// How often a starting member retries publishing its name and client URLs.
const PUBLISH_RETRY: Duration = Duration::from_millis(500);

use crate::schema::meta::{
    APPLIED as META_APPLIED, INSTALLING as META_INSTALLING, MEMBER_ID as META_MEMBER_ID,
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
    /// Bytes of read answers the member holds at once (`answers`).
    pub max_response_bytes_in_flight: usize,
    /// How long an answer may go with its client taking none of it
    /// (`answers::STALL_MS_DEFAULT`).
    pub max_answer_stall_ms: u64,
    /// The most a write's answer may render, on every member
    /// (`mvcc::write_answer`), set on the entries this member proposes.
    pub max_write_answer_bytes: usize,
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
            max_response_bytes_in_flight: crate::answers::IN_FLIGHT_BYTES_DEFAULT,
            max_write_answer_bytes: crate::answers::WRITE_ANSWER_BYTES_DEFAULT,
            max_answer_stall_ms: crate::answers::STALL_MS_DEFAULT,
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
    /// ReadIndex rounds that went unanswered until their retry.
    pub slow_read_indexes: u64,
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
    /// A peer connected to us (`Node::peer_up`).
    PeerUp(u64),
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

/// The refusal of what members of an older release would apply
/// differently, naming them.
fn older_members(ids: &[u64]) -> StoreError {
    let ids: Vec<String> = ids.iter().map(|id| format!("{id:x}")).collect();
    StoreError::OlderMembers(ids.join(", "))
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
            // The index is read from disk below, when the store opens.
            drop(install_snapshot(
                &db,
                &mut log,
                &snapshot::file_path(&snap_dir, index),
                None,
            )?);
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

    /// Peer `id` connected to this member: its sender stops waiting out a
    /// backoff (`Transport::peer_up`), and a leader sends it a heartbeat at
    /// once, so a restarted follower learns its leader (and can serve a
    /// linearizable read) without waiting for the next tick.
    pub fn peer_up(&self, id: u64) {
        self.transport.peer_up(id);
        let _ = self.tx.try_send(Input::PeerUp(id));
    }

    /// The bound a write's answer is measured against on every member
    /// (`mvcc::write_answer`): on the writes that render one, once every
    /// peer measures it alike (before, none does, as before).
    fn write_answer_bound(&self, request: &Request) -> Option<u64> {
        let renders = match request {
            Request::Txn(t) => !crate::mvcc::txn_checks::is_read_only(t),
            Request::DeleteRange(d) => d.prev_kv,
            Request::Put(p) => p.prev_kv,
            _ => false,
        };
        let every_peer_measures = || {
            self.transport
                .peers_below(crate::transport::wire::WRITE_ANSWER_BOUND)
                .is_empty()
        };
        (renders && every_peer_measures()).then_some(self.cfg.max_write_answer_bytes as u64)
    }

    /// Whether a txn's entry asks every member to decide it before it
    /// writes (`mvcc::txn_path`): only once none may apply it otherwise.
    fn decides_txn_first(&self, request: &Request) -> bool {
        matches!(request, Request::Txn(_))
            && self
                .transport
                .peers_below(crate::transport::wire::TXN_DECIDED_FIRST)
                .is_empty()
    }

    fn refuse_if_older_members(&self) -> Result<()> {
        let older = self.older_peers();
        if older.is_empty() {
            return Ok(());
        }
        Err(older_members(&older))
    }

    /// A write txn not decided first: refused where the releases that
    /// apply it so would lose a write or keep a failed one
    /// (`txn_checks::refused_by_older_apply`).
    fn refuse_what_older_apply_loses(&self, t: &crate::pb::etcdserverpb::TxnRequest) -> Result<()> {
        use crate::mvcc::txn_checks::{refused_by_older_apply, OlderApply};
        match refused_by_older_apply(t) {
            Ok(()) => Ok(()),
            Err(OlderApply::DuplicateKey) => Err(StoreError::DuplicateKey),
            Err(OlderApply::RangeAtRevision) => Err(older_members(
                &self
                    .transport
                    .peers_below(crate::transport::wire::TXN_DECIDED_FIRST),
            )),
        }
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
        let write_answer_bytes_max = self.write_answer_bound(&request);
        let txn_decided_first = self.decides_txn_first(&request);
        let txn_rules_etcd = matches!(request, Request::Txn(_))
            && self
                .transport
                .peers_below(crate::transport::wire::TXN_RULES_ETCD)
                .is_empty();
        if let Request::Txn(t) = &request {
            if !txn_decided_first && !crate::mvcc::txn_checks::is_read_only(t) {
                self.refuse_what_older_apply_loses(t)?;
            }
        }
        let data = InternalRequest {
            id,
            proposer: self.id,
            request: Some(request),
            auth_revision: None,
            auth_fence: fence,
            write_answer_bytes_max,
            txn_decided_first,
            txn_rules_etcd,
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
