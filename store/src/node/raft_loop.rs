//! The raft loop: the one thread that owns `RawNode`. Each round drains up
//! to `INPUTS_PER_ROUND_MAX` inputs, ticks, and handles one `Ready` in
//! raft-rs's order (send; apply into an unsynced batch; append to the
//! raft-log segments with one fdatasync; publish, answer, send what waited
//! for persistence, advance). Applying
//! entries is `apply.rs`; storage setup and snapshot install `bootstrap.rs`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::RwLock;
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{LightReady, RawNode, Ready, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use super::bootstrap::install_snapshot;
use super::read_index::ReadQueue;
use super::{
    AppliedEntry, Input, NodeStatus, Transport, BACKUPS_AT_ONCE_MAX, INPUTS_PER_ROUND_MAX,
    LEARNER_READY_FRACTION, LEASE_REVOKES_PER_TICK_MAX,
};
use crate::auth::Auth;
use crate::db::{Db, WriteBatch};
use crate::error::{Result, StoreError};
use crate::log_store::writing::{Outcome, Writing};
use crate::log_store::LogStore;
use crate::membership::Registry;
use crate::mvcc::{Applier, RevEvents, WriteResult};
use crate::pb::etcdserverpb::{LeaseRevokeRequest, ResponseHeader};
use crate::pb::internal::internal_request::Request;
use crate::pb::internal::{InternalRequest, LeaseExpiry};
use crate::watch::WatchHub;
use crate::{membership, snapshot};

pub(super) type Waiter = oneshot::Sender<Result<(WriteResult, ResponseHeader)>>;

/// What draining the input queue ended on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Drained {
    Empty,
    /// The limit was reached with inputs still queued.
    More,
    Stop,
}

/// Results of applying entries, held until their batch is durable.
#[derive(Default)]
pub(super) struct Applied {
    pub(super) events: Vec<RevEvents>,
    pub(super) replies: Vec<(Waiter, Result<(WriteResult, ResponseHeader)>)>,
}

/// A leader that applied its own removal. Stopping at once can strand the
/// remaining voters: if none of them has heard that the removal committed
/// (the broadcast was lost or reordered), each still counts this member in
/// its configuration, and a quorum of that configuration no longer exists
/// (found by the simulation: a cluster shrunk to one voter never elected
/// a leader again). So it stays, as etcd's removed leader lingers, sending
/// heartbeats that carry the commit index, until a quorum of the remaining
/// voters has acknowledged an index at or past the removal (they can then
/// elect a leader, who brings the rest along), or `ticks_left` run out.
/// It proposes, reads and ticks nothing meanwhile, and the removal's own
/// client hears only when it leaves, so an operator who stops the process
/// on that answer strands nobody.
pub(super) struct Leaving {
    removal_index: u64,
    ticks_left: usize,
    held_reply: Option<(Waiter, Result<(WriteResult, ResponseHeader)>)>,
    /// The highest commit index each voter has acknowledged since.
    acked: HashMap<u64, u64>,
}

