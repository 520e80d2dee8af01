//! The bound on a write's answer. A write txn's ranges, and the `prev_kv`
//! of its deletes and puts, are rendered inside apply, on every member at
//! once, and outside any member's answer budget (a refusal that depends on
//! one member's load would make members differ). Unbounded, one txn of 128
//! ranges over a large keyspace allocates 128 copies of it on every
//! member, and the entry stays in the log to do it again at each restart.
//!
//! So a write whose entry carries a bound (`write_answer_bytes_max`) is
//! measured before it changes anything: each range and `prev_kv` it could
//! render is rendered as of the revision the write starts from, against an
//! `Allowance`, and dropped; on top, each range is charged every put of the
//! txn whose key it covers (what the txn's own writes can add to it; a
//! delete only takes away). Past the bound, the write is refused on every
//! member alike, having written nothing. A txn decided first (`txn_path`)
//! is measured on the path it takes; on older entries, nested txns are
//! measured in both branches, since which one runs depends on the txn's
//! own writes, and the larger counts. A delete takes records away, but
//! under a `limit` it lets later ones in: a limited range is measured as
//! if its limit were larger by the live keys in it the txn's deletes
//! cover (a delete of `a..c` then a range of `b..d` limit 1 answered with
//! `c`, measured as `b`: found by the property test below). A keys-only range is measured as it renders, from the
//! index (no values). The measure reads as much as the answer would and
//! holds at most the bound.

use std::borrow::Cow;

use crate::answers::{Allowance, RECORD_OVERHEAD_BYTES};
use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::{request_op::Request as Op, RangeRequest, RequestOp};

use super::{index::Index, key_in_range, range_at, Source};

/// What a write's answer is measured against.
pub(super) struct Measure<'a> {
    pub index: &'a Index,
    /// The revision the write starts from.
    pub at: i64,
    pub src: Source<'a>,
    pub allowance: &'a Allowance,
    /// The txn's puts, anywhere in it: their keys and the bytes each adds
    /// to a range that covers it.
    pub puts: Vec<(&'a [u8], usize)>,
    /// The txn's deletes, anywhere in it: `(key, range_end)`.
    pub deletes: Vec<(&'a [u8], &'a [u8])>,
}

/// Calls `f` with every op of `ops` that is not a txn, nested txns' both
/// branches included.
fn each_op<'o>(ops: impl IntoIterator<Item = &'o RequestOp>, f: &mut dyn FnMut(&'o Op)) {
    for op in ops {
        match &op.request {
            Some(Op::RequestTxn(t)) => {
                each_op(&t.success, f);
                each_op(&t.failure, f);
            }
            Some(other) => f(other),
            None => {}
        }
    }
}

/// Every delete in `ops`, nested txns' both branches included.
pub(super) fn deletes_of<'o>(
    ops: impl IntoIterator<Item = &'o RequestOp>,
) -> Vec<(&'o [u8], &'o [u8])> {
    let mut deletes = Vec::new();
    each_op(ops, &mut |op| {
        if let Op::RequestDeleteRange(d) = op {
            deletes.push((d.key.as_slice(), d.range_end.as_slice()));
        }
    });
    deletes
}

/// Whether any op of `ops` (nested txns' branches included) renders
/// records into the answer.
pub(super) fn renders<'o>(ops: impl IntoIterator<Item = &'o RequestOp>) -> bool {
    ops.into_iter().any(|op| match &op.request {
        Some(Op::RequestRange(r)) => !r.count_only,
        Some(Op::RequestDeleteRange(d)) => d.prev_kv,
        Some(Op::RequestPut(p)) => p.prev_kv,
        Some(Op::RequestTxn(t)) => renders(&t.success) || renders(&t.failure),
        None => false,
    })
}

