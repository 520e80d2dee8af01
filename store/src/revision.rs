//! Revisions, etcd's logical clock. `main` increments once per write
//! transaction, `sub` numbers the writes inside it. In the `kv` column family
//! a record's key is its revision, big-endian so RocksDB's order is revision
//! order, plus one byte that says put or tombstone.

use crate::error::{Result, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

pub const KEY_BYTES: usize = 17;
const KIND_PUT: u8 = b'p';
const KIND_TOMBSTONE: u8 = b't';

impl Rev {
    pub fn new(main: i64, sub: i64) -> Rev {
        debug_assert!(main >= 0 && sub >= 0);
        Rev { main, sub }
    }

    pub fn key(self, tombstone: bool) -> [u8; KEY_BYTES] {
        let mut k = [0u8; KEY_BYTES];
        k[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        k[8..16].copy_from_slice(&(self.sub as u64).to_be_bytes());
        k[16] = if tombstone { KIND_TOMBSTONE } else { KIND_PUT };
        k
    }

    /// The smallest key of any record at `main` or later.
    pub fn lower_bound(main: i64) -> [u8; 8] {
        (main.max(0) as u64).to_be_bytes()
    }

    /// Decodes a `kv` key into its revision and whether it is a tombstone.
    pub fn decode(k: &[u8]) -> Result<(Rev, bool)> {
        if k.len() != KEY_BYTES {
            return Err(StoreError::Storage(format!(
                "corrupt revision key of {} bytes",
                k.len()
            )));
        }
        let main = u64::from_be_bytes(k[..8].try_into().unwrap_or_default()) as i64;
        let sub = u64::from_be_bytes(k[8..16].try_into().unwrap_or_default()) as i64;
        let tomb = match k[16] {
            KIND_PUT => false,
            KIND_TOMBSTONE => true,
            other => {
                return Err(StoreError::Storage(format!(
                    "corrupt revision kind byte {other:#x}"
                )))
            }
        };
        Ok((Rev { main, sub }, tomb))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_revision_order_and_round_trip() {
        let revs = [
            Rev::new(1, 0),
            Rev::new(1, 5),
            Rev::new(2, 0),
            Rev::new(300, 1),
        ];
        let keys: Vec<_> = revs.iter().map(|r| r.key(false)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for r in revs {
            assert_eq!(Rev::decode(&r.key(true)).unwrap(), (r, true));
        }
        assert!(Rev::decode(&[1, 2, 3]).is_err());
        let mut bad = Rev::new(1, 1).key(false);
        bad[16] = b'x';
        assert!(Rev::decode(&bad).is_err());
    }
}
