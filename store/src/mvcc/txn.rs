//! Put, DeleteRange, Txn and Compact, as etcd defines them, plus the
//! request checks etcd makes before a request enters the log.
//!
//! One executor ([`exec_txn`]) runs transactions for both the writer (inside
//! the raft apply) and read-only txns served from the published state, so
//! compare semantics cannot drift between the two.

use std::cmp::Ordering as CmpOrdering;

use crate::db::WriteBatch;
use prost::Message;

use super::txn_path::{self, Decided};
use super::write_answer::{deletes_of, puts_of, Measure};
use super::{index::Index, range_at, Applier, ApplyTerms, Source};
use crate::answers::Allowance;
use crate::db::{CF_KV, CF_META};
use crate::error::{Result, StoreError};
use crate::lease::{self, Lessor};
use crate::pb::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request as Op,
    response_op::Response as OpResp,
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use crate::pb::internal::{internal_request::Request, LeaseExpiry};
use crate::pb::mvccpb::{event::EventType, Event, KeyValue};
use crate::revision::Rev;

/// The result of applying one write request (headers are filled by the node).
#[derive(Clone, Debug, PartialEq)]
pub enum WriteResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseRenew(LeaseKeepAliveResponse),
    /// A membership change (applied by the node): the members after it.
    Members(Vec<crate::pb::etcdserverpb::Member>),
    /// An alarm change (applied by the node): the alarms after it.
    Alarms(Vec<crate::pb::etcdserverpb::AlarmMember>),
    /// An auth change or token (applied by `auth`), at this raft index: a
    /// token names it, so a member that has not applied it yet waits.
    Auth {
        index: u64,
    },
}

/// A request the keyspace applies: only these reach `Applier::apply`, so
/// no other entry kind can be misrouted here (the node's exhaustive match
/// hands each kind to its one owner).
#[derive(Clone, Copy, Debug)]
pub enum KvOp<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Compaction(&'a CompactionRequest),
    LeaseGrant(&'a LeaseGrantRequest),
    LeaseRevoke(&'a LeaseRevokeRequest),
    /// A renewal, by the entry at this raft index.
    LeaseRenew(&'a LeaseKeepAliveRequest, u64),
    LeaseExpiry(&'a LeaseExpiry),
}

impl KvOp<'_> {
    /// Refused while NOSPACE is raised (etcd's rule: deletes, compaction and
    /// revokes still go through, as they free space).
    pub fn adds_data(&self) -> bool {
        match self {
            KvOp::Put(_) | KvOp::LeaseGrant(_) => true,
            KvOp::Txn(t) => has_put(t),
            KvOp::DeleteRange(_)
            | KvOp::Compaction(_)
            | KvOp::LeaseRevoke(_)
            | KvOp::LeaseRenew(..)
            | KvOp::LeaseExpiry(_) => false,
        }
    }
}

impl<'a> TryFrom<&'a Request> for KvOp<'a> {
    type Error = StoreError;

    fn try_from(r: &'a Request) -> Result<KvOp<'a>> {
        Ok(match r {
            Request::Put(p) => KvOp::Put(p),
            Request::DeleteRange(d) => KvOp::DeleteRange(d),
            Request::Txn(t) => KvOp::Txn(t),
            Request::Compaction(c) => KvOp::Compaction(c),
            Request::LeaseGrant(g) => KvOp::LeaseGrant(g),
            Request::LeaseRevoke(r) => KvOp::LeaseRevoke(r),
            Request::LeaseExpiry(x) => KvOp::LeaseExpiry(x),
            // A renewal is applied with its entry's index, which the
            // request alone does not carry.
            Request::LeaseRenew(_)
            | Request::MemberAttrs(_)
            | Request::MemberUpdate(_)
            | Request::Alarm(_)
            | Request::Auth(_) => {
                return Err(StoreError::InvalidArgument("not a keyspace request".into()))
            }
        })
    }
}

/// What a txn needs from the keyspace it runs against.
trait Exec {
    fn compare(&mut self, c: &Compare) -> Result<bool>;
    fn range(&mut self, r: &RangeRequest) -> Result<RangeResponse>;
    fn put(&mut self, p: &PutRequest) -> Result<PutResponse>;
    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse>;
    /// The revision the txn is at now: its own once it has changed
    /// something, the one it started from before (etcd's `txn.Rev()`).
    fn rev_now(&self) -> i64;
}

/// The header etcd gives each range, put and delete response inside a
/// txn: the revision alone. A client starts a watch from it.
fn sub_header(e: &dyn Exec) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: e.rev_now(),
        ..Default::default()
    })
}

