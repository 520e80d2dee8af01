//! The MVCC keyspace with etcd's revision semantics.
//!
//! Values live in RocksDB's `kv` column family keyed by revision; the
//! in-memory [`Index`] maps each key to its revisions. Two views exist:
//!
//! - readers (any thread) see the *published* revision: everything at or
//!   below it is durable in RocksDB;
//! - the single writer ([`Applier`], owned by the raft loop) sees its own
//!   newer state, with values not yet written held in an overlay.
//!
//! Data flows one way: raft applies through the `Applier`, the batch is made
//! durable, then [`Applier::publish`] moves the readers' revision forward.

mod hash;
pub mod index;
mod range;
pub mod records;
mod runs;
mod txn;
pub mod txn_checks;
mod txn_path;
mod write_answer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::db::{Direction, IteratorMode, WriteBatch};
use parking_lot::RwLock;
use prost::Message;

use crate::answers::{AnswerBudget, Charge};
use crate::clock::Clock;
use crate::db::{u64_from, Cf, Db, Reader, CF_KV, CF_META};
use crate::error::{Result, StoreError};
use crate::lease::{self, Lessor};
use crate::log_store::StateSource;
use crate::pb::etcdserverpb::{RangeRequest, RangeResponse};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use crate::revision::{self, Rev};
use crate::schema;
use crate::snapshot::{SnapshotReader, SnapshotWriter, CF_TAG_KV, CF_TAG_META};
pub use index::Index;
pub(crate) use range::{range_at, Source};
pub use txn::{KvOp, WriteResult};

use crate::schema::meta::{COMPACT_REV as META_COMPACT_REV, CURRENT_REV as META_CURRENT_REV};

/// Events of one revision, in the order they were written.
#[derive(Clone, Debug)]
pub struct RevEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

pub struct Mvcc {
    db: Arc<Db>,
    index: RwLock<Index>,
    published_rev: AtomicI64,
    /// Lock order: `index` before `lessor` when both are held.
    lessor: parking_lot::Mutex<Lessor>,
    /// What lease expiry is measured against.
    clock: Clock,
    /// The last HashKV, to extend (`hash`).
    kept_hash: parking_lot::Mutex<Option<hash::KeptHash>>,
    /// Bytes of read answers held at once (`answers`).
    answers: Arc<AnswerBudget>,
    /// Recently read records (`records`): reads of hot keys skip RocksDB.
    records: records::Records,
}

impl Mvcc {
    /// Opens the keyspace and rebuilds the index from disk.
    pub fn open(db: Arc<Db>) -> Result<Arc<Mvcc>> {
        Mvcc::open_with_clock(db, Clock::real())
    }

