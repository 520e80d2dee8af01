//! The raft log, hard state and conf state in RocksDB's `raft` column
//! family: raft-rs's `Storage` for one member.
//!
//! Writes are staged into the caller's `WriteBatch` (one per `Ready`) and
//! must be durable before `RawNode::advance`, because raft-rs reads entries
//! back through `Storage` once they leave its unstable log. The term of every
//! entry is also kept in memory (8 bytes per entry), so `term()`, which raft
//! calls on every append, never reads the disk. The newest entries are also
//! kept whole in a bounded cache (`EntryCache`): raft reads back every entry
//! it commits and every entry it sends a follower, and serving those from
//! memory saves an iterator, a copy and a decode per entry.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crate::db::{Direction, IteratorMode, WriteBatch};
use protobuf::Message as PbMessage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

use crate::db::{u64_from, Db, CF_RAFT};
use crate::error::{Result, StoreError};
use crate::snapshot::{self, SnapshotHeader, SnapshotWriter};

/// The state machine, as raft's storage needs it: able to write itself into
/// a snapshot file at the current applied index.
pub trait StateSource: Send + Sync {
    fn write_snapshot(&self, w: &mut SnapshotWriter) -> Result<()>;
}

/// Bytes of entry payload the cache keeps (oldest dropped first): enough
/// for every follower that is keeping up and for everything not yet applied.
const ENTRY_CACHE_BYTES_MAX: usize = 32 << 20;
/// Entries the cache keeps, whatever their size.
const ENTRY_CACHE_ENTRIES_MAX: usize = 64 * 1024;

/// Snapshot files kept on disk (older ones are pruned).
const SNAPSHOT_FILES_KEPT: usize = 3;

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
    hard_state: HardState,
    conf_state: ConfState,
    snap_index: u64,
    snap_term: u64,
    /// terms[i] is the term of entry snap_index + 1 + i.
    terms: Vec<u64>,
    cache: EntryCache,
    /// Applied index of the state machine (set by the raft loop).
    applied: u64,
    snap_dir: PathBuf,
    state: Option<Arc<dyn StateSource>>,
    /// The newest snapshot file written or received: (index, term).
    latest_file: RefCell<Option<(u64, u64)>>,
}

