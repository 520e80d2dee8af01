//! A member's storage opened and its ids decided, not yet running
//! (`Node::open`), and what starting it builds: the handle, the loop and
//! raft-rs's node with our settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use parking_lot::RwLock;
use raft::{Config, RawNode, ReadOnlyOption};

use super::members::publish_attributes;
use super::raft_loop::Loop;
use super::read_index::ReadQueue;
use super::{Input, Node, NodeConfig, NodeStatus, Transport, INPUT_QUEUE_MAX};
use crate::auth::Auth;
use crate::clock::Clock;
use crate::db::Db;
use crate::error::{Result, StoreError};
use crate::log_store::LogStore;
use crate::membership::{self, Registry};
use crate::mvcc::{Applier, Mvcc};
use crate::pb::etcdserverpb::Member;
use crate::watch::WatchHub;

/// A member's storage, opened and with its ids decided, not yet running.
pub struct Opened {
    pub(super) cfg: NodeConfig,
    pub(super) db: Arc<Db>,
    pub(super) log: LogStore,
    pub(super) id: u64,
    pub(super) cluster_id: u64,
    pub(super) snap_dir: PathBuf,
    pub(super) applied: u64,
    /// Set by `--force-new-cluster`: the index of its last configuration
    /// change.
    pub(super) forced: Option<u64>,
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
        let status = node.status.clone();
        let handle = std::thread::Builder::new()
            .name(format!("raft-{name}"))
            .spawn(move || {
                // A panic in raft-rs (a log it finds impossible) stops the
                // member as a storage failure does: without this, the
                // process lived on serving serializable reads of whatever
                // it had, an empty keyspace included.
                let run = std::panic::AssertUnwindSafe(|| lp.run());
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let why = raft_panic_reason(panic.as_ref());
                    tracing::error!(reason = %why, "raft loop stopped: it panicked");
                    status.write().fatal = Some(why);
                }
            })
            .map_err(|e| StoreError::Storage(format!("cannot start raft thread: {e}")))?;
        *node.thread.lock() = Some(handle);
        tokio::spawn(publish_attributes(Arc::downgrade(&node)));
        Ok(node)
    }

    /// The handle and its loop, not yet running.
    pub(super) fn build(
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
        mvcc.answers().set_max(cfg.max_response_bytes_in_flight);
        mvcc.answers().set_stall_ms(cfg.max_answer_stall_ms);
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
            registry,
            alarms,
            auth,
            cfg,
            tx,
            mvcc,
            db,
            hub,
            status,
            next_request: AtomicU64::new(initial_request_counter()),
            thread: parking_lot::Mutex::new(None),
            found_damaged: Default::default(),
            transport,
        });
        let lp = new_loop(&node, raw, rx, applied, snap_dir, forced);
        Ok((node, lp))
    }
}

/// The loop of `node`, sharing its handle's state (the same database,
/// keyspace, watch hub, transport, status, registry, alarms and auth).
fn new_loop(
    node: &Node,
    raw: RawNode<LogStore>,
    rx: Receiver<Input>,
    applied: u64,
    snap_dir: PathBuf,
    forced: Option<u64>,
) -> Loop {
    Loop {
        raw,
        db: node.db.clone(),
        applier: Applier::new(node.mvcc.clone()),
        hub: node.hub.clone(),
        transport: node.transport.clone(),
        rx,
        status: node.status.clone(),
        waiters: HashMap::new(),
        reads: ReadQueue::default(),
        greeted: None,
        backups: Vec::new(),
        id: node.id,
        cluster_id: node.cluster_id,
        applied,
        tick: Duration::from_millis(node.cfg.tick_ms),
        snap_dir,
        registry: node.registry.clone(),
        alarms: node.alarms.clone(),
        auth: node.auth.clone(),
        membership_changed: true,
        removed: false,
        conf_in_batch: false,
        leaving: None,
        held_removal_reply: None,
        refused_entries: 0,
        snapshot_count: node.cfg.snapshot_count.max(1),
        catchup_entries: node.cfg.snapshot_catchup_entries,
        applied_trace: None,
        forced,
        campaign_alone: false,
    }
}

/// How long a member waits before campaigning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ElectionTimeout {
    /// Raft's default: drawn anew from [election, 2 × election) ticks.
    Randomized,
    /// Exactly `election_ticks` every time. raft-rs draws from the
    /// thread's own generator, which the simulation cannot seed, so it
    /// gives each member a different fixed timeout instead.
    Fixed,
}

/// raft-rs's node over the opened log, with our settings (etcd's: pre-vote,
/// check-quorum, ReadIndex in safe mode). A sole voter campaigns at once.
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

/// Request ids only need to be unique among this process's waiters and the
/// entries it may still re-apply from before a restart: start from the
/// clock so a restarted process does not reuse recent ids.
fn initial_request_counter() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ms << 20
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

/// What a panic of the raft loop says, for the member's fatal status, with
/// the likely cause where raft-rs names one.
fn raft_panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    // raft-rs: "to_commit N is out of range [last_index M]", as etcd's
    // "tocommit(N) is out of range [lastIndex(M)]".
    let hint = if msg.contains("out of range [last_index") {
        ": the cluster committed entries this member's raft log does not \
         have (was its data directory wiped or replaced while it kept its \
         member ID?); remove the member and add it again with an empty data \
         directory (etcdctl member remove, member add, \
         --initial-cluster-state existing)"
    } else {
        ""
    };
    format!("raft loop panicked: {msg}{hint}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_raft_panic_names_its_likely_cause() {
        let p: Box<dyn std::any::Any + Send> =
            Box::new("to_commit 12 is out of range [last_index 0]".to_string());
        let why = super::raft_panic_reason(p.as_ref());
        assert!(why.starts_with("raft loop panicked: to_commit 12"), "{why}");
        assert!(why.contains("member remove"), "{why}");
        let p: Box<dyn std::any::Any + Send> = Box::new("other");
        assert_eq!(
            super::raft_panic_reason(p.as_ref()),
            "raft loop panicked: other"
        );
    }
}
