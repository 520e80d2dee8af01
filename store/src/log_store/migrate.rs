//! The raft log's old home: the `raft` column family of data directories
//! written before the segment files (storage format 1). Read once, when
//! such a directory is opened, and moved into the segments.

use raft::eraftpb::{ConfState, Entry, HardState};

use super::{parse, LogStore};
use crate::db::{u64_from, Db, Direction, IteratorMode, WriteBatch, CF_RAFT};
use crate::error::{Result, StoreError};

// The old layout in the `raft` column family, read only to migrate.
pub(super) const KEY_HARD_STATE: &[u8] = b"hs";
pub(super) const KEY_CONF_STATE: &[u8] = b"cs";
/// Index and term of the last entry folded into a snapshot (0/0 at start).
pub(super) const KEY_SNAPSHOT_META: &[u8] = b"snap";
const ENTRY_PREFIX: u8 = b'e';

pub(super) fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The old layout's state: (hard state, conf state, snapshot index and
/// term, entries).
type OldLog = (HardState, ConfState, u64, u64, Vec<Entry>);

impl LogStore {
    /// Moves an old data directory's log out of the `raft` column family:
    /// into the segments, synced, then out of RocksDB.
    pub(super) fn migrate(&mut self) -> Result<()> {
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
}

/// The log of a data directory written before the segment files, if any.
pub(super) fn read_old_log(db: &Db) -> Result<Option<OldLog>> {
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