/// Every put in `ops`, nested txns' both branches included, as `Measure`
/// counts them. A put that keeps its value (`ignore_value`) replaces a
/// record the range already held with one as large but for the key.
pub(super) fn puts_of<'o>(ops: impl IntoIterator<Item = &'o RequestOp>) -> Vec<(&'o [u8], usize)> {
    let mut puts = Vec::new();
    each_op(ops, &mut |op| {
        if let Op::RequestPut(p) = op {
            let value = if p.ignore_value { 0 } else { p.value.len() };
            puts.push((
                p.key.as_slice(),
                p.key.len() + value + RECORD_OVERHEAD_BYTES,
            ));
        }
    });
    puts
}

impl Measure<'_> {
    /// Measures what `ops` could render, in every branch.
    pub fn ops<'o>(&self, ops: impl IntoIterator<Item = &'o RequestOp>) -> Result<()> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) if !r.count_only => self.range(r)?,
                Some(Op::RequestDeleteRange(d)) if d.prev_kv => {
                    self.records_of(&d.key, &d.range_end)?
                }
                Some(Op::RequestPut(p)) if p.prev_kv => self.records_of(&p.key, &[])?,
                Some(Op::RequestTxn(t)) => {
                    // One branch runs: the larger counts.
                    let before = self.allowance.used();
                    self.ops(&t.success)?;
                    let success = self.allowance.used();
                    self.allowance.set_used(before);
                    self.ops(&t.failure)?;
                    let failure = self.allowance.used();
                    self.allowance.set_used(success.max(failure));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The live records of `[key, range_end)`: what a delete or a put
    /// returns as `prev_kv`.
    pub fn records_of(&self, key: &[u8], range_end: &[u8]) -> Result<()> {
        self.range(&RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })
    }

    /// Live keys of `[key, range_end)` at the start that a delete of the
    /// txn covers (a key two deletes cover counts twice: more, never
    /// less). Walks only what each delete and the range share, as much of
    /// the index as the delete itself will.
    fn deleted_in(&self, key: &[u8], range_end: &[u8]) -> i64 {
        let live = |k: &[u8]| {
            self.index
                .get(k)
                .is_some_and(|ki| ki.get(self.at).is_some())
        };
        let mut covered = 0usize;
        for (dk, de) in &self.deletes {
            covered += match (range_end.is_empty(), de.is_empty()) {
                // A single key on either side: it, if the other covers it.
                (true, _) => usize::from(key_in_range(key, dk, de) && live(key)),
                (_, true) => usize::from(key_in_range(dk, key, range_end) && live(dk)),
                (false, false) => {
                    let lo = key.max(dk);
                    // "\0" is "to the end"; the nearer end bounds both.
                    let hi = match (range_end == [0], *de == [0]) {
                        (true, true) => &[0][..],
                        (true, false) => de,
                        (false, true) => range_end,
                        (false, false) => range_end.min(de),
                    };
                    if hi != [0] && hi <= lo {
                        0
                    } else {
                        self.index
                            .range(lo, hi)
                            .filter(|(_, ki)| ki.get(self.at).is_some())
                            .count()
                    }
                }
            };
        }
        i64::try_from(covered).unwrap_or(i64::MAX)
    }

    fn range(&self, r: &RangeRequest) -> Result<()> {
        // A range at a revision past the start reads the txn's own
        // revision: the start, plus what the puts add below.
        let historical = r.revision > 0 && r.revision <= self.at;
        let mut r = if r.revision > self.at {
            Cow::Owned(RangeRequest {
                revision: 0,
                ..r.clone()
            })
        } else {
            Cow::Borrowed(r)
        };
        if r.limit > 0 && !historical && !self.deletes.is_empty() {
            let deleted = self.deleted_in(&r.key, &r.range_end);
            if deleted > 0 {
                let limit = r.limit.saturating_add(deleted);
                r.to_mut().limit = limit;
            }
        }
        match range_at(self.index, &r, self.at, &self.src) {
            // Measured, and dropped.
            Ok(_) => {}
            Err(e @ (StoreError::AnswersOverBudget(_) | StoreError::Storage(_))) => return Err(e),
            // The range itself fails (compacted, an empty key): it fails
            // the same way when the txn runs, having rendered nothing.
            Err(_) => {}
        }
        if historical {
            return Ok(());
        }
        use crate::answers::Meter as _;
        for (key, bytes) in &self.puts {
            if key_in_range(key, &r.key, &r.range_end) {
                self.allowance.add(*bytes)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Applier, ApplyTerms, KvOp, Mvcc, WriteResult};
    use crate::db::{Db, WriteBatch};
    use crate::error::{Result, StoreError};
    use crate::pb::etcdserverpb::{
        compare::{CompareResult, CompareTarget, TargetUnion},
        request_op::Request as Op,
        response_op::Response as OpResp,
        Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
    };
    use crate::pb::mvccpb::KeyValue;

    const OVERHEAD: usize = crate::answers::RECORD_OVERHEAD_BYTES;

    struct Store {
        _dir: tempfile::TempDir,
        applier: Applier,
        /// Txns are applied decided first (`txn_path`), as entries say
        /// once every member does.
        decided_first: bool,
    }

    impl Store {
        fn new() -> Store {
            Store::deciding_first(false)
        }

        fn deciding_first(decided_first: bool) -> Store {
            let dir = tempfile::tempdir().unwrap();
            let applier = Applier::new(Mvcc::open(Db::open(dir.path()).unwrap()).unwrap());
            Store {
                _dir: dir,
                applier,
                decided_first,
            }
        }

        fn apply(&mut self, op: KvOp<'_>, bound: Option<usize>) -> Result<WriteResult> {
            let mut batch = WriteBatch::default();
            let terms = ApplyTerms {
                answer_bytes_max: bound,
                txn_decided_first: self.decided_first,
                txn_rules_etcd: true,
            };
            let (res, _) = self.applier.apply_with(op, &mut batch, false, terms);
            self.applier.stage_revision(&mut batch);
            self.applier.mvcc.db.write_sync(batch).unwrap();
            self.applier.publish();
            res
        }

        fn put(&mut self, key: &[u8], value_bytes: usize) {
            self.apply(KvOp::Put(&put(key, value_bytes)), None).unwrap();
        }

        fn everything(&self) -> Vec<KeyValue> {
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            };
            self.applier.mvcc.range(&all).unwrap().0.kvs
        }
    }

    fn put(key: &[u8], value_bytes: usize) -> PutRequest {
        PutRequest {
            key: key.to_vec(),
            value: vec![b'v'; value_bytes],
            ..Default::default()
        }
    }

    fn range_op(key: &[u8], range_end: &[u8]) -> RequestOp {
        ranging(RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        })
    }

    fn ranging(r: RangeRequest) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestRange(r)),
        }
    }

    fn put_op(key: &[u8], value_bytes: usize) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(put(key, value_bytes))),
        }
    }

    fn version_above(key: &[u8], version: i64) -> Compare {
        Compare {
            key: key.to_vec(),
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            target_union: Some(TargetUnion::Version(version)),
            ..Default::default()
        }
    }

    fn refused(res: Result<WriteResult>) -> String {
        match res {
            Err(StoreError::AnswersOverBudget(why)) => why,
            other => panic!("not refused for its answer: {other:?}"),
        }
    }

    #[test]
    fn a_txn_whose_ranges_pass_the_bound_writes_nothing() {
        let mut s = Store::new();
        for k in 0..8u8 {
            s.put(&[b'k', k], 1024);
        }
        let before = (s.applier.revision(), s.everything());
        // Nine ranges over 8 KiB, and a put: 74 KiB of answer.
        let mut ops: Vec<RequestOp> = (0..9).map(|_| range_op(b"k", b"l")).collect();
        ops.push(put_op(b"new", 10));
        let txn = TxnRequest {
            success: ops,
            ..Default::default()
        };
        let why = refused(s.apply(KvOp::Txn(&txn), Some(64 << 10)));
        assert!(why.contains("--max-write-answer-bytes"), "{why}");
        assert_eq!((s.applier.revision(), s.everything()), before);
        // Within the bound it runs, and answers every range whole.
        let Ok(WriteResult::Txn(resp)) = s.apply(KvOp::Txn(&txn), Some(128 << 10)) else {
            panic!("refused within the bound");
        };
        assert_eq!(rendered(&resp), 9 * 8 * (2 + 1024 + OVERHEAD));
        assert_eq!(s.applier.revision(), before.0 + 1);
    }

    #[test]
    fn a_txns_own_puts_count_towards_the_ranges_that_cover_them() {
        let mut s = Store::new();
        // Nothing there yet: the range meets only the put before it.
        let txn = TxnRequest {
            success: vec![put_op(b"a", 64 << 10), range_op(b"a", b"")],
            ..Default::default()
        };
        refused(s.apply(KvOp::Txn(&txn), Some(32 << 10)));
        assert!(s.everything().is_empty());
        let Ok(WriteResult::Txn(resp)) = s.apply(KvOp::Txn(&txn), Some(65 << 10)) else {
            panic!("refused within the bound");
        };
        assert_eq!(rendered(&resp), 1 + (64 << 10) + OVERHEAD);
        // A range of another key, or of a revision before the txn, is not
        // charged the put.
        let at = s.applier.revision();
        let other = TxnRequest {
            success: vec![
                put_op(b"b", 64 << 10),
                range_op(b"c", b""),
                ranging(RangeRequest {
                    key: b"b".to_vec(),
                    revision: at,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        s.apply(KvOp::Txn(&other), Some(1 << 10)).unwrap();
    }

    #[test]
    fn a_delete_returning_its_records_passes_the_bound_and_deletes_nothing() {
        let mut s = Store::new();
        for k in 0..8u8 {
            s.put(&[b'p', k], 4096);
        }
        let before = s.everything();
        let mut del = DeleteRangeRequest {
            key: b"p".to_vec(),
            range_end: b"q".to_vec(),
            prev_kv: true,
        };
        refused(s.apply(KvOp::DeleteRange(&del), Some(16 << 10)));
        assert_eq!(s.everything(), before);
        // Without prev_kv it renders nothing, and runs.
        del.prev_kv = false;
        s.apply(KvOp::DeleteRange(&del), Some(16 << 10)).unwrap();
        assert!(s.everything().is_empty());
    }

    #[test]
    fn nested_txns_are_measured_in_both_branches() {
        let mut s = Store::new();
        s.put(b"x", 8192);
        // Whichever branch of the inner txn runs, it is measured: here the
        // failure branch, which never runs, reads 8 KiB.
        let inner = TxnRequest {
            compare: vec![version_above(b"x", 0)],
            success: vec![put_op(b"y", 1)],
            failure: vec![range_op(b"x", b"")],
        };
        let outer = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestTxn(inner)),
            }],
            ..Default::default()
        };
        refused(s.apply(KvOp::Txn(&outer), Some(4096)));
        s.apply(KvOp::Txn(&outer), Some(16 << 10)).unwrap();
        // Only one branch runs: 8 KiB in each is 8 KiB, not 16.
        s.put(b"z", 8192);
        let (RequestOp {
            request: Some(Op::RequestTxn(mut inner)),
        },) = (outer.success[0].clone(),)
        else {
            unreachable!()
        };
        inner.success = vec![range_op(b"z", b"")];
        let both = TxnRequest {
            success: vec![
                put_op(b"w", 1),
                RequestOp {
                    request: Some(Op::RequestTxn(inner)),
                },
            ],
            ..Default::default()
        };
        s.apply(KvOp::Txn(&both), Some(12 << 10)).unwrap();
    }

    /// A delete lets a limited range reach past what it removed: `b..d`
    /// limit 1 answers `b` before the delete of `a..c` and the 8 KiB `c`
    /// after it (found by the property test below; on entries without
    /// `txn_rules_etcd`, measured as before).
    #[test]
    fn a_limited_range_after_a_delete_is_measured_past_what_it_deleted() {
        let mut s = Store::deciding_first(true);
        s.put(b"b", 0);
        s.put(b"c", 8192);
        let txn = TxnRequest {
            success: vec![
                RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: b"a".to_vec(),
                        range_end: b"c".to_vec(),
                        ..Default::default()
                    })),
                },
                ranging(RangeRequest {
                    key: b"b".to_vec(),
                    range_end: b"d".to_vec(),
                    limit: 1,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        refused(s.apply(KvOp::Txn(&txn), Some(4096)));
        assert_eq!(s.everything().len(), 2, "refused, it deleted nothing");
        s.apply(KvOp::Txn(&txn), Some(16 << 10)).unwrap();
        assert_eq!(s.everything().len(), 1);
    }

    #[test]
    fn a_txn_decided_first_is_measured_on_its_path_only() {
        let mut s = Store::deciding_first(true);
        s.put(b"x", 8192);
        // The inner failure branch reads 8 KiB but does not run, and a txn
        // decided first knows it.
        let inner = TxnRequest {
            compare: vec![version_above(b"x", 0)],
            success: vec![put_op(b"y", 1), range_op(b"y", b"")],
            failure: vec![range_op(b"x", b"")],
        };
        let outer = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestTxn(inner.clone())),
            }],
            ..Default::default()
        };
        s.apply(KvOp::Txn(&outer), Some(1024)).unwrap();
        // The same txn whose inner compare fails (x deleted first, by
        // another write) is measured on the failure branch.
        s.apply(
            KvOp::DeleteRange(&DeleteRangeRequest {
                key: b"x".to_vec(),
                ..Default::default()
            }),
            None,
        )
        .unwrap();
        s.put(b"x", 8192);
        let mut reads_x = inner;
        reads_x.compare = vec![version_above(b"x", 1)];
        let outer = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestTxn(reads_x)),
            }],
            ..Default::default()
        };
        refused(s.apply(KvOp::Txn(&outer), Some(4096)));
        s.apply(KvOp::Txn(&outer), Some(16 << 10)).unwrap();
    }

    #[test]
    fn a_keys_only_range_is_measured_without_values() {
        let mut s = Store::new();
        s.put(b"big", 64 << 10);
        let keys_only = TxnRequest {
            success: vec![
                put_op(b"w", 1),
                ranging(RangeRequest {
                    key: b"big".to_vec(),
                    keys_only: true,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        };
        s.apply(KvOp::Txn(&keys_only), Some(1 << 10)).unwrap();
        // A put's prev_kv, alone, is measured as well.
        let mut p = put(b"big", 1);
        p.prev_kv = true;
        refused(s.apply(KvOp::Put(&p), Some(1 << 10)));
        p.prev_kv = false;
        s.apply(KvOp::Put(&p), Some(1 << 10)).unwrap();
    }

    /// The bytes an answer's records hold, as the budget counts them.
    fn rendered(resp: &TxnResponse) -> usize {
        let kv = |kv: &KeyValue| kv.key.len() + kv.value.len() + OVERHEAD;
        resp.responses
            .iter()
            .map(|r| match &r.response {
                Some(OpResp::ResponseRange(x)) => x.kvs.iter().map(kv).sum(),
                Some(OpResp::ResponsePut(x)) => x.prev_kv.iter().map(kv).sum(),
                Some(OpResp::ResponseDeleteRange(x)) => x.prev_kvs.iter().map(kv).sum(),
                Some(OpResp::ResponseTxn(x)) => rendered(x),
                None => 0,
            })
            .sum()
    }

    fn key(k: u8) -> Vec<u8> {
        vec![b'a' + k % 5]
    }

    /// A range's end: the single key (0), one or two keys on (1, 2), or
    /// every key from it ("\0", 3).
    fn end_of(k: u8, width: u8) -> Vec<u8> {
        match width {
            0 => Vec::new(),
            3 => vec![0],
            w => key(k % 5 + w),
        }
    }

    fn arb_op(depth: u32) -> BoxedStrategy<RequestOp> {
        let range = (any::<u8>(), 0u8..4, any::<bool>(), 0i64..3, 0u8..4).prop_map(
            |(k, width, keys_only, limit, future)| RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: key(k),
                    range_end: end_of(k, width),
                    keys_only,
                    limit,
                    // Now and then the txn's own revision, which it reads
                    // once it wrote (`own_revision`).
                    revision: if future == 0 { OWN_REVISION } else { 0 },
                    ..Default::default()
                })),
            },
        );
        let put =
            (any::<u8>(), 0usize..3000, any::<bool>()).prop_map(|(k, bytes, prev_kv)| RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    prev_kv,
                    ..put(&key(k), bytes)
                })),
            });
        let del = (any::<u8>(), 0u8..4, any::<bool>()).prop_map(|(k, width, prev_kv)| RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: key(k),
                range_end: end_of(k, width),
                prev_kv,
            })),
        });
        let leaf = prop_oneof![3 => range, 2 => put, 1 => del].boxed();
        if depth == 0 {
            return leaf;
        }
        let nested = (
            any::<u8>(),
            proptest::collection::vec(arb_op(depth - 1), 0..4),
            proptest::collection::vec(arb_op(depth - 1), 0..4),
        )
            .prop_map(|(k, success, failure)| RequestOp {
                request: Some(Op::RequestTxn(TxnRequest {
                    compare: vec![Compare {
                        key: key(k),
                        result: CompareResult::Greater as i32,
                        target: CompareTarget::Version as i32,
                        target_union: Some(TargetUnion::Version(0)),
                        ..Default::default()
                    }],
                    success,
                    failure,
                })),
            });
        prop_oneof![4 => leaf, 1 => nested].boxed()
    }

    /// Ranges marked as reading the txn's own revision read `rev`.
    fn own_revision(t: &mut TxnRequest, rev: i64) {
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match &mut op.request {
                Some(Op::RequestRange(r)) if r.revision == OWN_REVISION => r.revision = rev,
                Some(Op::RequestTxn(t)) => own_revision(t, rev),
                _ => {}
            }
        }
    }

    const OWN_REVISION: i64 = -7;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever a txn does, bounded it either answers what it would
        /// have answered unbounded, within the bound, or writes nothing.
        #[test]
        fn a_bounded_txn_answers_within_the_bound_or_writes_nothing(
            seed in proptest::collection::vec((any::<u8>(), 0usize..3000), 0..8),
            ops in proptest::collection::vec(arb_op(2), 1..8),
            bound_pct in 30usize..130,
            decided_first in any::<bool>(),
        ) {
            let (mut bounded, mut free) =
                (Store::deciding_first(decided_first), Store::deciding_first(decided_first));
            for (k, bytes) in &seed {
                bounded.put(&key(*k), *bytes);
                free.put(&key(*k), *bytes);
            }
            let mut txn = TxnRequest { success: ops, ..Default::default() };
            let before = (bounded.applier.revision(), bounded.everything());
            own_revision(&mut txn, before.0 + 1);
            let unbounded = free.apply(KvOp::Txn(&txn), None);
            // Around what it renders unbounded, where a bound that missed
            // something would show.
            let bound = match &unbounded {
                Ok(WriteResult::Txn(resp)) => rendered(resp) * bound_pct / 100,
                _ => 1 << 20,
            };
            match bounded.apply(KvOp::Txn(&txn), Some(bound)) {
                Ok(WriteResult::Txn(resp)) => {
                    prop_assert!(rendered(&resp) <= bound, "{} > {bound}", rendered(&resp));
                    prop_assert_eq!(Ok(WriteResult::Txn(resp)), unbounded);
                    prop_assert_eq!(bounded.everything(), free.everything());
                }
                Err(StoreError::AnswersOverBudget(_)) => {
                    prop_assert_eq!((bounded.applier.revision(), bounded.everything()), before);
                }
                other => prop_assert_eq!(other, unbounded),
            }
        }
    }
}