    /// `open`, with leases timed by `clock` (the simulation's).
    pub fn open_with_clock(db: Arc<Db>, clock: Clock) -> Result<Arc<Mvcc>> {
        let (index, current, lessor) = load_index(&db, clock.now())?;
        Ok(Arc::new(Mvcc {
            db,
            index: RwLock::new(index),
            published_rev: AtomicI64::new(current),
            lessor: parking_lot::Mutex::new(lessor),
            clock,
            kept_hash: parking_lot::Mutex::new(None),
            answers: Arc::default(),
            records: records::Records::default(),
        }))
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Rebuilds the index after the keyspace was replaced (snapshot install).
    pub fn reload(&self) -> Result<()> {
        self.reload_from(None)
    }

    /// `reload` from the records the install wrote (`install_with`'s).
    pub fn reload_installed(&self, installed: Installed) -> Result<()> {
        self.reload_from(Some(installed))
    }

    fn reload_from(&self, installed: Option<Installed>) -> Result<()> {
        let (index, current, lessor) = load_index_from(&self.db, self.clock.now(), installed)?;
        let mut guard = self.index.write();
        *guard = index;
        // Under the index's write lock: no read names a record of the old
        // keyspace after this.
        self.records.clear();
        self.forget_hash();
        *self.lessor.lock() = lessor;
        self.published_rev.store(current, Ordering::Release);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn db_for_tests(&self) -> &Arc<Db> {
        &self.db
    }
    /// The lessor (leases and their keys). Held briefly; never across I/O.
    pub fn lessor(&self) -> parking_lot::MutexGuard<'_, Lessor> {
        self.lessor.lock()
    }

    pub fn current_revision(&self) -> i64 {
        self.published_rev.load(Ordering::Acquire)
    }

    pub fn compact_revision(&self) -> i64 {
        self.index.read().compact_rev
    }

    pub fn key_count(&self) -> usize {
        self.index.read().len()
    }

    /// The member's budget for read answers.
    pub fn answers(&self) -> &Arc<AnswerBudget> {
        &self.answers
    }

    /// A range over the published state.
    pub fn range(&self, req: &RangeRequest) -> Result<(RangeResponse, i64)> {
        self.range_charged(req).map(|(resp, rev, _)| (resp, rev))
    }

    /// `range`, and the answer's charge against the budget, to hold until
    /// the answer is sent.
    pub fn range_charged(&self, req: &RangeRequest) -> Result<(RangeResponse, i64, Charge)> {
        let current = self.current_revision();
        let charge = self.answers.charge();
        let index = self.index.read();
        let lease_of = |k: &[u8]| self.lessor().key_lease(k);
        let src = Source {
            fetch: &|rev| self.read_value(rev),
            lease_of: Some(&lease_of),
            charge: Some(&charge),
        };
        let resp = range_at(&index, req, current, &src)?;
        drop(index);
        Ok((resp, current, charge))
    }

    /// Evaluates a read-only txn against the published state; the answer's
    /// charge comes with it, to hold until the answer is sent.
    pub fn txn_readonly(
        &self,
        req: &crate::pb::etcdserverpb::TxnRequest,
    ) -> Result<(crate::pb::etcdserverpb::TxnResponse, i64, Charge)> {
        let current = self.current_revision();
        let charge = self.answers.charge();
        let index = self.index.read();
        let lease_of = |k: &[u8]| self.lessor().key_lease(k);
        let src = Source {
            fetch: &|rev| self.read_value(rev),
            lease_of: Some(&lease_of),
            charge: Some(&charge),
        };
        let resp = txn::read_only(&index, req, current, &src)?;
        drop(index);
        Ok((resp, current, charge))
    }

    /// The record at `rev`, for a reader: through the record cache.
    fn read_value(&self, rev: Rev) -> Result<KeyValue> {
        self.records.get_or_read(rev, || self.read_record(rev))
    }

    /// The record at `rev`, from RocksDB.
    fn read_record(&self, rev: Rev) -> Result<KeyValue> {
        match self.db.get(CF_KV, &rev.key(false))? {
            Some(v) => decode_kv(&v),
            None => Err(StoreError::Storage(format!(
                "index names revision {}/{} but no record exists",
                rev.main, rev.sub
            ))),
        }
    }

    /// Events of keys in `[key, range_end)` for revisions `from..=to` (at
    /// most `to` = the published revision), stopping at a revision boundary
    /// after about `max_events`. Returns the events and the next revision to
    /// read from.
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        max_events: usize,
        want_prev: bool,
    ) -> Result<(Vec<RevEvents>, i64)> {
        let to = self.current_revision();
        let index = self.index.read();
        if from < index.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: index.compact_rev,
            });
        }
        let mut out: Vec<RevEvents> = Vec::new();
        let mut count = 0usize;
        let mut next = from;
        let lower = Rev::lower_bound(from);
        let iter = self.db.iterator_cf(
            self.db.cf(CF_KV),
            IteratorMode::From(&lower, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            let (rev, tomb) = Rev::decode(&k)?;
            if rev.main > to {
                break;
            }
            if rev.main >= next && count >= max_events {
                break; // only ever stop between revisions
            }
            next = rev.main + 1;
            let kv = decode_kv(&v)?;
            if !key_in_range(&kv.key, key, range_end) {
                continue;
            }
            let prev_kv = if want_prev {
                prev_value(&index, &kv.key, rev.main, &|r| self.read_value(r))?
            } else {
                None
            };
            let ev = Event {
                r#type: if tomb {
                    EventType::Delete
                } else {
                    EventType::Put
                } as i32,
                kv: Some(kv),
                prev_kv,
            };
            count += 1;
            match out.last_mut() {
                Some(last) if last.revision == rev.main => last.events.push(ev),
                _ => out.push(RevEvents {
                    revision: rev.main,
                    events: vec![ev],
                }),
            }
        }
        if count < max_events {
            next = next.max(to + 1); // read everything up to `to`
        }
        Ok((out, next))
    }
}

