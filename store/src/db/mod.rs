//! The RocksDB database behind one member, and its column families.
//!
//! `raft`: the raft log, hard state, conf state and snapshot metadata.
//! `kv`:   the MVCC keyspace, keyed by revision (see `revision.rs`).
//! `meta`: small records (applied index, current and compacted revision,
//!         member identity, initial cluster).
//!
//! `raft` holds nothing new: the raft log lives in its own segment files
//! (`raftlog`), and the column family is read only to migrate a data
//! directory written by an older secretd.
//!
//! The state machine's changes of a `Ready` go into one `WriteBatch`,
//! written without fsync: they are re-derivable from the synced raft log.
//! Only bootstrap, snapshot installs and the step before a log compaction
//! sync RocksDB's WAL.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, MemtableFactory, Options, WriteOptions, DB};

use crate::error::{Result, StoreError};

use crate::schema::{CF_FORMAT, FORMAT_KEY, STORAGE_FORMAT};
pub use crate::schema::{CF_KV, CF_META, CF_RAFT};
pub use mem::MemDisk;
pub use rocksdb::{Direction, IteratorMode};

pub mod mem;

/// Bytes of one memtable (see `Db::open`).
const MEMTABLE_BYTES_MAX: usize = 16 << 20;
/// Table files RocksDB keeps open at once (its default is all of them):
/// part of the descriptors a member keeps for storage (`api::conn::
/// FDS_RESERVED`), so a large keyspace cannot take the listeners' share,
/// nor a flood on a listener storage's. Older tables are reopened on use.
pub const ROCKSDB_OPEN_FILES_MAX: usize = 64;

/// A column family, by what it holds (resolved to a handle only when a
/// batch is written, so a batch does not borrow the database).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    Raft = 0,
    Kv = 1,
    Meta = 2,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Raft, Cf::Kv, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Raft => CF_RAFT,
            Cf::Kv => CF_KV,
            Cf::Meta => CF_META,
        }
    }

    fn of(name: &str) -> Cf {
        match name {
            CF_RAFT => Cf::Raft,
            CF_KV => Cf::Kv,
            CF_META => Cf::Meta,
            // The names are the schema's constants; anything else is a bug.
            other => panic!("unknown column family {other:?}"),
        }
    }
}