fn exec_txn(e: &mut dyn Exec, req: &TxnRequest, decided: &mut Decided) -> Result<TxnResponse> {
    let succeeded = match decided {
        Decided::First(taken) => *taken.next().ok_or_else(txn_path::path_too_short)?,
        Decided::Now => {
            let mut succeeded = true;
            for c in &req.compare {
                if !e.compare(c)? {
                    succeeded = false;
                    break;
                }
            }
            succeeded
        }
    };
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        // Headers as etcd fills them: the revision after each op, and an
        // empty header on a nested txn.
        let resp = match &op.request {
            Some(Op::RequestRange(r)) => {
                let mut x = e.range(r)?;
                x.header = sub_header(e);
                OpResp::ResponseRange(x)
            }
            Some(Op::RequestPut(p)) => {
                let mut x = e.put(p)?;
                x.header = sub_header(e);
                OpResp::ResponsePut(x)
            }
            Some(Op::RequestDeleteRange(d)) => {
                let mut x = e.delete(d)?;
                x.header = sub_header(e);
                OpResp::ResponseDeleteRange(x)
            }
            Some(Op::RequestTxn(t)) => {
                let mut x = exec_txn(e, t, decided)?;
                x.header = Some(ResponseHeader::default());
                OpResp::ResponseTxn(x)
            }
            None => {
                return Err(StoreError::InvalidArgument(
                    "empty request op in txn".into(),
                ))
            }
        };
        responses.push(ResponseOp {
            response: Some(resp),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}

/// How a compare reads its request: by etcd's rules (entries that say
/// `txn_rules_etcd`, and read-only txns, which no other member applies),
/// or as the releases before them did (any union field counted, an
/// unknown target read as VERSION and an unknown result as EQUAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompareRules {
    Etcd,
    Before,
}

impl CompareRules {
    pub(super) fn of(terms: ApplyTerms) -> CompareRules {
        if terms.txn_rules_etcd {
            CompareRules::Etcd
        } else {
            CompareRules::Before
        }
    }

    /// The compare's target; None: unknown, which compares as equal.
    pub(super) fn target(self, c: &Compare) -> Option<CompareTarget> {
        match self {
            CompareRules::Etcd => CompareTarget::try_from(c.target).ok(),
            CompareRules::Before => {
                Some(CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version))
            }
        }
    }
}

fn compare_with(
    index: &Index,
    c: &Compare,
    at: i64,
    fetch: &dyn Fn(Rev) -> Result<KeyValue>,
    rules: CompareRules,
) -> Result<bool> {
    let target = rules.target(c);
    match compare_on_index(index, c, target, at, rules) {
        Some(decided) => Ok(decided),
        None => compare_by_range(index, c, target, at, fetch, rules),
    }
}

/// Any compare, on the records a Range at `at` returns.
pub(super) fn compare_by_range(
    index: &Index,
    c: &Compare,
    target: Option<CompareTarget>,
    at: i64,
    fetch: &dyn Fn(Rev) -> Result<KeyValue>,
    rules: CompareRules,
) -> Result<bool> {
    let rr = range_at(
        index,
        &RangeRequest {
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            ..Default::default()
        },
        at,
        &Source::records(fetch),
    )?;
    if rr.kvs.is_empty() {
        // A missing key compares as the zero KeyValue, except by value.
        if target == Some(CompareTarget::Value) {
            return Ok(false);
        }
        return Ok(compare_kv(c, target, &KeyValue::default(), rules));
    }
    Ok(rr.kvs.iter().all(|kv| compare_kv(c, target, kv, rules)))
}

/// A compare of a version, create or mod revision decided on the index
/// alone, as `compare_with`'s range would decide it, without reading or
/// copying a record (every secret create and etcd lock compares these).
/// None where the range would refuse (an empty key, a compacted read) or
/// the target needs the record (value, lease): the range decides those.
pub(super) fn compare_on_index(
    index: &Index,
    c: &Compare,
    target: Option<CompareTarget>,
    at: i64,
    rules: CompareRules,
) -> Option<bool> {
    let by_index = matches!(
        target,
        Some(CompareTarget::Version | CompareTarget::Create | CompareTarget::Mod)
    );
    if !by_index || c.key.is_empty() || at < index.compact_rev {
        return None;
    }
    let mut alive = false;
    for (_, ki) in index.range(&c.key, &c.range_end) {
        let Some(f) = ki.get(at) else { continue };
        alive = true;
        let fields = KeyValue {
            create_revision: f.created,
            mod_revision: f.modified.main,
            version: f.version,
            ..Default::default()
        };
        if !compare_kv(c, target, &fields, rules) {
            return Some(false);
        }
    }
    // A missing key compares as the zero KeyValue.
    Some(alive || compare_kv(c, target, &KeyValue::default(), rules))
}