/// Reads the index, current revision and leases back from disk.
fn load_index(db: &Db, now: std::time::Instant) -> Result<(Index, i64, Lessor)> {
    load_index_from(db, now, None)
}

/// `load_index`, with the kv records an install just wrote (`Installed`)
/// instead of reading them back from the column family.
fn load_index_from(
    db: &Db,
    now: std::time::Instant,
    installed: Option<Installed>,
) -> Result<(Index, i64, Lessor)> {
    let current = match db.get(CF_META, META_CURRENT_REV)? {
        Some(v) => u64_from(&v, "current revision")? as i64,
        None => 1, // etcd's empty store is at revision 1
    };
    let compact = match db.get(CF_META, META_COMPACT_REV)? {
        Some(v) => u64_from(&v, "compact revision")? as i64,
        None => 0,
    };
    let mut lessor = load_leases(db, now)?;
    let started = std::time::Instant::now();
    // An install's runs come sorted; a restart's one run is sorted below.
    let (mut runs, sorted) = match installed {
        Some(Installed(Some(runs))) => (runs, true),
        Some(Installed(None)) | None => {
            // Sized up front: growing a vector of a million records
            // copies them over and over (a fifth of a restart at 1M keys).
            let expected = db.estimate_records(db.cf(CF_KV));
            let mut records = Vec::with_capacity(expected.min(RESTORE_PRESIZE_MAX));
            db.scan_cf(db.cf(CF_KV), &[], |k, v| {
                records.push(restored(k, v)?);
                Ok(true)
            })?;
            (vec![records], false)
        }
    };
    if let Some(r) = runs.iter().flatten().find(|r| r.rev.main > current) {
        // Written by a batch whose revision never got recorded: cannot
        // happen with atomic batches, so the files are damaged.
        return Err(StoreError::Storage(format!(
            "record at revision {} beyond current revision {current}",
            r.rev.main
        )));
    }
    let count = runs.iter().map(Vec::len).sum::<usize>();
    let read_ms = started.elapsed().as_millis() as u64;
    if !sorted {
        // In place (no scratch copy of a million records).
        runs.iter_mut()
            .for_each(|run| run.sort_unstable_by(index::by_key_rev));
    }
    // Each key's newest put carries its lease; a key whose newest record
    // is a tombstone has none.
    let index = Index::restore_sorted(runs::merged(runs), compact, |newest| {
        if !newest.tombstone && newest.lease != 0 {
            lessor.set_key_lease(&newest.key, newest.lease);
        }
    });
    tracing::debug!(
        records = count,
        read_ms,
        indexed_ms = started.elapsed().as_millis() as u64 - read_ms,
        "loaded the key index"
    );
    Ok((index, current, lessor))
}

/// The leases on disk, each as its record says.
fn load_leases(db: &Db, now: std::time::Instant) -> Result<Lessor> {
    let mut lessor = Lessor::default();
    let prefix_iter = db.iterator_cf(
        db.cf(CF_META),
        IteratorMode::From(lease::META_PREFIX, Direction::Forward),
    );
    for item in prefix_iter {
        let (k, v) = item?;
        let Some(id) = schema::lease_id(&k) else {
            break;
        };
        let (ttl, renewed) = lease::decode_record(&v)
            .map_err(|e| StoreError::Storage(format!("lease {id:x}: {e}")))?;
        lessor.restore(id, ttl, renewed, now);
    }
    Ok(lessor)
}