impl LogStore {
    /// Loads the log's metadata and every entry's term.
    pub fn open(db: Arc<Db>) -> Result<LogStore> {
        let hard_state = match db.get(CF_RAFT, KEY_HARD_STATE)? {
            Some(v) => parse::<HardState>(&v, "hard state")?,
            None => HardState::default(),
        };
        let conf_state = match db.get(CF_RAFT, KEY_CONF_STATE)? {
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
        let mut terms = Vec::new();
        // Warm from the same scan: after a restart a leader's followers read
        // the log's tail, and the raft column family's vector memtable
        // sorts a copy of itself for every read it serves.
        let mut cache = EntryCache::default();
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
            let want = snap_index + 1 + terms.len() as u64;
            if e.index != want || u64_from(&k[1..], "entry key")? != want {
                return Err(StoreError::Storage(format!(
                    "raft log has a hole: expected entry {want}, found {}",
                    e.index
                )));
            }
            terms.push(e.term);
            cache.append(std::slice::from_ref(&e));
        }
        let store = LogStore {
            db,
            hard_state,
            conf_state,
            snap_index,
            snap_term,
            terms,
            cache,
            applied: 0,
            snap_dir: PathBuf::new(),
            state: None,
            latest_file: RefCell::new(None),
        };
        if store.hard_state.commit > store.last() {
            return Err(StoreError::Storage(format!(
                "hard state commits {} but the log ends at {}",
                store.hard_state.commit,
                store.last()
            )));
        }
        Ok(store)
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

    /// Drops entries up to and including `to` (which must be applied).
    pub fn compact(&mut self, to: u64, batch: &mut WriteBatch) -> Result<()> {
        if to <= self.snap_index {
            return Ok(());
        }
        assert!(to <= self.applied, "compacting unapplied entries");
        let term = self
            .term(to)
            .map_err(|e| StoreError::Storage(format!("term of {to}: {e}")))?;
        let cf = self.db.cf(CF_RAFT);
        batch.delete_range_cf(cf, entry_key(self.snap_index + 1), entry_key(to + 1));
        self.terms.drain(..(to - self.snap_index) as usize);
        self.cache.compact(to);
        self.snap_index = to;
        self.snap_term = term;
        let mut meta = [0u8; 16];
        meta[..8].copy_from_slice(&to.to_be_bytes());
        meta[8..].copy_from_slice(&term.to_be_bytes());
        batch.put_cf(cf, KEY_SNAPSHOT_META, meta);
        Ok(())
    }

    /// Replaces the log by an installed snapshot: every entry goes, the
    /// configuration and commit index come from the snapshot.
    pub fn apply_snapshot(&mut self, index: u64, term: u64, cs: ConfState, batch: &mut WriteBatch) {
        let cf = self.db.cf(CF_RAFT);
        batch.delete_range_cf(cf, entry_key(0), entry_key(u64::MAX));
        self.terms.clear();
        self.cache.clear();
        self.snap_index = index;
        self.snap_term = term;
        let mut meta = [0u8; 16];
        meta[..8].copy_from_slice(&index.to_be_bytes());
        meta[8..].copy_from_slice(&term.to_be_bytes());
        batch.put_cf(cf, KEY_SNAPSHOT_META, meta);
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(index);
        hs.term = hs.term.max(term);
        self.set_hard_state(hs, batch);
        self.set_conf_state(cs, batch);
        self.applied = index;
        *self.latest_file.borrow_mut() = Some((index, term));
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
    pub fn bootstrap(&mut self, voters: Vec<u64>, batch: &mut WriteBatch) {
        assert!(!self.is_initialized(), "bootstrap of an initialized log");
        let cs = ConfState {
            voters,
            ..Default::default()
        };
        self.apply_snapshot(Self::BOOTSTRAP_INDEX, 1, cs, batch);
        // No snapshot file exists for it: one is written when first needed.
        *self.latest_file.borrow_mut() = None;
    }

    fn last(&self) -> u64 {
        self.snap_index + self.terms.len() as u64
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Stages entries; a conflicting tail (from an older leader) is replaced.
    pub fn append(&mut self, entries: &[Entry], batch: &mut WriteBatch) -> Result<()> {
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
        let cf = self.db.cf(CF_RAFT);
        // Drop the conflicting tail beyond what the new entries overwrite.
        let new_last = first.index + entries.len() as u64 - 1;
        for idx in new_last + 1..=self.last() {
            batch.delete_cf(cf, entry_key(idx));
        }
        self.terms
            .truncate((first.index - self.snap_index - 1) as usize);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                first.index + i as u64,
                "entries must be contiguous"
            );
            let bytes = e
                .write_to_bytes()
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            batch.put_cf(cf, entry_key(e.index), bytes);
            self.terms.push(e.term);
        }
        self.cache.append(entries);
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: HardState, batch: &mut WriteBatch) {
        put_msg(&self.db, batch, KEY_HARD_STATE, &hs);
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64, batch: &mut WriteBatch) {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(hs, batch);
    }

    pub fn set_conf_state(&mut self, cs: ConfState, batch: &mut WriteBatch) {
        put_msg(&self.db, batch, KEY_CONF_STATE, &cs);
        self.conf_state = cs;
    }
}

fn put_msg(db: &Db, batch: &mut WriteBatch, key: &[u8], m: &impl PbMessage) {
    // Encoding a well-formed in-memory message cannot fail.
    let bytes = m.write_to_bytes().expect("encode raft state");
    batch.put_cf(db.cf(CF_RAFT), key, bytes);
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
        let start = entry_key(low);
        let iter = self.db.iterator_cf(
            self.db.cf(CF_RAFT),
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (_, v) = item.map_err(storage_err)?;
            let e = Entry::parse_from_bytes(&v).map_err(storage_err)?;
            let want = low + out.len() as u64;
            if e.index != want {
                return Err(storage_err(format!(
                    "log entry {want} missing (found {})",
                    e.index
                )));
            }
            size += v.len() as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
            if want + 1 == high {
                break;
            }
        }
        if out.is_empty() && low < high {
            return Err(storage_err(format!("log entries {low}..{high} missing")));
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
        match self.terms.get((idx - self.snap_index - 1) as usize) {
            Some(t) => Ok(*t),
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
        s.bootstrap(vec![1, 2, 3], &mut b);
        // The configuration is entry 1: the log proper starts at 2.
        assert_eq!(
            (
                s.first_index().unwrap(),
                s.last_index().unwrap(),
                s.term(1).unwrap()
            ),
            (2, 1, 1)
        );
        s.append(&(2..=6).map(|i| entry(i, 1)).collect::<Vec<_>>(), &mut b)
            .unwrap();
        db.write_sync(b).unwrap();
        // A new leader overwrites 5..: entry 6 must disappear.
        let mut b = WriteBatch::default();
        s.append(&[entry(5, 2)], &mut b).unwrap();
        let hs = HardState {
            term: 2,
            commit: 5,
            ..Default::default()
        };
        s.set_hard_state(hs, &mut b);
        db.write_sync(b).unwrap();
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
        s.bootstrap(vec![1], &mut b);
        db.write_sync(b).unwrap();
        let mut term = 1;
        let mut seed = 7u64;
        let mut rand = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..200u64 {
            let mut b = WriteBatch::default();
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
            s.append(&es, &mut b).unwrap();
            let (lo, last) = (s.first_index().unwrap(), s.last_index().unwrap());
            if rand(10) == 0 && last >= lo {
                let to = lo + rand(last - lo + 1);
                s.set_applied(to);
                s.compact(to, &mut b).unwrap();
            }
            db.write_sync(b).unwrap();
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
}