/// etcd's `compareKV` (`CompareRules::Etcd`): the union field the target
/// names, or zero (an empty value) when another one is set; an unknown
/// target compares as equal and an unknown result holds.
fn compare_kv(
    c: &Compare,
    target: Option<CompareTarget>,
    kv: &KeyValue,
    rules: CompareRules,
) -> bool {
    let u = &c.target_union;
    // The integer the target names, read as the rules say.
    let named = match (target, u) {
        (Some(CompareTarget::Version), Some(TargetUnion::Version(v)))
        | (Some(CompareTarget::Create), Some(TargetUnion::CreateRevision(v)))
        | (Some(CompareTarget::Mod), Some(TargetUnion::ModRevision(v)))
        | (Some(CompareTarget::Lease), Some(TargetUnion::Lease(v))) => *v,
        _ => 0,
    };
    let int = match rules {
        CompareRules::Etcd => named,
        CompareRules::Before => int_of(u),
    };
    let ord = match target {
        Some(CompareTarget::Value) => match u {
            Some(TargetUnion::Value(v)) => kv.value.as_slice().cmp(v),
            _ => kv.value.as_slice().cmp(&[][..]),
        },
        Some(CompareTarget::Version) => kv.version.cmp(&int),
        Some(CompareTarget::Create) => kv.create_revision.cmp(&int),
        Some(CompareTarget::Mod) => kv.mod_revision.cmp(&int),
        Some(CompareTarget::Lease) => kv.lease.cmp(&int),
        None => CmpOrdering::Equal,
    };
    let result = match (CompareResult::try_from(c.result), rules) {
        (Ok(r), _) => r,
        (Err(_), CompareRules::Etcd) => return true,
        (Err(_), CompareRules::Before) => CompareResult::Equal,
    };
    match result {
        CompareResult::Equal => ord == CmpOrdering::Equal,
        CompareResult::Greater => ord == CmpOrdering::Greater,
        CompareResult::Less => ord == CmpOrdering::Less,
        CompareResult::NotEqual => ord != CmpOrdering::Equal,
    }
}

/// Any integer union field, as the releases before `CompareRules::Etcd`
/// read one.
fn int_of(u: &Option<TargetUnion>) -> i64 {
    match u {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

/// Read-only txns served from the published state.
struct ReadOnly<'a> {
    index: &'a Index,
    at: i64,
    src: &'a Source<'a>,
}

impl Exec for ReadOnly<'_> {
    fn compare(&mut self, c: &Compare) -> Result<bool> {
        // Not applied by any other member: etcd's rules always.
        compare_with(self.index, c, self.at, self.src.fetch, CompareRules::Etcd)
    }
    fn range(&mut self, r: &RangeRequest) -> Result<RangeResponse> {
        // Inside a txn, etcd refuses a negative revision once anything is
        // compacted, where a plain Range reads the newest.
        txn_path::check_range(self.index, self.at, r)?;
        range_at(self.index, r, self.at, self.src)
    }
    fn put(&mut self, _: &PutRequest) -> Result<PutResponse> {
        Err(StoreError::InvalidArgument("put in a read-only txn".into()))
    }
    fn delete(&mut self, _: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        Err(StoreError::InvalidArgument(
            "delete in a read-only txn".into(),
        ))
    }
    fn rev_now(&self) -> i64 {
        self.at
    }
}

pub(super) fn read_only(
    index: &Index,
    req: &TxnRequest,
    at: i64,
    src: &Source,
) -> Result<TxnResponse> {
    // Nothing is written: deciding each nested txn where it runs, and
    // checking each range as it runs (`ReadOnly::range`), answers what
    // deciding and checking them all first would.
    exec_txn(&mut ReadOnly { index, at, src }, req, &mut Decided::Now)
}

/// Whether a txn only reads (then it is served by ReadIndex, not the log).
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) => true,
            Some(Op::RequestTxn(t)) => is_read_only(t),
            _ => false,
        })
}