/// The index's view of one stored kv record (its value is skipped).
fn restored(k: &[u8], v: &[u8]) -> Result<index::Restored> {
    let (rev, tombstone) = Rev::decode(k)?;
    let kv = KvHeader::decode(v)
        .map_err(|e| StoreError::Storage(format!("corrupt key-value record: {e}")))?;
    Ok(index::Restored {
        key: kv.key,
        rev,
        tombstone,
        created: kv.create_revision,
        version: kv.version,
        lease: kv.lease,
    })
}

/// Records `load_index` reserves room for up front at most (RocksDB's
/// count is an estimate; past this the vector grows as usual).
const RESTORE_PRESIZE_MAX: usize = 16 << 20;

/// What an install wrote to the kv column family, as the index reads it:
/// handed to `Mvcc::reload_installed` so that a snapshot's records are not
/// read back from disk right after they were written. In runs, each
/// sorted by key then revision while the install read on (`runs`); none
/// when the sorter failed, and then the records are read back.
pub struct Installed(Option<Vec<Vec<index::Restored>>>);

use crate::schema::{
    is_replicated as is_replicated_meta, REPLICATED as REPLICATED_META, REPLICATED_PREFIXES,
};

/// etcd's prefix rule, shared with the clients (`secretd_vocab`).
pub use secretd_vocab::prefix_end;
/// Bytes of meta records staged per batch while installing a snapshot.
const INSTALL_BATCH_BYTES_MAX: usize = 4 << 20;
/// Bytes of meta records an install in one pass holds until the snapshot
/// is read whole (`install_records_checked`): some million leases. Past
/// it, the file is checked first and installed as it is read.
#[cfg(not(test))]
const INSTALL_META_HELD_BYTES_MAX: usize = 64 << 20;
#[cfg(test)]
const INSTALL_META_HELD_BYTES_MAX: usize = 64 << 10;

/// Called with (column family tag, key, value) for each state record.
pub type RecordVisitor<'a> = dyn FnMut(u8, &[u8], &[u8]) -> Result<()> + 'a;

impl Mvcc {
    /// Every record of the replicated state (what a snapshot carries), in
    /// a fixed order: the kv column family, then the replicated meta
    /// records.
    fn for_each_state_record(&self, f: &mut RecordVisitor<'_>) -> Result<()> {
        state_records(Reader::Now(&self.db), f)
    }

    /// etcd's `Maintenance.Hash`: a CRC-32 of the whole replicated state
    /// (every revision of every key, leases, members, alarms), for tests
    /// that compare members. Unlike `hash_kv` it covers more than the
    /// keyspace, and it is not tied to a revision.
    pub fn hash_state(&self) -> Result<u32> {
        let mut h = crc32fast::Hasher::new();
        self.for_each_state_record(&mut |tag, k, v| {
            h.update(&[tag]);
            h.update(&(k.len() as u32).to_be_bytes());
            h.update(k);
            h.update(&(v.len() as u32).to_be_bytes());
            h.update(v);
            Ok(())
        })?;
        Ok(h.finalize())
    }
}

impl StateSource for Mvcc {
    fn has_views(&self) -> bool {
        self.db.view().is_some()
    }

    fn write_snapshot(&self, w: &mut SnapshotWriter, taken: &mut dyn FnMut()) -> Result<()> {
        match self.db.view() {
            Some(view) => {
                taken();
                state_records(Reader::At(&view), &mut |tag, k, v| w.record(tag, k, v))
            }
            None => {
                // No view: the records are read before the caller may go
                // on changing them.
                self.for_each_state_record(&mut |tag, k, v| w.record(tag, k, v))?;
                taken();
                Ok(())
            }
        }
    }
}