pub(super) struct Loop {
    pub(super) raw: RawNode<LogStore>,
    pub(super) db: Arc<Db>,
    pub(super) applier: Applier,
    pub(super) hub: Arc<WatchHub>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) rx: Receiver<Input>,
    pub(super) status: Arc<RwLock<NodeStatus>>,
    pub(super) waiters: HashMap<u64, Waiter>,
    pub(super) reads: ReadQueue,
    /// When `greet` last sent heartbeats.
    pub(super) greeted: Option<Instant>,
    /// Backups being written, and who waits for each.
    pub(super) backups: Vec<(Writing, oneshot::Sender<Result<PathBuf>>)>,
    pub(super) id: u64,
    pub(super) cluster_id: u64,
    pub(super) applied: u64,
    pub(super) tick: Duration,
    pub(super) snap_dir: PathBuf,
    pub(super) registry: Arc<RwLock<Registry>>,
    pub(super) alarms: Arc<RwLock<BTreeSet<(u64, i32)>>>,
    pub(super) auth: Arc<Auth>,
    /// The transport must learn the member list again.
    pub(super) membership_changed: bool,
    /// This member applied its own removal: it stops.
    pub(super) removed: bool,
    /// The batch being built applies a configuration change: it is synced
    /// before anything else happens (see `write_applied`).
    pub(super) conf_in_batch: bool,
    /// A leader that applied its own removal, still telling the remaining
    /// voters that the removal is committed (see `leaving_round`).
    pub(super) leaving: Option<Leaving>,
    /// Committed entries this member could not apply and skipped.
    pub(super) refused_entries: u64,
    /// The answer to this leader's own removal, until it is `Leaving`.
    pub(super) held_removal_reply: Option<(Waiter, Result<(WriteResult, ResponseHeader)>)>,
    pub(super) snapshot_count: u64,
    pub(super) catchup_entries: u64,
    /// Every entry applied, in order, for the simulation's checks; `None`
    /// (nothing recorded) in production.
    pub(super) applied_trace: Option<Vec<AppliedEntry>>,
    /// The index of the last configuration change `--force-new-cluster`
    /// appended, until it is applied (`check_forced`).
    pub(super) forced: Option<u64>,
    /// This member was just forced to be the only voter: it campaigns at
    /// the end of the round instead of waiting out an election timeout.
    pub(super) campaign_alone: bool,
}

impl Loop {
    pub(super) fn run(mut self) {
        tracing::info!(
            member = format_args!("{:x}", self.id),
            cluster = format_args!("{:x}", self.cluster_id),
            applied = self.applied,
            "raft loop started"
        );
        let mut next_tick = self.now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(self.now());
            match self.rx.recv_timeout(wait) {
                Ok(Input::Stop) => break,
                Ok(input) => self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.drain_inputs(INPUTS_PER_ROUND_MAX) == Drained::Stop {
                break;
            }
            let now = self.now();
            if now >= next_tick {
                next_tick = now + self.tick;
                self.tick(now);
                // The data directory (snap/ may not exist yet).
                let data_dir = self.snap_dir.parent().unwrap_or(&self.snap_dir);
                if let Err(e) = crate::disk::check(data_dir) {
                    tracing::error!(error = %e, "raft loop stopped: disk full");
                    self.status.write().fatal = Some(e.to_string());
                    return;
                }
            }
            if self.round().is_err() {
                return;
            }
        }
        let st = self.status.read().clone();
        tracing::info!(
            entries = st.entries_persisted,
            fsyncs = st.fsyncs,
            entries_per_fsync = format_args!(
                "{:.1}",
                st.entries_persisted as f64 / st.fsyncs.max(1) as f64
            ),
            "raft loop stopped"
        );
    }

    pub(super) fn now(&self) -> Instant {
        self.applier.mvcc().clock().now()
    }

    /// Handles up to `max` queued inputs without waiting for any.
    pub(super) fn drain_inputs(&mut self, max: usize) -> Drained {
        for _ in 0..max {
            match self.rx.try_recv() {
                Ok(Input::Stop) => return Drained::Stop,
                Ok(input) => self.handle(input),
                Err(_) => return Drained::Empty,
            }
        }
        Drained::More
    }

