//! The simulated disk (`MemDisk`) the deterministic simulation runs
//! members on: RocksDB's tables and the raft log's segment files in memory,
//! with what was written kept apart from what was synced, so a simulated
//! crash loses exactly what a real one may.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Cf, Op, WriteBatch};
use crate::error::{Result, StoreError};

type Tables = [BTreeMap<Box<[u8]>, Box<[u8]>>; 3];

/// A key and its value.
type Record = (Box<[u8]>, Box<[u8]>);

/// A simulated disk for one member. What was written and what was synced
/// are kept apart: every write lands in `written` (what reads see) and,
/// until a synced write, in the list of unsynced batches. A synced write
/// makes every earlier batch durable too, as RocksDB's one ordered WAL
/// does. A crash ([`MemDisk::crash`]) keeps the synced state plus some
/// prefix of the unsynced batches: the WAL's record checksums mean a torn
/// batch is dropped whole, never half-applied.
#[derive(Default)]
pub struct MemDisk {
    state: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    written: Tables,
    synced: Tables,
    unsynced: Vec<WriteBatch>,
    /// The raft log's segment files (`raftlog::files`).
    files: BTreeMap<String, MemFile>,
    /// Set by the simulation to make the next writes fail (a dead disk).
    failing: bool,
    syncs: u64,
}

impl MemDisk {
    pub fn new() -> Arc<MemDisk> {
        Arc::new(MemDisk::default())
    }

    pub(super) fn get(&self, cf: Cf, key: &[u8]) -> Option<Vec<u8>> {
        self.state.lock().written[cf as usize]
            .get(key)
            .map(|v| v.to_vec())
    }

    pub(super) fn next_after(&self, cf: Cf, from: &Bound<Vec<u8>>) -> Option<Record> {
        let st = self.state.lock();
        let from: Bound<&[u8]> = match from {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        st.written[cf as usize]
            .range::<[u8], _>((from, Bound::Unbounded))
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
    }

    pub(super) fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let mut st = self.state.lock();
        if st.failing {
            return Err(StoreError::Storage("simulated disk failure".into()));
        }
        apply(&mut st.written, &batch);
        st.unsynced.push(batch);
        if sync {
            let pending = std::mem::take(&mut st.unsynced);
            for b in &pending {
                apply(&mut st.synced, b);
            }
            st.syncs += 1;
        }
        Ok(())
    }

    pub(super) fn size_bytes(&self, cfs: [Cf; 2]) -> i64 {
        let st = self.state.lock();
        cfs.iter()
            .flat_map(|cf| st.written[*cf as usize].iter())
            .map(|(k, v)| (k.len() + v.len()) as i64)
            .sum()
    }

    /// Batches written since the last sync (what a crash may lose).
    pub fn unsynced_batches(&self) -> usize {
        self.state.lock().unsynced.len()
    }

    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// The power goes out: what survives is the synced state plus the
    /// first `keep` unsynced batches (clamped), and of each file its synced
    /// bytes plus the first `torn(unsynced bytes)` of the rest (clamped):
    /// a file's tail may end mid-record. Reopen a [`Db`](super::Db) on the disk
    /// afterwards; the old handle must not be used again.
    pub fn crash(&self, keep: usize, torn: &mut dyn FnMut(usize) -> usize) {
        let mut st = self.state.lock();
        let pending = std::mem::take(&mut st.unsynced);
        let keep = keep.min(pending.len());
        for b in &pending[..keep] {
            apply(&mut st.synced, b);
        }
        st.written = st.synced.clone();
        for f in st.files.values_mut() {
            if !f.overwrote_synced {
                let extra = f.written.len().saturating_sub(f.synced.len());
                let kept = torn(extra).min(extra);
                let from = f.synced.len();
                let tail = f.written[from..from + kept].to_vec();
                f.synced.extend_from_slice(&tail);
            }
            f.written = f.synced.clone();
            f.overwrote_synced = false;
        }
    }

    /// Makes every later write fail (or heals the disk).
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().failing = failing;
    }
}

/// A simulated file: what reads see, and what a crash keeps.
#[derive(Default)]
struct MemFile {
    written: Vec<u8>,
    synced: Vec<u8>,
    /// An unsynced write landed inside the synced bytes (a crash then
    /// keeps only the synced bytes: no model of which sectors made it).
    overwrote_synced: bool,
}

impl MemDisk {
    pub(crate) fn file_names(&self) -> Vec<String> {
        self.state.lock().files.keys().cloned().collect()
    }

    /// A new file holding `head`, durable at once (as a real segment is
    /// synced, with its directory, before use).
    pub(crate) fn file_create(&self, name: &str, head: &[u8]) {
        self.state.lock().files.insert(
            name.to_string(),
            MemFile {
                written: head.to_vec(),
                synced: head.to_vec(),
                overwrote_synced: false,
            },
        );
    }

    pub(crate) fn file_write(&self, name: &str, offset: u64, bytes: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        if st.failing {
            return Err(StoreError::Storage("simulated disk failure".into()));
        }
        let f = st
            .files
            .get_mut(name)
            .ok_or_else(|| StoreError::Storage(format!("no simulated file {name}")))?;
        let at = offset as usize;
        if at < f.synced.len() {
            f.overwrote_synced = true;
        }
        if f.written.len() < at + bytes.len() {
            f.written.resize(at + bytes.len(), 0);
        }
        f.written[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn file_sync(&self, name: &str) -> Result<()> {
        let mut st = self.state.lock();
        if st.failing {
            return Err(StoreError::Storage("simulated disk failure".into()));
        }
        st.syncs += 1;
        let f = st
            .files
            .get_mut(name)
            .ok_or_else(|| StoreError::Storage(format!("no simulated file {name}")))?;
        if f.overwrote_synced {
            f.synced = f.written.clone();
            f.overwrote_synced = false;
        } else {
            let from = f.synced.len();
            f.synced.extend_from_slice(&f.written[from..]);
        }
        Ok(())
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    pub(crate) fn file_read(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let st = self.state.lock();
        let f = st
            .files
            .get(name)
            .ok_or_else(|| StoreError::Storage(format!("no simulated file {name}")))?;
        let from = (offset as usize).min(f.written.len());
        let to = from.saturating_add(len).min(f.written.len());
        Ok(f.written[from..to].to_vec())
    }

    pub(crate) fn file_remove(&self, name: &str) {
        self.state.lock().files.remove(name);
    }

    /// Bytes written to files and not yet synced.
    pub fn unsynced_file_bytes(&self) -> usize {
        let st = self.state.lock();
        st.files
            .values()
            .map(|f| f.written.len().saturating_sub(f.synced.len()))
            .sum()
    }
}

fn apply(t: &mut Tables, batch: &WriteBatch) {
    for op in &batch.ops {
        match op {
            Op::Put(cf, k, v) => {
                t[*cf as usize].insert(k.clone(), v.clone());
            }
            Op::Delete(cf, k) => {
                t[*cf as usize].remove(k);
            }
            Op::DeleteRange(cf, from, to) => {
                let m = &mut t[*cf as usize];
                let doomed: Vec<Box<[u8]>> = m
                    .range::<[u8], _>((Bound::Included(&from[..]), Bound::Excluded(&to[..])))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    m.remove(&k);
                }
            }
        }
    }
}