/// Every record of the replicated state (the kv column family, then the
/// replicated meta records), as `r` reads them.
fn state_records(r: Reader<'_>, f: &mut RecordVisitor<'_>) -> Result<()> {
    r.scan_cf(Cf::Kv, &[], |k, v| {
        f(CF_TAG_KV, k, v)?;
        Ok(true)
    })?;
    for key in REPLICATED_META {
        if let Some(v) = r.get(CF_META, key)? {
            f(CF_TAG_META, key, &v)?;
        }
    }
    for prefix in REPLICATED_PREFIXES {
        r.scan_cf(Cf::Meta, prefix, |k, v| {
            if !k.starts_with(prefix) {
                return Ok(false);
            }
            if is_replicated_meta(k) {
                f(CF_TAG_META, k, v)?;
            }
            Ok(true)
        })?;
    }
    Ok(())
}

/// Replaces the keyspace on disk by a snapshot's records, in batches of
/// bounded size. Not atomic by itself: the caller brackets it with a
/// durable "installing" marker and redoes it after a crash. The caller
/// has checked the whole file first: a record found corrupt half way
/// would leave the keyspace half replaced.
pub fn install_records(db: &Db, r: &mut SnapshotReader) -> Result<Installed> {
    install_with(db, &mut |sink| feed_all(r, sink))
}

/// `install_records` in one pass over a file nobody has checked: nothing
/// is replaced until the last record is read and the trailer matches;
/// then `start` runs (the caller's durable marker) and the old keyspace
/// goes. `None` when the snapshot's meta records are more than this holds
/// in memory meanwhile (`INSTALL_META_HELD_BYTES_MAX`), with nothing
/// replaced: check the file, then `install_records`. One pass saves the
/// checking read, a quarter of a million-key catch-up's install.
pub fn install_records_checked(
    db: &Db,
    r: &mut SnapshotReader,
    start: &mut dyn FnMut() -> Result<()>,
) -> Result<Option<Installed>> {
    install_from(db, &mut |sink| feed_all(r, sink), Some(start))
}

fn feed_all(r: &mut SnapshotReader, sink: &mut RecordVisitor<'_>) -> Result<()> {
    while let Some((cf, k, v)) = r.next_record()? {
        sink(cf, &k, &v)?;
    }
    Ok(())
}