    /// One tick of raft's logical clock, and what is timed by it.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.leaving.is_some() {
            return self.leaving_tick();
        }
        self.raw.tick();
        self.waiters.retain(|_, w| !w.is_closed());
        self.expire_leases(now);
        self.status.write().db_size_bytes = self.db.size_bytes();
    }

    /// Sends due reads and handles one `Ready`. An error means the loop
    /// must stop (the reason is in the status).
    pub(super) fn round(&mut self) -> std::result::Result<(), ()> {
        if self.leaving.is_some() {
            return self.leaving_round();
        }
        let now = self.now();
        self.reads.maybe_send(&mut self.raw, now);
        self.answer_backups();
        if let Err(e) = self.on_ready() {
            tracing::error!(error = %e, "raft loop stopped: storage failure");
            self.status.write().fatal = Some(e.to_string());
            return Err(());
        }
        if std::mem::take(&mut self.campaign_alone) && self.raw.raft.state != StateRole::Leader {
            if let Err(e) = self.raw.campaign() {
                tracing::warn!(error = %e, "cannot campaign after --force-new-cluster");
            }
        }
        if self.removed {
            if self.raw.raft.state == StateRole::Leader && std::env::var("NOLEAVE").is_err() {
                tracing::warn!(
                    index = self.applied,
                    "this member was removed while leading; it stays until the remaining \
                     voters know the removal is committed"
                );
                self.leaving = Some(Leaving {
                    removal_index: self.applied,
                    ticks_left: 2 * self.raw.raft.election_timeout(),
                    held_reply: self.held_removal_reply.take(),
                    acked: HashMap::new(),
                });
                return self.leaving_round();
            }
            return self.stop_removed();
        }
        Ok(())
    }

    fn stop_removed(&mut self) -> std::result::Result<(), ()> {
        tracing::warn!("this member was removed from the cluster; stopping");
        self.status.write().fatal = Some(StoreError::Removed.to_string());
        Err(())
    }

    /// A round of a removed leader (`Leaving`): send the heartbeats `tick`
    /// queued, and stop once a quorum of the remaining voters acknowledged
    /// the removal's index, or the time is up. `advance` is never called
    /// again, nor is anything stepped into raft: raft-rs looks the leader
    /// up in its own progress, which no longer holds it.
    fn leaving_round(&mut self) -> std::result::Result<(), ()> {
        let msgs = std::mem::take(&mut self.raw.raft.msgs);
        if !msgs.is_empty() {
            self.transport.send(msgs);
        }
        let leaving = self.leaving.as_ref().expect("leaving");
        let mut voters = self.voters();
        voters.retain(|id| *id != self.id);
        let informed = voters
            .iter()
            .filter(|id| {
                leaving
                    .acked
                    .get(id)
                    .is_some_and(|c| *c >= leaving.removal_index)
            })
            .count();
        let quorum = voters.is_empty() || informed * 2 > voters.len();
        if !quorum && leaving.ticks_left > 0 {
            return Ok(());
        }
        if !quorum {
            tracing::warn!(
                informed,
                voters = voters.len(),
                "too few remaining voters acknowledged the removal in time"
            );
        }
        self.hand_over(&voters);
        if let Some((w, res)) = self.leaving.as_mut().and_then(|l| l.held_reply.take()) {
            let _ = w.send(res);
        }
        self.stop_removed()
    }

    /// As it leaves, a removed leader tells the remaining voter furthest
    /// along to campaign at once (raft's `TimeoutNow`, what a leadership
    /// transfer ends with), so the cluster is not without a leader for an
    /// election timeout, which pre-vote and the followers' leader lease
    /// can stretch to two.
    fn hand_over(&mut self, voters: &[u64]) {
        let prs = self.raw.raft.prs();
        let Some(to) = voters
            .iter()
            .filter_map(|id| Some((prs.get(*id)?.matched, *id)))
            .max()
            .map(|(_, id)| id)
        else {
            return;
        };
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgTimeoutNow);
        m.from = self.id;
        m.to = to;
        m.term = self.raw.raft.term;
        self.transport.send(vec![m]);
    }

    /// Runs once the last change `--force-new-cluster` appended is applied:
    /// this member must now be the only member, in raft's configuration
    /// and in the registry alike, or the forced start failed and the member
    /// stops rather than serve as something else. Then it campaigns at once.
    pub(super) fn check_forced(&mut self) -> Result<()> {
        self.forced = None;
        let voters = self.voters();
        let learners: Vec<u64> = self
            .raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        let members: Vec<u64> = self.registry.read().list().iter().map(|m| m.id).collect();
        if voters != [self.id] || !learners.is_empty() || members != [self.id] {
            return Err(StoreError::Storage(format!(
                "--force-new-cluster did not leave this member ({:x}) alone: voters {voters:x?}, \
                 learners {learners:x?}, members {members:x?}",
                self.id
            )));
        }
        tracing::warn!(
            index = self.applied,
            "--force-new-cluster: this member is now the only member of its cluster; add \
             members back with `member add` and `--initial-cluster-state existing`"
        );
        self.campaign_alone = true;
        Ok(())
    }

    /// The voters in this member's configuration, in order.
    pub(super) fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        v
    }

    /// A tick while `Leaving`: a heartbeat to every remaining voter (it
    /// carries the commit index each can take), and no election clock.
    fn leaving_tick(&mut self) {
        if let Some(l) = &mut self.leaving {
            l.ticks_left = l.ticks_left.saturating_sub(1);
            self.raw.raft.ping();
        }
    }

    pub(super) fn handle(&mut self, input: Input) {
        if self.leaving.is_some() {
            return self.handle_leaving(input);
        }
        match input {
            Input::Propose { id, data, reply } => {
                let res = self.raw.propose(vec![], data);
                self.track_proposal(res, id, reply);
            }
            Input::Step(m) => {
                if let Err(e) = self.raw.step(*m) {
                    tracing::debug!(error = %e, "raft step");
                }
            }
            Input::ReadIndex(reply) => self.reads.pending.push(reply),
            Input::Backup { dir, reply } => {
                // Written aside (`log_store::writing`): a million keys
                // would hold the loop for a second. Answered by `round`.
                if self.backups.len() >= BACKUPS_AT_ONCE_MAX {
                    let _ = reply.send(Err(StoreError::TooManyRequests));
                } else {
                    match self.raw.store().start_state_snapshot(&dir) {
                        Ok(w) => self.backups.push((w, reply)),
                        Err(e) => drop(reply.send(Err(e))),
                    }
                }
            }
            Input::TransferLeader { target, reply } => {
                let _ = reply.send(self.transfer_leader(target));
            }
            Input::ConfChange {
                id,
                cc,
                context,
                promote,
                reply,
            } => match self.conf_change_refusal(promote) {
                Some(e) => {
                    let _ = reply.send(Err(e));
                }
                None => {
                    let res = self.raw.propose_conf_change(context, cc);
                    self.track_proposal(res, id, reply);
                }
            },
            Input::Unreachable(peer) => self.raw.report_unreachable(peer),
            Input::PeerUp(peer) => self.greet(peer, self.now()),
            Input::SnapshotReport(peer, delivered) => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
            Input::Stop => {}
        }
    }

    /// Starts moving leadership to `target`, if this member leads and
    /// `target` is a voter.
    fn transfer_leader(&mut self, target: u64) -> Result<()> {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Leader {
            Err(StoreError::NotLeader)
        } else if !raft.prs().conf().voters().contains(target) {
            Err(StoreError::BadLeaderTransferee)
        } else {
            self.raw.transfer_leader(target);
            Ok(())
        }
    }

    /// Why a configuration change (promoting `promote`, if set) cannot be
    /// proposed now, if it cannot.
    fn conf_change_refusal(&self, promote: Option<u64>) -> Option<StoreError> {
        let raft = &self.raw.raft;
        if let Some(learner) = promote {
            // Only the leader knows how far a learner got.
            if raft.state != StateRole::Leader {
                return Some(StoreError::NotLeader);
            }
            let leader_match = raft.raft_log.last_index();
            let matched = raft.prs().get(learner).map(|p| p.matched).unwrap_or(0);
            if (matched as f64) < LEARNER_READY_FRACTION * leader_match as f64 {
                return Some(StoreError::LearnerNotReady);
            }
        }
        if raft.state == StateRole::Leader && raft.has_pending_conf() {
            return Some(StoreError::InvalidArgument(
                "a membership change is still in progress; retry".into(),
            ));
        }
        None
    }

    /// Inputs while `Leaving`: peers' replies say how far each voter's
    /// commit index got; everything asked of this member is refused, since
    /// it is no longer one.
    fn handle_leaving(&mut self, input: Input) {
        match input {
            Input::Step(m) => {
                let replies = [
                    MessageType::MsgHeartbeatResponse,
                    MessageType::MsgAppendResponse,
                ];
                let term = self.raw.raft.term;
                if let Some(l) = &mut self.leaving {
                    if m.term == term && replies.contains(&m.get_msg_type()) {
                        let c = l.acked.entry(m.from).or_default();
                        *c = (*c).max(m.commit);
                    }
                }
            }
            Input::Propose { reply, .. } | Input::ConfChange { reply, .. } => {
                let _ = reply.send(Err(StoreError::Removed));
            }
            Input::ReadIndex(reply) | Input::TransferLeader { reply, .. } => {
                let _ = reply.send(Err(StoreError::Removed));
            }
            Input::Backup { reply, .. } => {
                let _ = reply.send(Err(StoreError::Removed));
            }
            Input::Unreachable(_) | Input::PeerUp(_) | Input::SnapshotReport(..) | Input::Stop => {}
        }
    }

    /// Answers the backups whose files are written.
    fn answer_backups(&mut self) {
        let mut i = 0;
        while i < self.backups.len() {
            match self.backups[i].0.poll() {
                Outcome::Running => i += 1,
                Outcome::Done(r) => {
                    let (_, reply) = self.backups.swap_remove(i);
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// A leader's heartbeat to every follower, when peer `peer` has just
    /// connected; at most one per `GREET_INTERVAL` (a peer reconnecting
    /// in a loop must not turn into a heartbeat storm).
    fn greet(&mut self, peer: u64, now: Instant) {
        const GREET_INTERVAL: Duration = Duration::from_millis(20);
        let leads = self.raw.raft.state == StateRole::Leader;
        if !leads || self.raw.raft.prs().get(peer).is_none() {
            return;
        }
        if self
            .greeted
            .is_some_and(|t| now.saturating_duration_since(t) < GREET_INTERVAL)
        {
            return;
        }
        self.greeted = Some(now);
        self.raw.ping();
    }

    /// Waits for a proposal raft took; answers one it refused at once.
    /// The waiter for an applied entry, if this member proposed it. Ids are
    /// only unique per member, so the proposer must match too: another
    /// member's entry with an equal id must never answer our client.
    pub(super) fn take_waiter(&mut self, proposer: u64, id: u64) -> Option<Waiter> {
        if proposer != self.id {
            return None;
        }
        self.waiters.remove(&id)
    }

    pub(super) fn track_proposal(&mut self, res: raft::Result<()>, id: u64, reply: Waiter) {
        match res {
            Ok(()) => {
                self.waiters.insert(id, reply);
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(StoreError::NoLeader));
            }
            Err(e) => {
                let _ = reply.send(Err(StoreError::InvalidArgument(e.to_string())));
            }
        }
    }

    pub(super) fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            self.install_ready_snapshot(rd.snapshot())?;
        }
        let applied = self.apply_and_persist(&mut rd)?;
        self.finish(applied);
        self.transport.send(rd.take_persisted_messages());
        if self.removed {
            // Once it applied its own removal, raft-rs no longer tracks this
            // member's progress, and `advance` on a leader looks itself up
            // there and panics (found by the simulation: a leader removing
            // itself under load). The batch is durable and the clients are
            // answered; the loop stops.
            return Ok(());
        }
        let light = self.raw.advance(rd);
        self.on_light_ready(light)
    }

    /// A `Ready`'s committed entries applied, and its new entries and hard
    /// state persisted with the results: one batch, at most one fsync.
    fn apply_and_persist(&mut self, rd: &mut Ready) -> Result<Applied> {
        let mut batch = WriteBatch::default();
        let mut applied = Applied::default();
        self.apply_entries(rd.take_committed_entries(), &mut batch, &mut applied)?;
        let new_entries = rd.entries().len() as u64;
        self.raw.mut_store().append(rd.entries())?;
        self.planted_apply_appended(rd.entries(), &mut batch, &mut applied)?;
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone())?;
        }
        for rs in rd.take_read_states() {
            self.reads.on_read_state(&rs.request_ctx, rs.index);
        }
        // The state machine's batch needs no fsync: the entries it applied
        // are already in the synced log, and a crash re-applies them.
        self.write_applied(batch)?;
        self.persist_log(rd.must_sync(), new_entries)?;
        Ok(applied)
    }

    /// Writes the staged log appends and hard state. Only new entries or a
    /// term/vote change need an fsync before we go on (raft-rs's
    /// must_sync). A batch holding just applied results and a higher
    /// commit index is re-derivable from the synced log.
    fn persist_log(&mut self, must_sync: bool, new_entries: u64) -> Result<()> {
        if must_sync && !crate::planted::on(crate::planted::Bug::AckBeforeFsync) {
            let t = Instant::now();
            self.raw.mut_store().persist(true)?;
            crate::metrics::FSYNC_SECONDS.observe(t.elapsed().as_secs_f64());
            let mut st = self.status.write();
            st.fsyncs += 1;
            st.entries_persisted += new_entries;
        } else {
            self.raw.mut_store().persist(false)?;
        }
        Ok(())
    }

    /// What raft-rs hands back after `advance`: a higher commit index, the
    /// messages that waited for it, and the entries it committed.
    fn on_light_ready(&mut self, mut light: LightReady) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut applied = Applied::default();
        if let Some(commit) = light.commit_index() {
            // Staged only: it is written with the next Ready's records (a
            // commit index lost in a crash is learned again from the
            // leader, and never below the applied index: `reconcile`).
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries(), &mut batch, &mut applied)?;
        self.write_applied(batch)?;
        self.finish(applied);
        if self.removed {
            return Ok(()); // as in `on_ready`: no `advance` after its own removal
        }
        self.raw.advance_apply();
        self.reads.release(self.applied);
        self.maybe_compact_log()?;
        self.update_status();
        Ok(())
    }

    /// Writes a batch of apply results. Unsynced as a rule: the entries it
    /// applied are in the synced log, the applied index travels with the
    /// results, and a crash re-applies them once the commit index is
    /// learned again. Except a configuration change: it is synced, with
    /// everything before it, before anyone hears of it. Otherwise a crash
    /// brings back the configuration before it, whose quorum may no longer
    /// exist (a removed member stops): the survivor could never learn the
    /// commit index again, and what it acknowledged under the new
    /// configuration was lost (found by the simulation, seed 7319532).
    fn write_applied(&mut self, batch: WriteBatch) -> Result<()> {
        if !batch.is_empty() {
            self.db.write_nosync(batch)?;
        }
        if std::mem::take(&mut self.conf_in_batch) && std::env::var("NOSYNC").is_err() {
            self.db.sync_wal()?;
        }
        Ok(())
    }

    /// Installs the snapshot a `Ready` carries, and reloads everything
    /// derived from the replaced state.
    fn install_ready_snapshot(&mut self, snapshot: &raft::eraftpb::Snapshot) -> Result<()> {
        let meta = snapshot.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let path = snapshot::file_path(&self.snap_dir, index);
        let started = std::time::Instant::now();
        let (applied, installed) =
            install_snapshot(&self.db, self.raw.mut_store(), &path, Some((index, term)))?;
        self.applied = applied;
        let written_ms = started.elapsed().as_millis() as u64;
        self.applier.mvcc().reload_installed(installed)?;
        let reloaded_ms = started.elapsed().as_millis() as u64 - written_ms;
        self.applier.reset();
        self.hub.resync_all();
        *self.registry.write() = Registry::load(&self.db)?;
        *self.alarms.write() = membership::load_alarms(&self.db)?;
        self.auth.reload(&self.db)?;
        self.membership_changed = true;
        tracing::info!(
            index,
            term,
            revision = self.applier.revision(),
            written_ms,
            reloaded_ms,
            "installed snapshot"
        );
        Ok(())
    }

    /// The planted `FollowerAppliesUncommitted` bug (`crate::planted`): a
    /// follower applies what it just appended. Nothing without the feature.
    fn planted_apply_appended(
        &mut self,
        entries: &[Entry],
        batch: &mut WriteBatch,
        applied: &mut Applied,
    ) -> Result<()> {
        if !crate::planted::on(crate::planted::Bug::FollowerAppliesUncommitted)
            || self.raw.raft.state != StateRole::Follower
        {
            return Ok(());
        }
        let ahead: Vec<Entry> = entries
            .iter()
            .filter(|e| e.index > self.applied)
            .cloned()
            .collect();
        if ahead.first().map(|e| e.index) == Some(self.applied + 1) {
            self.apply_entries(ahead, batch, applied)?;
        }
        Ok(())
    }

    /// The leader proposes revokes for expired leases (others only track).
    pub(super) fn expire_leases(&mut self, now: Instant) {
        // `is_leader` turns true only in `update_status`, right after the
        // leases were promoted: before that, expiries are still the old
        // leader's and must not be acted on.
        let leader = self.raw.raft.state == StateRole::Leader && self.status.read().is_leader;
        if !leader && !crate::planted::on(crate::planted::Bug::FollowerExpiresLeases) {
            return;
        }
        let mvcc = self.applier.mvcc().clone();
        let expired = mvcc.lessor().take_expired(now, LEASE_REVOKES_PER_TICK_MAX);
        let legacy = !expired.is_empty() && !self.transport.older_peers().is_empty();
        for id in expired {
            // A member of an older release stops at a `LeaseExpiry` (it
            // cannot decode it): while one may be in the cluster, the
            // revoke is the plain one every release applies (README,
            // "Upgrades").
            let request = if legacy {
                Request::LeaseRevoke(LeaseRevokeRequest { id })
            } else {
                Request::LeaseExpiry(LeaseExpiry {
                    id,
                    decided_at: self.applied,
                })
            };
            // Request id 0: nobody waits for these.
            let data = InternalRequest {
                id: 0,
                proposer: 0,
                request: Some(request),
                auth_revision: None,
                auth_fence: None,
                write_answer_bytes_max: None,
                txn_decided_first: false,
                txn_rules_etcd: false,
            }
            .encode_to_vec();
            if self.raw.propose(vec![], data).is_err() {
                mvcc.lessor().forget_revoking();
                return;
            }
            tracing::info!(lease = format_args!("{id:x}"), "lease expired; revoking");
        }
    }

    /// Truncates the log once it holds `snapshot_count` applied entries
    /// beyond the last truncation, keeping `catchup_entries` for slow
    /// followers. A follower further behind gets a snapshot file instead.
    pub(super) fn maybe_compact_log(&mut self) -> Result<()> {
        let store = self.raw.mut_store();
        store.set_applied(self.applied);
        if self.applied < store.truncated_index() + self.snapshot_count {
            return Ok(());
        }
        let to = self.applied.saturating_sub(self.catchup_entries);
        if to <= store.truncated_index() {
            return Ok(());
        }
        // The log forgets entries up to `to`: what applying them wrote must
        // be durable first.
        self.db.sync_wal()?;
        store.compact(to)?;
        tracing::debug!(to, applied = self.applied, "compacted raft log");
        Ok(())
    }

    /// After the batch holding `applied` is durable: readers, then
    /// watchers, then the waiting clients, then the transport.
    pub(super) fn finish(&mut self, applied: Applied) {
        let applier = &mut self.applier;
        self.hub.publish(&applied.events, || applier.publish());
        for (w, res) in applied.replies {
            let _ = w.send(res);
        }
        if self.membership_changed {
            self.membership_changed = false;
            let peers = self
                .registry
                .read()
                .peer_addresses()
                .into_iter()
                .filter(|(id, _)| *id != self.id)
                .collect();
            self.transport.update_peers(peers);
        }
    }

    pub(super) fn update_status(&mut self) {
        let r = &self.raw.raft;
        let leader_now = r.state == StateRole::Leader;
        let was_leader = self.status.read().is_leader;
        if leader_now && !was_leader {
            // A new leader gives every lease a full TTL from now, so an
            // election never expires a lease early.
            let now = self.applier.mvcc().clock().now();
            self.applier.mvcc().lessor().promote(now);
        } else if was_leader && !leader_now {
            self.applier.mvcc().lessor().forget_revoking();
        }
        let mut st = self.status.write();
        if st.leader != r.leader_id && r.leader_id != 0 {
            crate::metrics::LEADER_CHANGES.inc();
        }
        st.leader = r.leader_id;
        st.term = r.term;
        st.commit_index = r.raft_log.committed;
        st.applied_index = self.applied;
        st.is_leader = r.state == StateRole::Leader;
        st.is_learner = r.prs().conf().learners().contains(&self.id);
        st.slow_read_indexes = self.reads.slow_rounds;
    }
}
