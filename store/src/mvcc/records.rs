//! Recently read records of the keyspace, kept decoded in memory so that a
//! hot key's read skips RocksDB's lookup (a skip-list search per read:
//! about a tenth of a serializable read's CPU, BENCHMARKS.md).
//!
//! A record at a revision never changes: a write makes a new revision. So
//! nothing invalidates an entry on write, and compaction never leaves the
//! index naming a record it removed. Only a replaced keyspace (a snapshot
//! installed, `Mvcc::reload`) empties the cache. Filled by readers only:
//! apply uses what is there but never fills it, so the raft loop pays
//! only a lookup. HashKV and the corruption check read
//! RocksDB directly, never this.

use std::sync::Arc;

use crate::pb::mvccpb::KeyValue;
use crate::revision::Rev;

/// Bytes of records the cache holds at most (key, value and a fixed
/// overhead per entry): small against a member's memory, large enough for
/// the hot keys of a configuration store.
pub const RECORD_CACHE_BYTES_MAX: u64 = 8 << 20;
/// What an entry costs besides its key and value (the entry, the Arc,
/// the record's other fields).
const ENTRY_OVERHEAD_BYTES: u64 = 96;
/// A record larger than this is not kept: one large value must not evict
/// every hot key.
pub const RECORD_CACHED_BYTES_MAX: u64 = 64 * 1024;

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<(i64, i64), Arc<KeyValue>> for Weigh {
    fn weight(&self, _rev: &(i64, i64), kv: &Arc<KeyValue>) -> u64 {
        weight(kv)
    }
}

fn weight(kv: &KeyValue) -> u64 {
    (kv.key.len() + kv.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

pub struct Records {
    cache: quick_cache::sync::Cache<(i64, i64), Arc<KeyValue>, Weigh>,
}

impl Default for Records {
    fn default() -> Records {
        Records::with_bytes_max(RECORD_CACHE_BYTES_MAX)
    }
}

impl Records {
    pub fn with_bytes_max(bytes_max: u64) -> Records {
        // quick_cache sizes its tables from an estimate of the entries.
        let entries = (bytes_max / (ENTRY_OVERHEAD_BYTES + 256)).max(16) as usize;
        Records {
            cache: quick_cache::sync::Cache::with_weighter(entries, bytes_max, Weigh),
        }
    }

    /// The record at `rev`, read through the cache: `read` is called (and
    /// its record kept, unless too large) only when the cache lacks it.
    pub fn get_or_read(
        &self,
        rev: Rev,
        read: impl FnOnce() -> crate::error::Result<KeyValue>,
    ) -> crate::error::Result<KeyValue> {
        if let Some(kv) = self.get(rev) {
            return Ok(kv);
        }
        let kv = read()?;
        if weight(&kv) <= RECORD_CACHED_BYTES_MAX {
            self.cache.insert((rev.main, rev.sub), Arc::new(kv.clone()));
        }
        Ok(kv)
    }

    /// The record at `rev` if the cache holds it (nothing is filled).
    pub fn get(&self, rev: Rev) -> Option<KeyValue> {
        self.cache
            .get(&(rev.main, rev.sub))
            .map(|kv| KeyValue::clone(&kv))
    }

    /// Forgets every record: the keyspace was replaced.
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Bytes held (the weights of the entries).
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value_bytes: usize, mod_revision: i64) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: vec![7; value_bytes],
            mod_revision,
            ..Default::default()
        }
    }

    /// A cached record is served without reading; a large one is served
    /// but never kept; the bytes held stay within the bound however many
    /// records pass through; `clear` forgets them all.
    #[test]
    fn records_are_read_once_kept_within_the_bound_and_forgotten_on_clear() {
        let r = Records::with_bytes_max(64 * 1024);
        let at = Rev { main: 5, sub: 0 };
        assert_eq!(r.get_or_read(at, || Ok(kv(10, 5))).unwrap(), kv(10, 5));
        let cached = r.get_or_read(at, || panic!("read again")).unwrap();
        assert_eq!(cached, kv(10, 5));
        let big = Rev { main: 6, sub: 0 };
        r.get_or_read(big, || Ok(kv(RECORD_CACHED_BYTES_MAX as usize, 6)))
            .unwrap();
        let mut reads = 0;
        r.get_or_read(big, || {
            reads += 1;
            Ok(kv(RECORD_CACHED_BYTES_MAX as usize, 6))
        })
        .unwrap();
        assert_eq!(reads, 1, "a record over the per-record bound is not kept");
        for main in 100..2_000 {
            r.get_or_read(Rev { main, sub: 0 }, || Ok(kv(200, main)))
                .unwrap();
            assert!(r.bytes() <= 64 * 1024, "{} bytes held", r.bytes());
        }
        r.clear();
        assert_eq!(r.bytes(), 0);
        let mut reads = 0;
        r.get_or_read(at, || {
            reads += 1;
            Ok(kv(10, 5))
        })
        .unwrap();
        assert_eq!(reads, 1, "cleared");
    }

    /// An error reading is passed on and nothing is kept.
    #[test]
    fn a_failed_read_is_not_kept() {
        let r = Records::default();
        let at = Rev { main: 9, sub: 1 };
        let e = r.get_or_read(at, || Err(crate::error::StoreError::Storage("gone".into())));
        assert!(e.is_err());
        assert_eq!(r.bytes(), 0);
        assert_eq!(r.get_or_read(at, || Ok(kv(1, 9))).unwrap(), kv(1, 9));
    }
}