/// `install_records` from any source: `feed` calls the sink with each
/// record (column family tag, key, value).
pub fn install_with(
    db: &Db,
    feed: &mut dyn FnMut(&mut RecordVisitor<'_>) -> Result<()>,
) -> Result<Installed> {
    install_from(db, feed, None)?.ok_or_else(|| {
        StoreError::Storage("an install that replaces as it goes held its meta records".into())
    })
}

/// The deletes that clear the replicated state for an install.
fn clear_replicated(db: &Db) -> WriteBatch {
    let (kv, meta) = (db.cf(CF_KV), db.cf(CF_META));
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(kv, &[][..], &[0xffu8; revision::KEY_BYTES + 1][..]);
    for key in REPLICATED_META {
        batch.delete_cf(meta, key);
    }
    for prefix in REPLICATED_PREFIXES {
        batch.delete_range_cf(meta, *prefix, &prefix_end(prefix)[..]);
    }
    batch
}

/// Both installs. Without `start`, the old state is cleared first and
/// meta records go in batches as they come. With it, nothing is written
/// until `feed` has given its last record: meta records are held (up to
/// `INSTALL_META_HELD_BYTES_MAX`, past which it stops with `None`), the
/// kv records wait in a table file, and then `start`, the clearing, the
/// table file and the held records land, in that order.
fn install_from(
    db: &Db,
    feed: &mut dyn FnMut(&mut RecordVisitor<'_>) -> Result<()>,
    mut start: Option<&mut dyn FnMut() -> Result<()>>,
) -> Result<Option<Installed>> {
    let mut records = runs::Runs::new();
    let (kv, meta) = (db.cf(CF_KV), db.cf(CF_META));
    let held = start.is_some();
    if !held {
        // The deletes first: the loaded records must land after them.
        db.write_nosync(clear_replicated(db))?;
    }
    let mut batch = WriteBatch::default();
    let mut too_large = false;
    // kv records come in revision order (a snapshot is written by
    // iterating the column family) and are loaded as one table file; the
    // few meta records go in batches.
    let mut clear_then = || -> Result<()> {
        if let Some(start) = start.as_mut() {
            start()?;
        }
        db.write_nosync(clear_replicated(db))
    };
    let loaded = db.load_sorted_then(
        kv,
        &mut |load| {
            feed(&mut |cf, k, v| {
                match cf {
                    CF_TAG_KV => {
                        // Decoding checks the record before it is stored.
                        records.push(restored(k, v)?);
                        load(k, v)?;
                    }
                    _ if is_replicated_meta(k) => batch.put_cf(meta, k, v),
                    _ => {
                        return Err(StoreError::Storage(format!(
                            "snapshot carries unknown meta record {:?}",
                            String::from_utf8_lossy(k)
                        )))
                    }
                }
                if held && batch.size_in_bytes() > INSTALL_META_HELD_BYTES_MAX {
                    too_large = true;
                    return Err(StoreError::Storage("meta records past what is held".into()));
                }
                if !held && batch.size_in_bytes() >= INSTALL_BATCH_BYTES_MAX {
                    db.write_nosync(std::mem::take(&mut batch))?;
                }
                Ok(())
            })
        },
        if held { Some(&mut clear_then) } else { None },
    );
    match loaded {
        Err(_) if too_large => return Ok(None),
        loaded => loaded?,
    };
    db.write_nosync(batch)?;
    // The keyspace is replaced by now: a sorter that failed costs a read
    // of the records back, not the install.
    let runs = records
        .finish()
        .map_err(|e| tracing::warn!(error = %e, "reading the installed records back"))
        .ok();
    Ok(Some(Installed(runs)))
}

/// Whether `k` lies in etcd's `[key, range_end)` interval.
pub fn key_in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return k == key;
    }
    k >= key && (range_end == [0] || k < range_end)
}

/// A stored `KeyValue` without its value (field 5, which prost skips): all
/// the index needs, read at start and after a snapshot without copying
/// every value in the store.
#[derive(Clone, PartialEq, prost::Message)]
struct KvHeader {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(int64, tag = "2")]
    create_revision: i64,
    #[prost(int64, tag = "4")]
    version: i64,
    #[prost(int64, tag = "6")]
    lease: i64,
}

fn decode_kv(v: &[u8]) -> Result<KeyValue> {
    KeyValue::decode(v).map_err(|e| StoreError::Storage(format!("corrupt key-value record: {e}")))
}

/// The value of `key` just before revision `main`, if it existed.
fn prev_value(
    index: &Index,
    key: &[u8],
    main: i64,
    fetch: &dyn Fn(Rev) -> Result<KeyValue>,
) -> Result<Option<KeyValue>> {
    match index.get(key).and_then(|ki| ki.get(main - 1)) {
        Some(found) if main > index.compact_rev => Ok(Some(fetch(found.modified)?)),
        _ => Ok(None),
    }
}

/// How an entry's proposer asked every member to apply its write, beyond
/// the request itself. Each term is set only once every member applies
/// it, so an entry without one is applied as the releases before it did
/// (README, "Upgrades"); `default()` is such an entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyTerms {
    /// The most the write's answer may render: past it, refused before
    /// it writes anything (`write_answer`).
    pub answer_bytes_max: Option<usize>,
    /// A txn is decided and checked before it writes (`txn_path`).
    pub txn_decided_first: bool,
    /// A txn's compares and bound follow etcd where secretd's differed
    /// (`txn::CompareRules`, `write_answer`).
    pub txn_rules_etcd: bool,
}

