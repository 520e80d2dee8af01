//! The RocksDB database behind one member, and its column families.
//!
//! `raft`: the raft log, hard state, conf state and snapshot metadata.
//! `kv`:   the MVCC keyspace, keyed by revision (see `revision.rs`).
//! `meta`: small records (applied index, current and compacted revision,
//!         member identity, initial cluster).
//!
//! Everything a `Ready` produces goes into one `WriteBatch`; durability comes
//! from RocksDB's WAL, synced once per batch (`write_sync`).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, MemtableFactory, Options, WriteBatch, WriteOptions, DB,
};

use crate::error::{Result, StoreError};

pub use crate::schema::{CF_KV, CF_META, CF_RAFT};

/// Shared handle to a member's database.
pub struct Db {
    db: DB,
}

impl Db {
    pub fn open(dir: &Path) -> Result<Arc<Db>> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Storage(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Keep RocksDB's own background work small: this is a 2-core target.
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // One thread (the raft loop) writes; concurrent memtable inserts buy
        // nothing and rule out the vector memtable below.
        opts.set_allow_concurrent_memtable_write(false);
        // The raft log is appended in index order and read back almost only
        // at start (`LogStore` serves recent entries from memory): a vector
        // memtable makes each append O(1) instead of a skip-list insert; it
        // sorts once, when flushed, or when (rarely) read.
        let mut raft_opts = opts.clone();
        raft_opts.set_memtable_factory(MemtableFactory::Vector);
        let cfs = [
            ColumnFamilyDescriptor::new(CF_RAFT, raft_opts),
            ColumnFamilyDescriptor::new(CF_KV, opts.clone()),
            ColumnFamilyDescriptor::new(CF_META, opts.clone()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?;
        Ok(Arc::new(Db { db }))
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        // Column families are created at open; a missing one is a bug.
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    pub fn raw(&self) -> &DB {
        &self.db
    }

    /// Writes a batch and fsyncs the WAL before returning.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Writes a batch without fsync: only for data that can be rebuilt from
    /// what is already durable (state machine results re-derivable from the
    /// synced raft log).
    pub fn write_nosync(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        Ok(self.db.write_opt(batch, &wo)?)
    }

    /// Flushes memtables and compacts every column family to the bottom:
    /// space held by deleted and compacted data is given back (etcd's
    /// defragment).
    pub fn defragment(&self) -> Result<()> {
        for cf in [CF_RAFT, CF_KV, CF_META] {
            self.db.flush_cf(self.cf(cf))?;
            self.db
                .compact_range_cf(self.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Size of the state machine (SST and memtable data of the keyspace and
    /// its meta records), for Status.dbSize and the backend quota. The raft
    /// log is left out, as etcd leaves its WAL out: it is truncated on its
    /// own schedule.
    pub fn size_bytes(&self) -> i64 {
        let mut total = 0i64;
        for cf in [CF_KV, CF_META] {
            let h = self.cf(cf);
            for prop in [
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ] {
                if let Ok(Some(v)) = self.db.property_int_value_cf(h, prop) {
                    total = total.saturating_add(v as i64);
                }
            }
        }
        total
    }
}

pub fn u64_from(bytes: &[u8], what: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Storage(format!("corrupt {what}: {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}