/// Whether a txn may add data (a put in any branch): refused while the
/// NOSPACE alarm is raised.
pub fn has_put(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(t)) => has_put(t),
            _ => false,
        })
}

/// Whether every range of a read-only txn asked for a serializable read.
pub fn is_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(t)) => is_serializable(t),
            _ => false,
        })
}

/// The raft-apply side: stages writes for one revision.
pub(super) struct Writer<'a> {
    pub applier: &'a mut Applier,
    pub batch: &'a mut WriteBatch,
    pub main: i64,
    pub sub: i64,
    pub events: Vec<Event>,
    pub watch_prev: bool,
    /// How its entry asks for it to be applied.
    pub terms: ApplyTerms,
}

impl Writer<'_> {
    /// The revision reads inside this request see: this txn's own writes if
    /// it has made any.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.applier.writer_rev
        }
    }

    fn next_rev(&mut self) -> Rev {
        let r = Rev::new(self.main, self.sub);
        self.sub += 1;
        r
    }

    pub fn apply(&mut self, req: KvOp<'_>) -> Result<WriteResult> {
        match req {
            KvOp::Put(p) => {
                self.precheck(std::slice::from_ref(&put_op(p)))?;
                if p.prev_kv {
                    self.measure_answer([], Some((&p.key, &[])))?;
                }
                self.put(p).map(WriteResult::Put)
            }
            KvOp::DeleteRange(d) => {
                if d.prev_kv {
                    self.measure_answer([], Some((&d.key, &d.range_end)))?;
                }
                self.delete(d).map(WriteResult::DeleteRange)
            }
            KvOp::Txn(t) if self.terms.txn_decided_first => {
                let taken = txn_path::decide(t, &mut |c| self.compare(c))?;
                let path = txn_path::requests(t, &taken)?;
                {
                    let index = self.applier.mvcc.index.read();
                    let lessor = self.applier.mvcc.lessor();
                    txn_path::check(&index, &lessor, self.applier.writer_rev, &path)?;
                }
                self.measure_answer(path.iter().copied(), None)?;
                exec_txn(self, t, &mut Decided::First(taken.iter())).map(WriteResult::Txn)
            }
            KvOp::Txn(t) => {
                // Check the branch that will run before writing anything, so
                // a failing txn leaves no partial writes (as etcd does).
                let mut succeeded = true;
                for c in &t.compare {
                    if !self.compare(c)? {
                        succeeded = false;
                        break;
                    }
                }
                let branch = if succeeded { &t.success } else { &t.failure };
                self.precheck(branch)?;
                self.measure_answer(branch, None)?;
                exec_txn(self, t, &mut Decided::Now).map(WriteResult::Txn)
            }
            KvOp::Compaction(c) => self.compact(c).map(WriteResult::Compaction),
            KvOp::LeaseGrant(g) => self.lease_grant(g).map(WriteResult::LeaseGrant),
            KvOp::LeaseRevoke(r) => self.lease_revoke(r.id).map(WriteResult::LeaseRevoke),
            KvOp::LeaseRenew(r, index) => self.lease_renew(r, index).map(WriteResult::LeaseRenew),
            KvOp::LeaseExpiry(x) => {
                if self.applier.mvcc.lessor().renewed_after(x.id, x.decided_at) {
                    return Ok(WriteResult::LeaseRevoke(LeaseRevokeResponse {
                        header: None,
                    }));
                }
                self.lease_revoke(x.id).map(WriteResult::LeaseRevoke)
            }
        }
    }

    /// Measures what the txn branch `ops` (or the `prev_kv` of a delete or
    /// put of `[key, range_end)`) would render against the entry's bound,
    /// before anything is written.
    fn measure_answer<'o>(
        &self,
        ops: impl IntoIterator<Item = &'o RequestOp> + Clone,
        prev: Option<(&[u8], &[u8])>,
    ) -> Result<()> {
        let Some(max) = self.terms.answer_bytes_max else {
            return Ok(());
        };
        // Most writes render nothing (a secret create: puts only): no
        // lock, no allocation for them.
        if prev.is_none() && !super::write_answer::renders(ops.clone()) {
            return Ok(());
        }
        let allowance = Allowance::new(max);
        let index = self.applier.mvcc.index.read();
        let fetch = |rev| self.applier.fetch(rev);
        let lease_of = |k: &[u8]| self.applier.mvcc.lessor().key_lease(k);
        let m = Measure {
            index: &index,
            at: self.read_rev(),
            src: Source {
                fetch: &fetch,
                lease_of: Some(&lease_of),
                charge: Some(&allowance),
            },
            allowance: &allowance,
            puts: puts_of(ops.clone()),
            // Older entries: measured as the releases before did.
            deletes: if self.terms.txn_rules_etcd {
                deletes_of(ops.clone())
            } else {
                Vec::new()
            },
        };
        m.ops(ops)?;
        match prev {
            Some((key, range_end)) => m.records_of(key, range_end),
            None => Ok(()),
        }
    }

    fn precheck(&self, ops: &[RequestOp]) -> Result<()> {
        let index = self.applier.mvcc.index.read();
        let lessor = self.applier.mvcc.lessor();
        precheck_ops(&index, &lessor, ops)
    }
}

