//! raft-rs's `Storage` for one member: the raft log and hard state in
//! segment files (`raftlog`), the configuration with the state machine in
//! RocksDB's meta column family.
//!
//! Appends and hard states are staged by `append`/`set_hard_state` and
//! written by `persist` (synced when raft-rs says the `Ready` must be),
//! before `RawNode::advance`, because raft-rs reads entries back through
//! `Storage` once they leave its unstable log. Each entry's term and place
//! are kept in memory (24 bytes per entry), so `term()`, which raft calls
//! on every append, never reads the disk. The newest entries are also kept
//! whole in a bounded cache (`EntryCache`): raft reads back every entry it
//! commits and every entry it sends a follower, and serving those from
//! memory saves a read, a CRC check and a decode per entry.
//!
//! The state machine is written without fsync (it is re-derivable from the
//! synced log), so on open the two are reconciled: the log must reach the
//! applied index, and a snapshot the state machine was set to (`LOG_BASE`)
//! moves the log's start there if a crash came before the log's reset.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use crate::db::WriteBatch;
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::db::{u64_from, Db, CF_META};
use crate::error::{Result, StoreError};
use crate::raftlog::{files::LogDir, Loc, SegmentLog, SEGMENT_BYTES_REAL, SEGMENT_BYTES_SIM};
use crate::schema::meta;
use crate::snapshot::{self, SnapshotHeader, SnapshotWriter};
use cache::{payload_bytes, EntryCache, ENTRY_CACHE_BYTES_MAX, ENTRY_CACHE_ENTRIES_MAX};

mod cache;
mod migrate;
pub mod writing;

/// The state machine, as raft's storage needs it: able to write itself into
/// a snapshot file at the current applied index.
pub trait StateSource: Send + Sync {
    /// Writes every record into `w`, calling `taken` once what is written
    /// no longer depends on the state changing (a view is held, or the
    /// records are read): the raft loop waits for that, not for the file.
    fn write_snapshot(&self, w: &mut SnapshotWriter, taken: &mut dyn FnMut()) -> Result<()>;
    /// Whether `write_snapshot` can read a point-in-time view while the
    /// state changes (else it is written on the caller's thread: the
    /// simulation's disk, whose one thread must stay the only one).
    fn has_views(&self) -> bool;
}

/// Snapshot files kept on disk (older ones are pruned).
const SNAPSHOT_FILES_KEPT: usize = 3;

fn storage_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

pub struct LogStore {
    db: Arc<Db>,
    log: SegmentLog,
    hard_state: HardState,
    conf_state: ConfState,
    snap_index: u64,
    snap_term: u64,
    /// metas[i] is the term and place of entry snap_index + 1 + i.
    metas: Vec<(u64, Loc)>,
    cache: EntryCache,
    /// Applied index of the state machine (set by the raft loop).
    applied: u64,
    snap_dir: PathBuf,
    state: Option<Arc<dyn StateSource>>,
    /// The newest snapshot file written or received: (index, term).
    latest_file: RefCell<Option<(u64, u64)>>,
    /// The snapshot file being written for a follower, off this thread.
    writing: RefCell<Option<writing::Writing>>,
    /// The last entry known to be on disk: written with a sync, or found
    /// there at open (the simulation's check that what a member
    /// acknowledged is on a quorum's synced log reads it).
    synced_last: u64,
}

impl LogStore {
    /// Opens the log (migrating an old data directory's), and reconciles it
    /// with the state machine in `db`.
    pub fn open(db: Arc<Db>) -> Result<LogStore> {
        let dir = db.log_dir();
        let segment_bytes = match dir {
            LogDir::Real(_) => segment_bytes_real()?,
            LogDir::Mem(_) => SEGMENT_BYTES_SIM,
        };
        let fresh = dir.list()?.is_empty();
        let (log, replayed) = SegmentLog::open(dir, segment_bytes)?;
        let conf_state = match db.get(CF_META, meta::CONF_STATE)? {
            Some(v) => parse::<ConfState>(&v, "conf state")?,
            None => ConfState::default(),
        };
        let mut store = LogStore {
            db,
            log,
            hard_state: replayed.hard_state,
            conf_state,
            snap_index: replayed.snap_index,
            snap_term: replayed.snap_term,
            metas: replayed.entries,
            cache: EntryCache::default(),
            applied: 0,
            snap_dir: PathBuf::new(),
            state: None,
            latest_file: RefCell::new(None),
            writing: RefCell::new(None),
            synced_last: 0,
        };
        if fresh {
            store.migrate()?;
        }
        store.reconcile()?;
        store.warm_cache()?;
        store.synced_last = store.last();
        Ok(store)
    }