/// The single writer of the keyspace. Owned by the raft loop; every method
/// stages into a `WriteBatch` that the caller makes durable before calling
/// [`Applier::publish`].
pub struct Applier {
    mvcc: Arc<Mvcc>,
    /// Newest revision written (possibly not yet durable or published).
    writer_rev: i64,
    /// Values staged in the current batch, by revision, encoded as in the
    /// batch: a later request of the same batch reading one decodes it (rare),
    /// so staging costs no extra copy.
    overlay: HashMap<Rev, Vec<u8>>,
    /// `writer_rev` moved since it was last staged: the batch must carry it
    /// before it is published. Staged once per batch, not per request: only
    /// the last value of a batch matters, and each staged copy costs a
    /// memtable insert and WAL bytes on every member.
    rev_unstaged: bool,
}

impl Applier {
    pub fn new(mvcc: Arc<Mvcc>) -> Applier {
        let writer_rev = mvcc.current_revision();
        Applier {
            mvcc,
            writer_rev,
            overlay: HashMap::new(),
            rev_unstaged: false,
        }
    }

    pub fn mvcc(&self) -> &Arc<Mvcc> {
        &self.mvcc
    }

    pub fn revision(&self) -> i64 {
        self.writer_rev
    }

    fn fetch(&self, rev: Rev) -> Result<KeyValue> {
        match self.overlay.get(&rev) {
            Some(bytes) => decode_kv(bytes),
            // Apply uses a cached record but never fills the cache: the
            // raft loop does not pay for keeping what readers may want.
            None => match self.mvcc.records.get(rev) {
                Some(kv) => Ok(kv),
                None => self.mvcc.read_record(rev),
            },
        }
    }

    /// Applies one write request at the next revision. `watch_prev` asks for
    /// `prev_kv` in every event (a watcher wants it).
    pub fn apply(
        &mut self,
        req: KvOp<'_>,
        batch: &mut WriteBatch,
        watch_prev: bool,
    ) -> (Result<WriteResult>, Vec<Event>) {
        self.apply_with(req, batch, watch_prev, ApplyTerms::default())
    }

    /// `apply`, on the terms its entry carries (`ApplyTerms`).
    pub fn apply_with(
        &mut self,
        req: KvOp<'_>,
        batch: &mut WriteBatch,
        watch_prev: bool,
        terms: ApplyTerms,
    ) -> (Result<WriteResult>, Vec<Event>) {
        let mut w = txn::Writer {
            applier: self,
            batch,
            main: 0,
            sub: 0,
            events: Vec::new(),
            watch_prev,
            terms,
        };
        w.main = w.applier.writer_rev + 1;
        let result = w.apply(req);
        let (main, sub, events) = (w.main, w.sub, w.events);
        if sub > 0 {
            self.writer_rev = main;
            self.rev_unstaged = true;
        }
        (result, events)
    }

    /// Stages the newest revision into `batch`: call once after the last
    /// `apply` of a batch, before writing it.
    pub fn stage_revision(&mut self, batch: &mut WriteBatch) {
        if self.rev_unstaged {
            batch.put_cf(
                self.mvcc.db.cf(CF_META),
                META_CURRENT_REV,
                (self.writer_rev as u64).to_be_bytes(),
            );
            self.rev_unstaged = false;
        }
    }

    /// After the keyspace was replaced underneath (snapshot install).
    pub fn reset(&mut self) {
        self.overlay.clear();
        self.rev_unstaged = false;
        self.writer_rev = self.mvcc.current_revision();
    }

    /// After the batch holding everything applied so far is durable: make it
    /// visible to readers.
    pub fn publish(&mut self) {
        // A published revision that is not in the durable batch would be
        // lost by a restart while clients have seen it.
        assert!(
            !self.rev_unstaged,
            "revision published before it was staged"
        );
        self.overlay.clear();
        let prev = self
            .mvcc
            .published_rev
            .swap(self.writer_rev, Ordering::AcqRel);
        assert!(prev <= self.writer_rev, "published revision went backwards");
    }
}

#[cfg(test)]
mod compare_tests;
#[cfg(test)]
mod install_tests;
#[cfg(test)]
mod tests;
