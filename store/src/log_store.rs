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
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crate::db::{Direction, IteratorMode, WriteBatch};
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::db::{u64_from, Db, CF_META, CF_RAFT};
use crate::error::{Result, StoreError};
use crate::raftlog::{files::LogDir, Loc, SegmentLog, SEGMENT_BYTES_REAL, SEGMENT_BYTES_SIM};
use crate::schema::meta;
use crate::snapshot::{self, SnapshotHeader, SnapshotWriter};

/// The state machine, as raft's storage needs it: able to write itself into
/// a snapshot file at the current applied index.
pub trait StateSource: Send + Sync {
    fn write_snapshot(&self, w: &mut SnapshotWriter) -> Result<()>;
}

/// Bytes of entry payload the cache keeps (oldest dropped first): what
/// followers that keep up and the entries not yet applied need (seconds
/// of writes at full speed). A follower further behind is served from the
/// segment files, which the kernel caches: memory here is resident in
/// every member, and is what `bench compare`'s RSS row counts.
const ENTRY_CACHE_BYTES_MAX: usize = 8 << 20;
/// Entries the cache keeps, whatever their size.
const ENTRY_CACHE_ENTRIES_MAX: usize = 32 * 1024;

/// Snapshot files kept on disk (older ones are pruned).
const SNAPSHOT_FILES_KEPT: usize = 3;

// The old layout in the `raft` column family, read only to migrate.
const KEY_HARD_STATE: &[u8] = b"hs";
const KEY_CONF_STATE: &[u8] = b"cs";
/// Index and term of the last entry folded into a snapshot (0/0 at start).
const KEY_SNAPSHOT_META: &[u8] = b"snap";
const ENTRY_PREFIX: u8 = b'e';

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The newest entries of the log, contiguous and ending at the log's last
/// entry (or empty). Entries share their payload (`Bytes`) with raft's own
/// copies, so caching costs one `Entry` header each.
#[derive(Default)]
struct EntryCache {
    entries: VecDeque<Entry>,
    payload_bytes: usize,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Appends `new` (contiguous) after dropping every cached entry at or
    /// beyond its first index, then trims the oldest to the bounds.
    fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        match self.first_index() {
            Some(start) if first.index >= start => {
                let keep = (first.index - start) as usize;
                while self.entries.len() > keep {
                    let e = self.entries.pop_back().expect("len > keep");
                    self.payload_bytes -= payload_bytes(&e);
                }
            }
            _ => self.clear(),
        }
        if let Some(last) = self.entries.back() {
            assert_eq!(last.index + 1, first.index, "entry cache stays contiguous");
        }
        for e in new {
            self.payload_bytes += payload_bytes(e);
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > 1
            && (self.payload_bytes > ENTRY_CACHE_BYTES_MAX
                || self.entries.len() > ENTRY_CACHE_ENTRIES_MAX)
        {
            self.drop_front();
        }
    }

    /// Drops entries up to and including `to`.
    fn compact(&mut self, to: u64) {
        while self.first_index().is_some_and(|i| i <= to) {
            self.drop_front();
        }
    }

    fn drop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.payload_bytes -= payload_bytes(&e);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.payload_bytes = 0;
    }

    /// Entries `low..high` if the cache holds `low` (the caller checked
    /// that `high - 1` is in the log, which ends where the cache ends).
    fn get(&self, low: u64, high: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        let start = self.first_index()?;
        if low < start {
            return None;
        }
        let from = (low - start) as usize;
        let to = ((high - start) as usize).min(self.entries.len());
        let mut out = Vec::with_capacity((to.saturating_sub(from)).min(1024));
        let mut size = 0u64;
        for e in self.entries.range(from.min(to)..to) {
            size += payload_bytes(e) as u64;
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

/// An entry's size for raft's per-message limit: its payload plus the
/// fixed fields (a close bound on its encoded size, without encoding it).
fn payload_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 24
}

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
    /// The last entry known to be on disk: written with a sync, or found
    /// there at open (the simulation's check that what a member
    /// acknowledged is on a quorum's synced log reads it).
    synced_last: u64,
}