    /// Makes the log agree with the state machine after a crash: it starts
    /// at the newest snapshot the state machine was set to, and reaches
    /// the applied index (which it always does unless a synced write was
    /// lost); the commit index is at least the applied one.
    fn reconcile(&mut self) -> Result<()> {
        let applied = match self.db.get(CF_META, meta::APPLIED)? {
            Some(v) => u64_from(&v, "applied index")?,
            None => 0,
        };
        if let Some(v) = self.db.get(CF_META, meta::LOG_BASE)? {
            let (index, term) = (
                u64_from(&v[..8.min(v.len())], "log base index")?,
                u64_from(&v[8.min(v.len())..], "log base term")?,
            );
            if index > self.snap_index {
                if self.term(index).ok() == Some(term) {
                    self.log.compact(index, term)?;
                    self.drop_through(index, term);
                } else {
                    tracing::warn!(
                        index,
                        term,
                        "the raft log predates the installed snapshot; resetting it there"
                    );
                    self.reset_to(index, term)?;
                    self.persist(true)?;
                }
            }
        }
        if applied > self.last() {
            return Err(StoreError::Storage(format!(
                "the raft log ends at entry {} but the state machine applied {applied}: \
                 the log lost synced entries (a disk or file system that does not honour fsync?)",
                self.last()
            )));
        }
        if self.hard_state.commit < applied {
            let mut hs = self.hard_state.clone();
            hs.commit = applied;
            self.set_hard_state(hs)?;
            self.persist(true)?;
        }
        if self.hard_state.commit > self.last() {
            return Err(StoreError::Storage(format!(
                "hard state commits {} but the log ends at {}",
                self.hard_state.commit,
                self.last()
            )));
        }
        Ok(())
    }

    /// Loads the newest entries into the cache: after a restart a leader's
    /// followers read the log's tail.
    fn warm_cache(&mut self) -> Result<()> {
        let mut bytes = 0usize;
        let mut from = self.metas.len();
        while from > 0 && self.metas.len() - from < ENTRY_CACHE_ENTRIES_MAX {
            let len = self.metas[from - 1].1.len as usize + 24;
            if bytes + len > ENTRY_CACHE_BYTES_MAX {
                break;
            }
            bytes += len;
            from -= 1;
        }
        let mut tail = Vec::with_capacity(self.metas.len() - from);
        for (i, (term, loc)) in self.metas[from..].iter().enumerate() {
            let e = self.log.read(*loc)?;
            let want = self.snap_index + 1 + (from + i) as u64;
            if e.index != want || e.term != *term {
                return Err(StoreError::Storage(format!(
                    "raft log entry {want} reads back as {}/{}",
                    e.index, e.term
                )));
            }
            tail.push(e);
        }
        self.cache.append(&tail);
        Ok(())
    }

    /// Where snapshot files live, and the state machine that fills them.
    pub fn set_snapshots(&mut self, dir: PathBuf, state: Arc<dyn StateSource>) {
        self.snap_dir = dir;
        self.state = Some(state);
    }

    pub fn set_applied(&mut self, applied: u64) {
        self.applied = applied;
    }

    /// Index of the last entry dropped from the log (0 if none).
    pub fn truncated_index(&self) -> u64 {
        self.snap_index
    }

    /// Drops entries up to and including `to` (which must be applied, and
    /// whose results the caller made durable: the log forgets them).
    pub fn compact(&mut self, to: u64) -> Result<()> {
        if to <= self.snap_index {
            return Ok(());
        }
        assert!(to <= self.applied, "compacting unapplied entries");
        let term = self
            .term(to)
            .map_err(|e| StoreError::Storage(format!("term of {to}: {e}")))?;
        self.log.compact(to, term)?;
        self.drop_through(to, term);
        Ok(())
    }

    /// Forgets entries up to and including `to` in memory.
    fn drop_through(&mut self, to: u64, term: u64) {
        let n = ((to - self.snap_index) as usize).min(self.metas.len());
        self.metas.drain(..n);
        self.cache.compact(to);
        self.snap_index = to;
        self.snap_term = term;
    }

    /// Stages a reset of the log to continue after `index`.
    fn reset_to(&mut self, index: u64, term: u64) -> Result<()> {
        self.log.append_reset(index, term)?;
        self.synced_last = self.synced_last.min(index);
        self.metas.clear();
        self.cache.clear();
        self.snap_index = index;
        self.snap_term = term;
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        self.set_hard_state(hs)
    }