fn parse_format(v: &[u8], dir: &Path) -> Result<u32> {
    let bytes: [u8; 4] = v.try_into().map_err(|_| {
        StoreError::Storage(format!(
            "data directory {}: the storage format record is {} bytes, not 4 (corrupt)",
            dir.display(),
            v.len()
        ))
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Refuses a data directory of a newer storage format than this build's;
/// records this build's otherwise (synced), so an older release's data
/// directory is marked as upgraded once it was opened here.
fn check_format(db: &DB, dir: &Path) -> Result<()> {
    let cf = db
        .cf_handle(CF_FORMAT)
        .ok_or_else(|| StoreError::Storage("format column family missing after open".into()))?;
    if let Some(v) = db.get_cf(cf, FORMAT_KEY)? {
        let found = parse_format(&v, dir)?;
        if found > STORAGE_FORMAT {
            return Err(StoreError::Storage(format!(
                "data directory {} has storage format version {found}, written by a newer \
                 release; this secretd reads versions 1 to {STORAGE_FORMAT}: run a release \
                 that reads it, or restore this member from a snapshot",
                dir.display()
            )));
        }
        if found == STORAGE_FORMAT {
            return Ok(());
        }
    }
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    db.put_cf_opt(cf, FORMAT_KEY, STORAGE_FORMAT.to_be_bytes(), &w)?;
    Ok(())
}

/// One change in a batch.
#[derive(Clone, Debug)]
enum Op {
    Put(Cf, Box<[u8]>, Box<[u8]>),
    Delete(Cf, Box<[u8]>),
    /// Keys in `[from, to)`.
    DeleteRange(Cf, Box<[u8]>, Box<[u8]>),
}

/// Changes written together, atomically (RocksDB's `WriteBatch`, kept as a
/// list so the simulated disk can hold it apart from what is synced).
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    pub fn put_cf(&mut self, cf: Cf, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push(Op::Put(cf, key.as_ref().into(), value.as_ref().into()));
    }

    pub fn delete_cf(&mut self, cf: Cf, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Delete(cf, key.as_ref().into()));
    }

    pub fn delete_range_cf(&mut self, cf: Cf, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.ops.push(Op::DeleteRange(
            cf,
            from.as_ref().into(),
            to.as_ref().into(),
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Key and value bytes held (what bounds a batch's memory).
    pub fn size_in_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put(_, k, v) | Op::DeleteRange(_, k, v) => k.len() + v.len(),
                Op::Delete(_, k) => k.len(),
            })
            .sum()
    }
}

/// Where a member's data lives.
enum Backend {
    Rocks(DB),
    Mem(Arc<MemDisk>),
}

/// Shared handle to a member's database.
pub struct Db {
    backend: Backend,
    /// Where the raft log's segments live (`raftlog`): beside RocksDB's
    /// directory, or on the same simulated disk.
    log_dir: LogDir,
}

/// Where a member's raft log segments live: beside RocksDB's directory, or
/// on the same simulated disk. Defined here, with the database that decides
/// it; the file work on it is `raftlog::files`'s (`impl LogDir` there), so
/// the database never depends on the log built over it.
#[derive(Clone)]
pub enum LogDir {
    Real(PathBuf),
    Mem(Arc<MemDisk>),
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
        // Memtables sized for this store's write rate (a few MiB/s of
        // values): 16 MiB each, at most two per column family, instead of
        // RocksDB's 64 MiB. Memtables are resident in every member, and the
        // state they hold is durable in the WAL and the raft log anyway.
        opts.set_write_buffer_size(MEMTABLE_BYTES_MAX);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(ROCKSDB_OPEN_FILES_MAX as i32);
        let mut raft_opts = opts.clone();
        raft_opts.set_memtable_factory(MemtableFactory::Vector);
        let cfs = [
            ColumnFamilyDescriptor::new(CF_RAFT, raft_opts),
            ColumnFamilyDescriptor::new(CF_KV, opts.clone()),
            ColumnFamilyDescriptor::new(CF_META, opts.clone()),
            ColumnFamilyDescriptor::new(CF_FORMAT, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?;
        check_format(&db, dir)?;
        Ok(Arc::new(Db {
            backend: Backend::Rocks(db),
            log_dir: LogDir::Real(dir.join("raftlog")),
        }))
    }

    /// The storage format version recorded in the data directory at `dir`
    /// (None: no record, a d63c56e directory or none at all), without
    /// opening it for writing.
    pub fn format_version(dir: &Path) -> Result<Option<u32>> {
        let path = dir.join("db");
        let names = DB::list_cf(&Options::default(), &path).unwrap_or_default();
        if !names.iter().any(|n| n == CF_FORMAT) {
            return Ok(None);
        }
        let db = DB::open_cf_for_read_only(&Options::default(), &path, names, false)?;
        let cf = db
            .cf_handle(CF_FORMAT)
            .ok_or_else(|| StoreError::Storage("format column family vanished".into()))?;
        db.get_cf(cf, FORMAT_KEY)?
            .map(|v| parse_format(&v, dir))
            .transpose()
    }

    /// A database on a simulated disk (see [`MemDisk`]): what the
    /// deterministic simulation runs members on.
    pub fn open_mem(disk: Arc<MemDisk>) -> Arc<Db> {
        Arc::new(Db {
            log_dir: LogDir::Mem(disk.clone()),
            backend: Backend::Mem(disk),
        })
    }

    pub fn cf(&self, name: &str) -> Cf {
        Cf::of(name)
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match &self.backend {
            Backend::Rocks(db) => Ok(db.get_cf(rocks_cf(db, Cf::of(cf)), key)?),
            Backend::Mem(disk) => Ok(disk.get(Cf::of(cf), key)),
        }
    }

    /// The records of `cf` in key order, from where `mode` says (forward
    /// only: nothing reads backwards).
    pub fn iterator_cf(&self, cf: Cf, mode: IteratorMode<'_>) -> DbIter<'_> {
        let from: Vec<u8> = match mode {
            IteratorMode::Start => Vec::new(),
            IteratorMode::From(k, Direction::Forward) => k.to_vec(),
            // A bug, not input: every caller in this crate reads forward.
            IteratorMode::End | IteratorMode::From(_, Direction::Reverse) => {
                panic!("Db::iterator_cf reads forward only")
            }
        };
        match &self.backend {
            Backend::Rocks(db) => DbIter::Rocks(db.iterator_cf(
                rocks_cf(db, cf),
                IteratorMode::From(&from, Direction::Forward),
            )),
            Backend::Mem(disk) => DbIter::Mem {
                disk: disk.clone(),
                cf,
                next: Bound::Included(from),
            },
        }
    }

    /// Visits every record of `cf` from `from` on, in key order, without
    /// an allocation per record (`iterator_cf` boxes each key and value);
    /// stops early when `f` returns false. For the whole-keyspace passes
    /// (loading the index, hashing, snapshots: `scan_options`).
    pub fn scan_cf(
        &self,
        cf: Cf,
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        match &self.backend {
            Backend::Rocks(db) => scan_raw(
                db.raw_iterator_cf_opt(rocks_cf(db, cf), scan_options()),
                from,
                f,
            ),
            Backend::Mem(_) => {
                for item in self.iterator_cf(cf, IteratorMode::From(from, Direction::Forward)) {
                    let (k, v) = item?;
                    if !f(&k, &v)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// A point-in-time view of every column family: what a state snapshot
    /// reads off the raft thread while the loop goes on writing. The
    /// simulated disk has none (`None`): its snapshots are written on the
    /// loop, which is the simulation's only thread anyway.
    pub fn view(&self) -> Option<View<'_>> {
        match &self.backend {
            Backend::Rocks(db) => Some(View {
                db,
                snap: db.snapshot(),
            }),
            Backend::Mem(_) => None,
        }
    }

    /// RocksDB's estimate of the records in `cf` (0 for the simulated
    /// disk): for sizing buffers, never for answers.
    pub fn estimate_records(&self, cf: Cf) -> usize {
        match &self.backend {
            Backend::Rocks(db) => db
                .property_int_value_cf(rocks_cf(db, cf), "rocksdb.estimate-num-keys")
                .ok()
                .flatten()
                .unwrap_or(0) as usize,
            Backend::Mem(_) => 0,
        }
    }

    pub fn log_dir(&self) -> LogDir {
        self.log_dir.clone()
    }

    /// Makes every batch written so far durable (fsyncs the WAL).
    pub fn sync_wal(&self) -> Result<()> {
        match &self.backend {
            Backend::Rocks(db) => Ok(db.flush_wal(true)?),
            Backend::Mem(disk) => disk.write(WriteBatch::default(), true),
        }
    }

    /// Writes a batch and fsyncs the WAL before returning.
    pub fn write_sync(&self, batch: WriteBatch) -> Result<()> {
        self.write(batch, true)
    }

    /// Writes a batch without fsync: only for data that can be rebuilt from
    /// what is already durable (state machine results re-derivable from the
    /// synced raft log).
    pub fn write_nosync(&self, batch: WriteBatch) -> Result<()> {
        self.write(batch, false)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        match &self.backend {
            Backend::Rocks(db) => {
                let mut rb = rocksdb::WriteBatch::default();
                for op in &batch.ops {
                    match op {
                        Op::Put(cf, k, v) => rb.put_cf(rocks_cf(db, *cf), k, v),
                        Op::Delete(cf, k) => rb.delete_cf(rocks_cf(db, *cf), k),
                        Op::DeleteRange(cf, f, t) => rb.delete_range_cf(rocks_cf(db, *cf), f, t),
                    }
                }
                let mut wo = WriteOptions::default();
                wo.set_sync(sync);
                Ok(db.write_opt(rb, &wo)?)
            }
            Backend::Mem(disk) => disk.write(batch, sync),
        }
    }

    /// Flushes memtables and compacts every column family to the bottom:
    /// space held by deleted and compacted data is given back (etcd's
    /// defragment).
    pub fn defragment(&self) -> Result<()> {
        if let Backend::Rocks(db) = &self.backend {
            for cf in Cf::ALL {
                db.flush_cf(rocks_cf(db, cf))?;
                db.compact_range_cf(rocks_cf(db, cf), None::<&[u8]>, None::<&[u8]>);
            }
        }
        Ok(())
    }

    /// Size of the state machine (SST and memtable data of the keyspace and
    /// its meta records), for Status.dbSize and the backend quota. The raft
    /// log is left out, as etcd leaves its WAL out: it is truncated on its
    /// own schedule.
    pub fn size_bytes(&self) -> i64 {
        match &self.backend {
            Backend::Rocks(db) => {
                let mut total = 0i64;
                for cf in [Cf::Kv, Cf::Meta] {
                    let h = rocks_cf(db, cf);
                    for prop in [
                        "rocksdb.total-sst-files-size",
                        "rocksdb.cur-size-all-mem-tables",
                    ] {
                        if let Ok(Some(v)) = db.property_int_value_cf(h, prop) {
                            total = total.saturating_add(v as i64);
                        }
                    }
                }
                total
            }
            Backend::Mem(disk) => disk.size_bytes([Cf::Kv, Cf::Meta]),
        }
    }
}

/// Bytes a simulated disk's sorted load stages per batch.
const LOAD_BATCH_BYTES_MAX: usize = 4 << 20;

/// What `Db::load_sorted`'s caller hands each record to.
pub type SortedSink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

impl Db {
    /// Loads records of `cf` that `fill` gives in strictly increasing key
    /// order (a snapshot's kv records): on RocksDB, written into one table
    /// file beside the database and ingested whole, which skips the WAL,
    /// the memtables and the flushes a new member's install otherwise
    /// stalls on (most of a 500k-key catch-up's time); on a simulated disk,
    /// bounded batches. Not atomic: callers bracket it with a durable marker
    /// and redo it after a crash, as the batches were. Records out of order
    /// are refused (a table file cannot hold them). Returns the count.
    pub fn load_sorted(
        &self,
        cf: Cf,
        fill: &mut dyn FnMut(&mut SortedSink<'_>) -> Result<()>,
    ) -> Result<u64> {
        self.load_sorted_then(cf, fill, None)
    }

    /// `load_sorted`, with nothing of it visible until `fill` has given
    /// every record and `before` has run (and succeeded): on RocksDB the
    /// table file waits to be ingested; on a simulated disk the records
    /// wait in memory (its data is memory already). What a caller checks
    /// only at the end of its records (a snapshot's trailer) is checked
    /// before `before` replaces anything.
    pub fn load_sorted_then(
        &self,
        cf: Cf,
        fill: &mut dyn FnMut(&mut SortedSink<'_>) -> Result<()>,
        mut before: Option<&mut dyn FnMut() -> Result<()>>,
    ) -> Result<u64> {
        let mut last: Vec<u8> = Vec::new();
        let mut records = 0u64;
        let mut in_order = move |k: &[u8]| {
            if records > 0 && k <= last.as_slice() {
                return Err(StoreError::Storage(format!(
                    "records to load are out of order at record {records}"
                )));
            }
            last.clear();
            last.extend_from_slice(k);
            records += 1;
            Ok(records)
        };
        let mut count = 0;
        match (&self.backend, &self.log_dir) {
            (Backend::Rocks(db), LogDir::Real(log_dir)) => {
                let path = log_dir.with_file_name(format!("load-{}.sst", cf.name()));
                remove_stale(&path)?;
                let opts = Options::default();
                let mut w = rocksdb::SstFileWriter::create(&opts);
                w.open(&path)?;
                let filled = fill(&mut |k, v| {
                    count = in_order(k)?;
                    Ok(w.put(k, v)?)
                })
                .and_then(|()| before.as_mut().map_or(Ok(()), |before| before()));
                if let Err(e) = filled {
                    // A load given up leaves no table file the size of a
                    // snapshot behind.
                    drop(w);
                    let _ = remove_stale(&path);
                    return Err(e);
                }
                let ingested = match count {
                    0 => Ok(()),
                    _ => w.finish().and_then(|()| {
                        let mut io = rocksdb::IngestExternalFileOptions::default();
                        io.set_move_files(true);
                        db.ingest_external_file_cf_opts(rocks_cf(db, cf), &io, vec![&path])
                    }),
                };
                drop(w);
                remove_stale(&path)?;
                ingested?;
            }
            _ => count = self.load_batches(cf, fill, before, &mut in_order)?,
        }
        Ok(count)
    }

    /// `load_sorted_then` on a simulated disk: bounded batches, written as
    /// they fill or, with `before`, held until it has run.
    fn load_batches(
        &self,
        cf: Cf,
        fill: &mut dyn FnMut(&mut SortedSink<'_>) -> Result<()>,
        mut before: Option<&mut dyn FnMut() -> Result<()>>,
        in_order: &mut dyn FnMut(&[u8]) -> Result<u64>,
    ) -> Result<u64> {
        let held = before.is_some();
        let mut count = 0;
        let (mut full, mut batch) = (Vec::new(), WriteBatch::default());
        fill(&mut |k, v| {
            count = in_order(k)?;
            batch.put_cf(cf, k, v);
            if batch.size_in_bytes() >= LOAD_BATCH_BYTES_MAX {
                let filled = std::mem::take(&mut batch);
                match held {
                    true => full.push(filled),
                    false => self.write_nosync(filled)?,
                }
            }
            Ok(())
        })?;
        if let Some(before) = before.as_mut() {
            before()?;
        }
        for batch in full.into_iter().chain([batch]) {
            self.write_nosync(batch)?;
        }
        Ok(count)
    }
}

/// Removes a loader's table file left by an earlier, interrupted load.
fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Storage(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

fn rocks_cf(db: &DB, cf: Cf) -> &rocksdb::ColumnFamily {
    // Column families are created at open; a missing one is a bug.
    db.cf_handle(cf.name())
        .expect("column family created at open")
}

/// One point in time of a RocksDB database (`Db::view`).
pub struct View<'a> {
    db: &'a DB,
    snap: rocksdb::Snapshot<'a>,
}

impl View<'_> {
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(rocks_cf(self.db, Cf::of(cf)), key)?)
    }

    /// `Db::scan_cf`, as of the view.
    pub fn scan_cf(
        &self,
        cf: Cf,
        from: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let it = self
            .snap
            .raw_iterator_cf_opt(rocks_cf(self.db, cf), scan_options());
        scan_raw(it, from, f)
    }
}

/// Where a whole-state pass reads: the database as it is, or a view.
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    Now(&'a Db),
    At(&'a View<'a>),
}

impl Reader<'_> {
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Reader::Now(db) => db.get(cf, key),
            Reader::At(v) => v.get(cf, key),
        }
    }

    pub fn scan_cf(
        &self,
        cf: Cf,
        from: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        match self {
            Reader::Now(db) => db.scan_cf(cf, from, f),
            Reader::At(v) => v.scan_cf(cf, from, f),
        }
    }
}

/// Whole-keyspace scans bypass the block cache (one pass would evict what
/// serves reads) and read ahead.
fn scan_options() -> rocksdb::ReadOptions {
    let mut ro = rocksdb::ReadOptions::default();
    ro.fill_cache(false);
    ro.set_readahead_size(SCAN_READAHEAD_BYTES);
    ro
}

fn scan_raw(
    mut it: rocksdb::DBRawIteratorWithThreadMode<'_, DB>,
    from: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    it.seek(from);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !f(k, v)? {
            return Ok(());
        }
        it.next();
    }
    Ok(it.status()?)
}

/// Bytes a whole-keyspace scan reads ahead (`Db::scan_cf`).
const SCAN_READAHEAD_BYTES: usize = 2 << 20;

/// Records in key order, from either backend.
pub enum DbIter<'a> {
    Rocks(rocksdb::DBIteratorWithThreadMode<'a, DB>),
    /// Reads the record after `next` on each step: the simulation is one
    /// thread, so nothing writes while a scan runs.
    Mem {
        disk: Arc<MemDisk>,
        cf: Cf,
        next: Bound<Vec<u8>>,
    },
}

impl Iterator for DbIter<'_> {
    type Item = Result<(Box<[u8]>, Box<[u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DbIter::Rocks(it) => it.next().map(|r| r.map_err(StoreError::from)),
            DbIter::Mem { disk, cf, next } => {
                let (k, v) = disk.next_after(*cf, next)?;
                *next = Bound::Excluded(k.to_vec());
                Some(Ok((k, v)))
            }
        }
    }
}

pub fn u64_from(bytes: &[u8], what: &str) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Storage(format!("corrupt {what}: {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

#[cfg(test)]
mod format_tests {
    use super::*;

    fn put_format(dir: &Path, v: &[u8]) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_RAFT, CF_KV, CF_META, CF_FORMAT]
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).unwrap();
        db.put_cf(db.cf_handle(CF_FORMAT).unwrap(), FORMAT_KEY, v)
            .unwrap();
    }

    /// A directory with no record (d63c56e's, format 1) gets this build's;
    /// a newer one is refused naming both versions, and so is a damaged
    /// record; none is rewritten.
    #[test]
    fn the_storage_format_is_recorded_and_a_newer_one_refused() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Db::format_version(d.path()).unwrap(), None);
        drop(Db::open(d.path()).unwrap());
        assert_eq!(Db::format_version(d.path()).unwrap(), Some(STORAGE_FORMAT));

        let newer = tempfile::tempdir().unwrap();
        put_format(newer.path(), &(STORAGE_FORMAT + 1).to_be_bytes());
        let e = Db::open(newer.path()).err().unwrap().to_string();
        assert!(
            e.contains(&format!("storage format version {}", STORAGE_FORMAT + 1))
                && e.contains(&format!("versions 1 to {STORAGE_FORMAT}")),
            "{e}"
        );
        assert_eq!(
            Db::format_version(newer.path()).unwrap(),
            Some(STORAGE_FORMAT + 1)
        );

        let damaged = tempfile::tempdir().unwrap();
        put_format(damaged.path(), b"xy");
        let e = Db::open(damaged.path()).err().unwrap().to_string();
        assert!(e.contains("2 bytes, not 4"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(db: &Db) -> Vec<Vec<u8>> {
        db.iterator_cf(db.cf(CF_KV), IteratorMode::Start)
            .map(|item| item.unwrap().0.to_vec())
            .collect()
    }

    fn load(db: &Db, records: &[&[u8]]) -> Result<u64> {
        db.load_sorted(db.cf(CF_KV), &mut |sink| {
            for k in records {
                sink(k, b"v")?;
            }
            Ok(())
        })
    }

    /// A sorted load lands after the deletes before it, holds exactly what
    /// was given, and refuses records out of order, on RocksDB (a table
    /// file, ingested) and on the simulated disk (batches) alike; a table
    /// file an interrupted load left behind does not get in the way.
    #[test]
    fn a_sorted_load_replaces_what_was_deleted_and_refuses_disorder() {
        let dir = tempfile::tempdir().unwrap();
        let rocks = Db::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("load-kv.sst"), b"left by a crash").unwrap();
        for db in [rocks, Db::open_mem(MemDisk::new())] {
            let mut b = WriteBatch::default();
            b.put_cf(db.cf(CF_KV), b"a", b"old");
            b.put_cf(db.cf(CF_KV), b"z", b"old");
            db.write_sync(b).unwrap();
            let mut b = WriteBatch::default();
            b.delete_range_cf(db.cf(CF_KV), b"", [0xffu8; 32]);
            db.write_nosync(b).unwrap();

            assert_eq!(load(&db, &[b"a", b"b", b"c"]).unwrap(), 3);
            assert_eq!(keys(&db), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
            assert_eq!(db.get(CF_KV, b"a").unwrap().as_deref(), Some(&b"v"[..]));

            let e = load(&db, &[b"d", b"d"]).unwrap_err();
            assert!(e.to_string().contains("out of order"), "{e}");
            assert_eq!(load(&db, &[]).unwrap(), 0);
        }
        assert!(!dir.path().join("load-kv.sst").exists());
    }
}
