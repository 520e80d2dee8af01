//! Damage done on purpose to a stopped member's keyspace, as a lying disk
//! or a bug in the write path would do it: the record is rewritten whole,
//! so RocksDB's own checksums still hold and only comparing members
//! (`HashKV`, the corruption checks) can find it. For the corruption tests
//! and the fault suite's `corrupt` nemesis; nothing in a member calls it.

use std::path::Path;

use prost::Message as _;

use crate::db::{Db, IteratorMode, WriteBatch, CF_KV};
use crate::error::{Result, StoreError};
use crate::pb::mvccpb::KeyValue;

/// Flips one bit of the newest stored value of `key` (of any key, when
/// `None`) in the member whose data directory is `data_dir` (the member
/// must be stopped). Returns the key and revision of the record damaged.
pub fn flip_value_bit(data_dir: &Path, key: Option<&[u8]>) -> Result<(Vec<u8>, i64)> {
    // Never create a member's storage where there was none.
    match std::fs::metadata(data_dir.join("db")) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::Storage(format!(
                "cannot read {}: {e}",
                data_dir.display()
            )))
        }
        _ => {
            return Err(StoreError::Storage(format!(
                "{} holds no member's data (no db/ folder)",
                data_dir.display()
            )))
        }
    }
    let db = Db::open(data_dir).map_err(|e| {
        StoreError::Storage(format!(
            "cannot open {} (stop its member first): {e}",
            data_dir.display()
        ))
    })?;
    let cf = db.cf(CF_KV);
    let mut newest: Option<(Vec<u8>, KeyValue)> = None;
    for item in db.iterator_cf(cf, IteratorMode::Start) {
        let (k, v) = item?;
        let kv = KeyValue::decode(&v[..])
            .map_err(|e| StoreError::Storage(format!("corrupt key-value record: {e}")))?;
        if key.is_none_or(|k| kv.key == k) {
            newest = Some((k.to_vec(), kv));
        }
    }
    let Some((record_key, mut kv)) = newest else {
        return Err(StoreError::Storage(match key {
            Some(k) => format!(
                "no record of key {:?} to damage",
                String::from_utf8_lossy(k)
            ),
            None => "the keyspace holds no record to damage".into(),
        }));
    };
    match kv.value.first_mut() {
        Some(b) => *b ^= 0x01,
        None => kv.value.push(0x01),
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(db.cf(CF_KV), &record_key, kv.encode_to_vec());
    db.write_sync(batch)?;
    Ok((kv.key, kv.mod_revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_member_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let e = flip_value_bit(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("holds no member's data"), "{e}");
        assert!(!dir.path().join("db").exists(), "created storage");
        let e = flip_value_bit(&dir.path().join("missing"), Some(b"k")).unwrap_err();
        assert!(e.to_string().contains("holds no member's data"), "{e}");
    }
}