    /// Replaces the log by an installed snapshot: every entry goes, the
    /// configuration and commit index come from the snapshot. The state
    /// machine's part goes into `batch`; the log's is staged, and the
    /// caller must `persist` it after the batch is durable (`LOG_BASE`
    /// redoes it if a crash comes between).
    pub fn apply_snapshot(
        &mut self,
        index: u64,
        term: u64,
        cs: ConfState,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let mut base = [0u8; 16];
        base[..8].copy_from_slice(&index.to_be_bytes());
        base[8..].copy_from_slice(&term.to_be_bytes());
        batch.put_cf(self.db.cf(CF_META), meta::LOG_BASE, base);
        self.reset_to(index, term)?;
        self.set_conf_state(cs, batch);
        self.applied = index;
        *self.latest_file.borrow_mut() = Some((index, term));
        Ok(())
    }

    /// Starts writing a snapshot of the state machine at the applied index
    /// into `dir` (`writing`). Must run on the raft thread (the only
    /// writer), so that the view the writer takes is of that index.
    pub fn start_state_snapshot(&self, dir: &std::path::Path) -> Result<writing::Writing> {
        let state = self
            .state
            .clone()
            .ok_or_else(|| StoreError::Storage("no state machine attached for snapshots".into()))?;
        let index = self.applied;
        let term = self
            .term(index)
            .map_err(|e| StoreError::Storage(format!("term of {index}: {e}")))?;
        let conf_state = self
            .conf_state
            .write_to_bytes()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let header = SnapshotHeader {
            index,
            term,
            conf_state,
        };
        writing::Writing::start(state, dir, header)
    }

    /// The snapshot file for followers, as its header: an existing one if
    /// it still serves, else one written off the raft thread, which the
    /// transport streams as it grows (`growing`). `None` while a file that
    /// no longer serves is being finished (raft-rs asks again at the next
    /// heartbeat reply).
    fn snapshot_file(&self, request_index: u64) -> Result<Option<SnapshotHeader>> {
        let mut slot = self.writing.borrow_mut();
        if let Some(w) = slot.as_mut() {
            match w.poll() {
                writing::Outcome::Running => return Ok(self.serving(w, request_index)),
                writing::Outcome::Done(result) => {
                    let it = (w.index, w.term);
                    *slot = None;
                    self.written(it, result?);
                }
            }
        }
        if let Some(header) = self.reusable_file(request_index) {
            return Ok(Some(header));
        }
        let mut w = self.start_state_snapshot(&self.snap_dir)?;
        // The simulated disk's are written before `start` returns.
        let header = self.serving(&w, request_index);
        match w.poll() {
            writing::Outcome::Done(result) => self.written((w.index, w.term), result?),
            writing::Outcome::Running => *slot = Some(w),
        }
        Ok(header)
    }

    /// The header of the file `w` writes, if that file serves a follower
    /// that needs `request_index` under the current configuration.
    fn serving(&self, w: &writing::Writing, request_index: u64) -> Option<SnapshotHeader> {
        let current = self.conf_state.write_to_bytes().ok()?;
        (w.index >= request_index && w.index >= self.snap_index && w.conf_state == current).then(
            || SnapshotHeader {
                index: w.index,
                term: w.term,
                conf_state: w.conf_state.clone(),
            },
        )
    }

    fn written(&self, (index, term): (u64, u64), path: PathBuf) {
        tracing::info!(index, term, path = %path.display(), "wrote state snapshot");
        snapshot::prune(&self.snap_dir, SNAPSHOT_FILES_KEPT);
        *self.latest_file.borrow_mut() = Some((index, term));
    }

    /// The newest file, if nothing it describes changed since: the same
    /// configuration (a file from before a member was added would be
    /// ignored by that member), and not older than the log's truncation
    /// point (the follower must continue from the log after it).
    /// Its header, read once for the check and the answer.
    fn reusable_file(&self, request_index: u64) -> Option<SnapshotHeader> {
        let (index, term) = (*self.latest_file.borrow())?;
        if index < request_index || index < self.snap_index {
            return None;
        }
        let header = snapshot::SnapshotReader::open(&snapshot::file_path(&self.snap_dir, index))
            .ok()?
            .header;
        let same =
            ConfState::parse_from_bytes(&header.conf_state).is_ok_and(|cs| cs == self.conf_state);
        same.then_some(SnapshotHeader {
            index,
            term,
            ..header
        })
    }