/// The old layout's state: (hard state, conf state, snapshot index and
/// term, entries).
type OldLog = (HardState, ConfState, u64, u64, Vec<Entry>);

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

    /// Moves an old data directory's log out of the `raft` column family:
    /// into the segments, synced, then out of RocksDB.
    fn migrate(&mut self) -> Result<()> {
        let Some((hs, cs, snap_index, snap_term, entries)) = read_old_log(&self.db)? else {
            return Ok(());
        };
        tracing::info!(
            entries = entries.len(),
            snap_index,
            "moving the raft log from RocksDB into segment files"
        );
        let mut batch = WriteBatch::default();
        self.apply_snapshot(snap_index, snap_term, cs, &mut batch)?;
        self.append(&entries)?;
        self.set_hard_state(hs)?;
        self.db.write_sync(batch)?;
        self.persist(true)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.db.cf(CF_RAFT), [0u8], [0xffu8; 10]);
        self.db.write_sync(batch)
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

    /// Writes a snapshot of the state machine at the applied index into
    /// `dir`. Must run on the raft thread (the only writer), so that what it
    /// reads is one point in time.
    pub fn write_state_snapshot(&self, dir: &std::path::Path) -> Result<(u64, u64, PathBuf)> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| StoreError::Storage("no state machine attached for snapshots".into()))?;
        let index = self.applied;
        let term = self
            .term(index)
            .map_err(|e| StoreError::Storage(format!("term of {index}: {e}")))?;
        let conf_state = self
            .conf_state
            .write_to_bytes()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let mut w = SnapshotWriter::create(
            dir,
            &SnapshotHeader {
                index,
                term,
                conf_state,
            },
        )?;
        state.write_snapshot(&mut w)?;
        Ok((index, term, w.finish()?))
    }

    /// Writes a snapshot of the state machine at the applied index.
    fn make_snapshot_file(&self) -> Result<(u64, u64)> {
        let (index, term, path) = self.write_state_snapshot(&self.snap_dir)?;
        tracing::info!(index, term, path = %path.display(), "wrote state snapshot");
        snapshot::prune(&self.snap_dir, SNAPSHOT_FILES_KEPT);
        Ok((index, term))
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

/// The log of a data directory written before the segment files, if any.
fn read_old_log(db: &Db) -> Result<Option<OldLog>> {
    let hs = match db.get(CF_RAFT, KEY_HARD_STATE)? {
        Some(v) => parse::<HardState>(&v, "hard state")?,
        None => return Ok(None),
    };
    let cs = match db.get(CF_RAFT, KEY_CONF_STATE)? {
        Some(v) => parse::<ConfState>(&v, "conf state")?,
        None => ConfState::default(),
    };
    let (snap_index, snap_term) = match db.get(CF_RAFT, KEY_SNAPSHOT_META)? {
        Some(v) if v.len() == 16 => (
            u64_from(&v[..8], "snapshot index")?,
            u64_from(&v[8..], "snapshot term")?,
        ),
        Some(v) => {
            return Err(StoreError::Storage(format!(
                "corrupt snapshot metadata: {} bytes",
                v.len()
            )))
        }
        None => (0, 0),
    };
    let mut entries = Vec::new();
    let start = entry_key(snap_index + 1);
    for item in db.iterator_cf(
        db.cf(CF_RAFT),
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (k, v) = item?;
        if k.first() != Some(&ENTRY_PREFIX) {
            break;
        }
        let e = parse::<Entry>(&v, "log entry")?;
        let want = snap_index + 1 + entries.len() as u64;
        if e.index != want || u64_from(&k[1..], "entry key")? != want {
            return Err(StoreError::Storage(format!(
                "raft log has a hole: expected entry {want}, found {}",
                e.index
            )));
        }
        entries.push(e);
    }
    Ok(Some((hs, cs, snap_index, snap_term, entries)))
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
        // Reuse the newest file only if nothing it describes changed since:
        // the same configuration (a file from before a member was added
        // would be ignored by that member), and not older than the log's
        // truncation point (the follower must continue from the log after it).
        let existing = *self.latest_file.borrow();
        let reusable = existing
            .filter(|(i, _)| *i >= request_index && *i >= self.snap_index)
            .filter(|(i, _)| {
                snapshot::SnapshotReader::open(&snapshot::file_path(&self.snap_dir, *i))
                    .ok()
                    .and_then(|r| ConfState::parse_from_bytes(&r.header.conf_state).ok())
                    .is_some_and(|cs| cs == self.conf_state)
            });
        let (index, term) = match reusable {
            Some(it) => it,
            None => match self.make_snapshot_file() {
                Ok(it) => {
                    *self.latest_file.borrow_mut() = Some(it);
                    it
                }
                Err(e) => {
                    // raft-rs panics on any other error; it retries on this.
                    tracing::error!(error = %e, peer = to, "cannot write a snapshot; will retry");
                    return Err(raft::Error::Store(
                        StorageError::SnapshotTemporarilyUnavailable,
                    ));
                }
            },
        };
        let header = snapshot::SnapshotReader::open(&snapshot::file_path(&self.snap_dir, index))
            .map(|r| r.header)
            .map_err(|e| storage_err(e.to_string()))?;
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
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    #[test]
    fn append_truncate_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut s = LogStore::open(db.clone()).unwrap();
        let mut b = WriteBatch::default();
        s.bootstrap(vec![1, 2, 3], &mut b).unwrap();
        // The configuration is entry 1: the log proper starts at 2.
        assert_eq!(
            (
                s.first_index().unwrap(),
                s.last_index().unwrap(),
                s.term(1).unwrap()
            ),
            (2, 1, 1)
        );
        s.append(&(2..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        db.write_sync(b).unwrap();
        s.persist(true).unwrap();
        // A new leader overwrites 5..: entry 6 must disappear.
        let b = WriteBatch::default();
        s.append(&[entry(5, 2)]).unwrap();
        let hs = HardState {
            term: 2,
            commit: 5,
            ..Default::default()
        };
        s.set_hard_state(hs).unwrap();
        db.write_sync(b).unwrap();
        s.persist(true).unwrap();
        assert_eq!(s.last_index().unwrap(), 5);
        // From the cache, then (below) from disk.
        let index_terms = |s: &LogStore| {
            s.entries(3, 6, None, GetEntriesContext::empty(false))
                .unwrap()
                .iter()
                .map(|e| (e.index, e.term))
                .collect::<Vec<_>>()
        };
        assert_eq!(index_terms(&s), vec![(3, 1), (4, 1), (5, 2)]);
        drop(s);
        let mut s = LogStore::open(db).unwrap();
        // From disk: the cache is warmed at open, and is checked above.
        s.cache.clear();
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(5).unwrap(), 2);
        assert_eq!(s.term(4).unwrap(), 1);
        assert_eq!(s.hard_state().commit, 5);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(index_terms(&s), vec![(3, 1), (4, 1), (5, 2)]);
        // A size limit still returns at least one entry.
        assert_eq!(
            s.entries(3, 6, 1, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            1
        );
        assert!(s.term(9).is_err());
        assert!(
            s.entries(1, 3, None, GetEntriesContext::empty(false))
                .is_err(),
            "entry 1 is never served"
        );
    }

    /// Whatever appends, overwrites and compactions happen, every read
    /// answers the same from the cache as from disk.
    #[test]
    fn cache_answers_as_disk_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut s = LogStore::open(db.clone()).unwrap();
        let mut b = WriteBatch::default();
        s.bootstrap(vec![1], &mut b).unwrap();
        db.write_sync(b).unwrap();
        s.persist(true).unwrap();
        let mut term = 1;
        let mut seed = 7u64;
        let mut rand = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..200u64 {
            let b = WriteBatch::default();
            let last = s.last_index().unwrap();
            let first = s.first_index().unwrap();
            // Mostly appends; sometimes a new leader overwrites a tail.
            let at = if rand(5) == 0 && last >= first {
                term += 1;
                first + rand(last - first + 1)
            } else {
                last + 1
            };
            let n = 1 + rand(20);
            let es: Vec<Entry> = (at..at + n)
                .map(|i| Entry {
                    index: i,
                    term,
                    data: vec![round as u8; rand(300) as usize].into(),
                    ..Default::default()
                })
                .collect();
            s.append(&es).unwrap();
            let (lo, last) = (s.first_index().unwrap(), s.last_index().unwrap());
            if rand(10) == 0 && last >= lo {
                let to = lo + rand(last - lo + 1);
                s.set_applied(to);
                s.compact(to).unwrap();
            }
            db.write_sync(b).unwrap();
            s.persist(true).unwrap();
            let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
            if lo == hi {
                continue;
            }
            // A reopened store (cache warmed by the open scan) and one
            // reading from disk alone.
            let warm = LogStore::open(db.clone()).unwrap();
            let mut fresh = LogStore::open(db.clone()).unwrap();
            fresh.cache.clear();
            for _ in 0..5 {
                let low = lo + rand(hi - lo);
                let high = low + 1 + rand(hi - low);
                let max = if rand(3) == 0 { Some(rand(2000)) } else { None };
                let cached = s
                    .entries(low, high, max, GetEntriesContext::empty(false))
                    .unwrap();
                let disk = fresh
                    .entries(low, high, None, GetEntriesContext::empty(false))
                    .unwrap();
                let reopened = warm
                    .entries(low, high, max, GetEntriesContext::empty(false))
                    .unwrap();
                assert_eq!(cached, reopened, "round {round}: {low}..{high}");
                assert!(!cached.is_empty());
                assert_eq!(
                    cached[..],
                    disk[..cached.len()],
                    "round {round}: {low}..{high}"
                );
                if max.is_none() {
                    assert_eq!(cached.len() as u64, high - low);
                }
            }
        }
    }

    /// A data directory from before the segment files: its log, hard
    /// state and configuration move out of the `raft` column family.
    #[test]
    fn an_old_log_in_rocksdb_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let cf = db.cf(CF_RAFT);
        let mut b = WriteBatch::default();
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 8,
            ..Default::default()
        };
        b.put_cf(cf, KEY_HARD_STATE, hs.write_to_bytes().unwrap());
        let cs = ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        };
        b.put_cf(cf, KEY_CONF_STATE, cs.write_to_bytes().unwrap());
        let mut snap = [0u8; 16];
        snap[..8].copy_from_slice(&4u64.to_be_bytes());
        snap[8..].copy_from_slice(&2u64.to_be_bytes());
        b.put_cf(cf, KEY_SNAPSHOT_META, snap);
        for i in 5..=9 {
            b.put_cf(cf, entry_key(i), entry(i, 3).write_to_bytes().unwrap());
        }
        b.put_cf(db.cf(CF_META), meta::APPLIED, 7u64.to_be_bytes());
        db.write_sync(b).unwrap();
        for _ in 0..2 {
            // Twice: the second open finds the segments and migrates nothing.
            let s = LogStore::open(db.clone()).unwrap();
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (5, 9));
            assert_eq!(s.term(4).unwrap(), 2);
            assert_eq!(s.hard_state(), &hs);
            assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
            let got = s
                .entries(5, 10, None, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(got, (5..=9).map(|i| entry(i, 3)).collect::<Vec<_>>());
            assert!(read_old_log(&db).unwrap().is_none(), "the old log is gone");
        }
    }
}