/// Checks what etcd checks before applying: keys that `ignore_value` or
/// `ignore_lease` need exist, and leases exist. On an entry not decided
/// first (`txn_path`), both branches of nested txns are checked, since
/// which runs depends on writes made earlier in the txn.
fn precheck_ops(index: &Index, lessor: &Lessor, ops: &[RequestOp]) -> Result<()> {
    {
        for op in ops {
            match &op.request {
                Some(Op::RequestPut(p)) => txn_path::check_put(lessor, p, || {
                    index.get(&p.key).and_then(|ki| ki.live()).is_some()
                })?,
                Some(Op::RequestTxn(t)) => {
                    precheck_ops(index, lessor, &t.success)?;
                    precheck_ops(index, lessor, &t.failure)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Writer<'_> {
    fn fetch(&self, rev: Rev) -> Result<KeyValue> {
        self.applier.fetch(rev)
    }

    /// `key`'s newest record, if the key exists now.
    fn live_record(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let rev = {
            let index = self.applier.mvcc.index.read();
            index
                .get(key)
                .and_then(|ki| ki.live())
                .map(|g| *g.revs.last().expect("live generation has revisions"))
        };
        rev.map(|r| self.fetch(r)).transpose()
    }

    fn stage(&mut self, rev: Rev, tombstone: bool, kv: &KeyValue) {
        let cf = self.applier.mvcc.db.cf(CF_KV);
        let bytes = kv.encode_to_vec();
        self.batch.put_cf(cf, rev.key(tombstone), &bytes);
        if !tombstone {
            self.applier.overlay.insert(rev, bytes);
        }
    }
    fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse> {
        let mut lessor = self.applier.mvcc.lessor();
        if lessor.contains(g.id) {
            return Err(StoreError::LeaseExists);
        }
        let now = self.applier.mvcc.clock.now();
        lessor.grant(g.id, g.ttl, now);
        let meta = self.applier.mvcc.db.cf(CF_META);
        self.batch
            .put_cf(meta, lease::meta_key(g.id), lease::encode_record(g.ttl, 0));
        Ok(LeaseGrantResponse {
            header: None,
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    /// Deletes the lease's keys, all at one revision, then the lease.
    fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse> {
        // The keys go first and the lease after: a keys-only Range reads
        // a key's lease from the lessor when the index has nothing newer
        // for the key (`range_at`), so the lessor must never change ahead
        // of the index.
        let keys = match self.applier.mvcc.lessor().get(id) {
            Some(l) => l.keys.clone(),
            None => return Err(StoreError::LeaseNotFound),
        };
        for key in keys {
            self.delete(&DeleteRangeRequest {
                key,
                range_end: Vec::new(),
                prev_kv: false,
            })?;
        }
        self.applier.mvcc.lessor().revoke(id);
        let meta = self.applier.mvcc.db.cf(CF_META);
        self.batch.delete_cf(meta, lease::meta_key(id));
        Ok(LeaseRevokeResponse { header: None })
    }

    /// Renews the lease, and records the renewal's index with it (so a
    /// revoke the leader decided before it is skipped on every member).
    fn lease_renew(
        &mut self,
        r: &LeaseKeepAliveRequest,
        index: u64,
    ) -> Result<LeaseKeepAliveResponse> {
        let ttl = self
            .applier
            .mvcc
            .lessor()
            .renew(r.id, self.applier.mvcc.clock.now(), index)
            .ok_or(StoreError::LeaseNotFound)?;
        let meta = self.applier.mvcc.db.cf(CF_META);
        self.batch.put_cf(
            meta,
            lease::meta_key(r.id),
            lease::encode_record(ttl, index),
        );
        Ok(LeaseKeepAliveResponse {
            header: None,
            id: r.id,
            ttl,
        })
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse> {
        let mut index = self.applier.mvcc.index.write();
        if c.revision <= index.compact_rev {
            return Err(StoreError::Compacted {
                compact_revision: index.compact_rev,
            });
        }
        if c.revision > self.applier.writer_rev {
            return Err(StoreError::FutureRevision);
        }
        let dropped = index.compact(c.revision);
        drop(index);
        let db = &self.applier.mvcc.db;
        for (rev, tomb) in dropped {
            self.batch.delete_cf(db.cf(CF_KV), rev.key(tomb));
        }
        self.batch.put_cf(
            db.cf(CF_META),
            super::META_COMPACT_REV,
            (c.revision as u64).to_be_bytes(),
        );
        Ok(CompactionResponse { header: None })
    }
}

fn put_op(p: &PutRequest) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(p.clone())),
    }
}

impl Exec for Writer<'_> {
    fn rev_now(&self) -> i64 {
        self.read_rev()
    }

    fn compare(&mut self, c: &Compare) -> Result<bool> {
        let at = self.read_rev();
        let index = self.applier.mvcc.index.read();
        let rules = CompareRules::of(self.terms);
        compare_with(&index, c, at, &|r| self.applier.fetch(r), rules)
    }

    fn range(&mut self, r: &RangeRequest) -> Result<RangeResponse> {
        let at = self.read_rev();
        let index = self.applier.mvcc.index.read();
        // A keys-only range answers from the index and the lessor, as a
        // read does: the writer changes a key's lease after its index
        // entry too, and what it renders is what `write_answer` measured.
        let lease_of = |k: &[u8]| self.applier.mvcc.lessor().key_lease(k);
        let src = Source {
            fetch: &|rev| self.applier.fetch(rev),
            lease_of: Some(&lease_of),
            charge: None,
        };
        range_at(&index, r, at, &src)
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        let need_prev = p.prev_kv || p.ignore_value || p.ignore_lease || self.watch_prev;
        // Read before anything changes, so a failed read refuses the put
        // whole, and with the index unlocked (it may come from disk).
        let prev = if need_prev {
            self.live_record(&p.key)?
        } else {
            None
        };
        // One search of the index for the rest, under one lock: with long
        // keys a search is a few dozen key comparisons, each a likely cache
        // miss, and a new key was searched three times (look, look again,
        // insert). The raft thread alone changes the index, so the key is
        // as `live_record` found it.
        let rev = self.next_rev();
        let mut index = self.applier.mvcc.index.write();
        let ki = index.entry(&p.key);
        let live = ki.live().map(|g| (g.created, g.version));
        let (create_revision, version) = match live {
            Some((created, version)) => (created, version + 1),
            None => (rev.main, 1),
        };
        ki.put(rev);
        drop(index);
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision,
            mod_revision: rev.main,
            version,
            value: match (&prev, p.ignore_value) {
                (Some(prev), true) => prev.value.clone(),
                _ => p.value.clone(),
            },
            lease: match (&prev, p.ignore_lease) {
                (Some(prev), true) => prev.lease,
                _ => p.lease,
            },
        };
        self.stage(rev, false, &kv);
        self.applier.mvcc.lessor().set_key_lease(&p.key, kv.lease);
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: if self.watch_prev { prev.clone() } else { None },
        });
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let live: Vec<(Vec<u8>, Rev)> = {
            let index = self.applier.mvcc.index.read();
            index
                .range(&d.key, &d.range_end)
                .filter_map(|(k, ki)| {
                    ki.live().map(|g| {
                        (
                            k.clone(),
                            *g.revs.last().expect("live generation has revisions"),
                        )
                    })
                })
                .collect()
        };
        let mut prev_kvs = Vec::new();
        let want_prev = d.prev_kv || self.watch_prev;
        for (key, cur) in &live {
            let prev = if want_prev {
                Some(self.fetch(*cur)?)
            } else {
                None
            };
            let rev = self.next_rev();
            let tomb = KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            };
            self.stage(rev, true, &tomb);
            self.applier.mvcc.index.write().tombstone(key, rev);
            self.applier.mvcc.lessor().set_key_lease(key, 0);
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: if self.watch_prev { prev.clone() } else { None },
            });
            if d.prev_kv {
                prev_kvs.extend(prev);
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: live.len() as i64,
            prev_kvs,
        })
    }
}