    /// Whether this member has ever been bootstrapped.
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }

    /// Sets the first configuration of a new cluster.
    /// Index and term at which every member of a new cluster starts: the
    /// initial configuration counts as entry 1, committed at term 1, on
    /// every initial member alike. A member added later therefore can never
    /// be sent entry 1 and always starts from a snapshot, which carries the
    /// configuration it needs.
    pub const BOOTSTRAP_INDEX: u64 = 1;

    /// Sets the first configuration of a new cluster.
    pub fn bootstrap(&mut self, voters: Vec<u64>, batch: &mut WriteBatch) -> Result<()> {
        assert!(!self.is_initialized(), "bootstrap of an initialized log");
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        self.apply_snapshot(Self::BOOTSTRAP_INDEX, 1, cs, batch)?;
        // No snapshot file exists for it: one is written when first needed.
        *self.latest_file.borrow_mut() = None;
        Ok(())
    }

    fn last(&self) -> u64 {
        self.snap_index + self.metas.len() as u64
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Stages entries; a conflicting tail (from an older leader) is
    /// replaced. `persist` writes them.
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snap_index || first.index > self.last() + 1 {
            return Err(StoreError::Storage(format!(
                "append at {} outside log ({}..={})",
                first.index,
                self.snap_index + 1,
                self.last()
            )));
        }
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                first.index + i as u64,
                "entries must be contiguous"
            );
        }
        let locs = self.log.append_entries(entries)?;
        // A replaced tail is no longer what the disk holds once synced.
        self.synced_last = self.synced_last.min(first.index - 1);
        self.metas
            .truncate((first.index - self.snap_index - 1) as usize);
        for (e, loc) in entries.iter().zip(locs) {
            self.metas.push((e.term, loc));
        }
        self.cache.append(entries);
        Ok(())
    }

    /// Writes what was staged; with `sync`, makes it durable.
    pub fn persist(&mut self, sync: bool) -> Result<()> {
        self.log.write(sync)?;
        if sync {
            self.synced_last = self.last();
        }
        Ok(())
    }

    /// The last entry on disk for certain (see `synced_last`).
    pub fn synced_last_index(&self) -> u64 {
        self.synced_last
    }

    /// Stages a hard state (staging may roll to a new segment, which can
    /// fail: the caller must not go on as if it were staged).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<()> {
        self.log.append_hard_state(&hs)?;
        self.hard_state = hs;
        Ok(())
    }

    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(hs)
    }

    /// The configuration changes with the state machine: into its batch.
    pub fn set_conf_state(&mut self, cs: ConfState, batch: &mut WriteBatch) {
        let bytes = cs.write_to_bytes().expect("encode conf state");
        batch.put_cf(self.db.cf(CF_META), meta::CONF_STATE, bytes);
        self.conf_state = cs;
    }
}

/// Bytes per segment file: `SECRETD_LOG_SEGMENT_BYTES` if set (tests use
/// small segments so that they roll and get dropped), else the default.
fn segment_bytes_real() -> Result<u64> {
    const MIN: u64 = 64 << 10;
    const MAX: u64 = 1 << 30;
    match std::env::var("SECRETD_LOG_SEGMENT_BYTES") {
        Err(_) => Ok(SEGMENT_BYTES_REAL),
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(n),
            _ => Err(StoreError::InvalidArgument(format!(
                "SECRETD_LOG_SEGMENT_BYTES={v:?}: must be a number of bytes from {MIN} to {MAX}"
            ))),
        },
    }
}

fn parse<M: PbMessage>(bytes: &[u8], what: &str) -> Result<M> {
    M::parse_from_bytes(bytes).map_err(|e| StoreError::Storage(format!("corrupt {what}: {e}")))
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        if let Some(out) = self.cache.get(low, high, max) {
            return Ok(out);
        }
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for idx in low..high {
            let (_, loc) = self.metas[(idx - self.snap_index - 1) as usize];
            let e = self.log.read(loc).map_err(storage_err)?;
            if e.index != idx {
                return Err(storage_err(format!(
                    "log entry {idx} reads back as {}",
                    e.index
                )));
            }
            size += payload_bytes(&e) as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snap_index {
            return Ok(self.snap_term);
        }
        if idx < self.snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.metas.get((idx - self.snap_index - 1) as usize) {
            Some((t, _)) => Ok(*t),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snap_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// A snapshot at or after `request_index`. Reuses the newest file if it
    /// is recent enough, else writes one at the applied index (the raft
    /// thread is the only writer, so the state it reads is a point in time).
    /// The raft message carries only the index; the transport streams the
    /// file.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let header = match self.snapshot_file(request_index) {
            Ok(Some(h)) => h,
            // raft-rs retries on this (at the follower's next heartbeat
            // reply); on any other error it panics.
            Ok(None) => {
                return Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, peer = to, "cannot write a snapshot; will retry");
                return Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ));
            }
        };
        let (index, term) = (header.index, header.term);
        let conf_state = ConfState::parse_from_bytes(&header.conf_state).map_err(storage_err)?;
        let mut meta = SnapshotMetadata::default();
        meta.set_conf_state(conf_state);
        meta.index = index;
        meta.term = term;
        let mut snap = Snapshot {
            data: index.to_be_bytes().to_vec().into(),
            ..Default::default()
        };
        snap.set_metadata(meta);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests;
