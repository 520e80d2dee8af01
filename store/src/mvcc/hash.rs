//! HashKV: a hash of every kv record at or below a revision, to compare
//! members (etcd's HashKV; the corruption checks ask every member for one
//! at the same revision). A whole pass reads every record, 0.3 s at a
//! million keys, so the last hash is kept and extended: records are keyed
//! by revision, so the hash up to a later revision is the kept hasher fed
//! the records after the kept revision. Only a compaction (it deletes
//! records the kept hash covered) or a reload (the keyspace replaced)
//! spoils it.
//!
//! The pass reads a RocksDB point-in-time view taken while the index's
//! read lock holds compaction off, and lets the lock go before it reads:
//! apply needs the index's write lock, and a pass over the half a million
//! records written since the last check held every write for 0.7 s
//! (`etcdctl check perf`'s slowest request, every 5 minutes).

use crate::db::{u64_from, Reader, CF_KV, CF_META};
use crate::error::{Result, StoreError};
use crate::revision::Rev;

use super::{Mvcc, META_COMPACT_REV};

/// A hash computed earlier, ready to be extended.
#[derive(Clone)]
pub(super) struct KeptHash {
    /// The revision it covers (every record at or below).
    at: i64,
    /// The compaction it was computed after.
    compact_rev: i64,
    hasher: crc32fast::Hasher,
}

impl Mvcc {
    /// A hash of every record at or below `revision` (0: current). Returns
    /// (hash, compact revision, hashed revision).
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64)> {
        let current = self.current_revision();
        let index = self.index.read(); // holds compaction off while hashing
        let at = if revision <= 0 { current } else { revision };
        if at > current {
            return Err(StoreError::FutureRevision);
        }
        if at < index.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: index.compact_rev,
            });
        }
        let compact_rev = index.compact_rev;
        // The simulated disk has no views; its passes hold the lock (the
        // simulation runs one thing at a time anyway).
        let view = self.db.view();
        let (reader, _held) = match &view {
            Some(v) => {
                drop(index);
                (Reader::At(v), None)
            }
            None => (Reader::Now(&self.db), Some(index)),
        };
        let kept = self.kept_hash.lock().clone();
        let (mut hasher, from) = match kept {
            Some(k) if k.compact_rev == compact_rev && k.at <= at => {
                (k.hasher, Rev::lower_bound(k.at + 1).to_vec())
            }
            _ => (crc32fast::Hasher::new(), Vec::new()),
        };
        reader.scan_cf(self.db.cf(CF_KV), &from, |k, v| {
            let (rev, _) = Rev::decode(k)?;
            if rev.main > at {
                return Ok(false);
            }
            hasher.update(k);
            hasher.update(v);
            Ok(true)
        })?;
        let hash = hasher.clone().finalize();
        // Kept only once the compaction's deletions are on disk: the index
        // learns of a compaction before the batch that deletes its records
        // is written, and a hash taken between the two would carry those
        // records into every later hash.
        if persisted_compact_rev(reader)? == compact_rev {
            let mut slot = self.kept_hash.lock();
            if slot
                .as_ref()
                .is_none_or(|k| k.at <= at || k.compact_rev != compact_rev)
            {
                *slot = Some(KeptHash {
                    at,
                    compact_rev,
                    hasher,
                });
            }
        }
        Ok((hash, compact_rev, at))
    }

    /// Forgets the kept hash (the keyspace was replaced).
    pub(super) fn forget_hash(&self) {
        *self.kept_hash.lock() = None;
    }
}

/// The compaction whose deletions are on disk, as `reader` sees it.
fn persisted_compact_rev(reader: Reader) -> Result<i64> {
    Ok(match reader.get(CF_META, META_COMPACT_REV)? {
        Some(v) => u64_from(&v, "compact revision")? as i64,
        None => 0,
    })
}
