//! The keyspace against a plain in-memory model under random operations:
//! every revision's full state is kept by the model, so ranges at any
//! uncompacted revision, compaction and restart can all be checked.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest};
use crate::pb::internal::internal_request::Request;

#[derive(Clone, Debug)]
pub(super) enum Op {
    Put(u8, u8),
    Delete(u8, Option<u8>),
    Compact(u8),
    Reopen,
}

pub(super) fn key(k: u8) -> Vec<u8> {
    vec![b'a' + (k % 6)]
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

type State = BTreeMap<Vec<u8>, KeyValue>;

pub(super) struct Harness {
    pub(super) dir: tempfile::TempDir,
    pub(super) applier: Applier,
    /// The terms every request is applied on, as its entry would carry.
    pub(super) terms: ApplyTerms,
}

impl Harness {
    pub(super) fn open(dir: tempfile::TempDir) -> Harness {
        let db = Db::open(dir.path()).unwrap();
        let applier = Applier::new(Mvcc::open(db).unwrap());
        Harness {
            dir,
            applier,
            terms: ApplyTerms::default(),
        }
    }

    pub(super) fn apply(&mut self, req: Request) -> Result<WriteResult> {
        let mut batch = WriteBatch::default();
        let op = KvOp::try_from(&req).expect("a keyspace request");
        let (res, _) = self.applier.apply_with(op, &mut batch, false, self.terms);
        self.applier.stage_revision(&mut batch);
        self.applier.mvcc.db.write_sync(batch).unwrap();
        self.applier.publish();
        res
    }
}

fn all_at(m: &Mvcc, rev: i64) -> Result<Vec<KeyValue>> {
    let req = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    };
    m.range(&req).map(|(r, _)| r.kvs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn keyspace_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::open(tempfile::tempdir().unwrap());
        // states[r] is the model state at revision r (revision 1 = empty).
        let mut states: Vec<State> = vec![State::new(), State::new()];
        let mut compacted = 0i64;
        for op in ops {
            let cur = (states.len() - 1) as i64;
            match op {
                Op::Put(k, v) => {
                    let mut s = states[cur as usize].clone();
                    let rev = cur + 1;
                    let (create, version) = s.get(&key(k)).map(|kv| (kv.create_revision, kv.version + 1)).unwrap_or((rev, 1));
                    s.insert(key(k), KeyValue { key: key(k), value: vec![v], create_revision: create, mod_revision: rev, version, lease: 0 });
                    let res = h.apply(Request::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() }));
                    prop_assert!(res.is_ok());
                    states.push(s);
                }
                Op::Delete(k, end) => {
                    let (start, range_end) = match end { Some(e) => (key(k.min(e)), key(k.max(e))), None => (key(k), vec![]) };
                    let mut s = states[cur as usize].clone();
                    let doomed: Vec<_> = s.keys().filter(|x| key_in_range(x, &start, &range_end)).cloned().collect();
                    for d in &doomed { s.remove(d); }
                    let res = h.apply(Request::DeleteRange(DeleteRangeRequest { key: start, range_end, prev_kv: false }));
                    match res { Ok(WriteResult::DeleteRange(r)) => prop_assert_eq!(r.deleted as usize, doomed.len()), other => prop_assert!(false, "{:?}", other) }
                    if !doomed.is_empty() { states.push(s); }
                }
                Op::Compact(r) => {
                    let rev = 1 + (r as i64 % cur.max(1));
                    let res = h.apply(Request::Compaction(CompactionRequest { revision: rev, physical: false }));
                    if rev <= compacted { let is_compacted = matches!(res, Err(StoreError::Compacted { .. })); prop_assert!(is_compacted); }
                    else { prop_assert!(res.is_ok(), "{:?}", res); compacted = rev; }
                }
                Op::Reopen => {
                    let Harness { dir, applier, .. } = h;
                    drop(applier);
                    h = Harness::open(dir);
                }
            }
            let m = h.applier.mvcc.clone();
            let cur = (states.len() - 1) as i64;
            prop_assert_eq!(m.current_revision(), cur);
            for rev in 1..=cur {
                let got = all_at(&m, rev);
                if rev < compacted {
                    let is_compacted = matches!(got, Err(StoreError::Compacted { .. })); prop_assert!(is_compacted, "rev {} < compacted {}", rev, compacted);
                } else {
                    let want: Vec<_> = states[rev as usize].values().cloned().collect();
                    prop_assert_eq!(got.unwrap(), want, "at revision {}", rev);
                }
            }
            let future = matches!(all_at(&m, cur + 1), Err(StoreError::FutureRevision)); prop_assert!(future);
            // The kept hash, extended from the last round's, is the one a
            // whole pass computes (at an older revision too).
            let older = (compacted.max(1) + cur) / 2;
            let kept = (m.hash_kv(older).unwrap(), m.hash_kv(cur).unwrap());
            m.forget_hash();
            let fresh_older = m.hash_kv(older).unwrap();
            m.forget_hash();
            prop_assert_eq!(kept, (fresh_older, m.hash_kv(cur).unwrap()));
        }
    }
}

/// A limited range keeps only what it returns but counts the whole range
/// (etcd's `count`), deleted keys left out, at any revision.
#[test]
fn a_limited_range_counts_what_it_does_not_return() {
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    for k in 0..6u8 {
        let put = PutRequest {
            key: key(k),
            value: vec![k],
            ..Default::default()
        };
        h.apply(Request::Put(put)).unwrap();
    }
    let del = DeleteRangeRequest {
        key: key(2),
        range_end: vec![],
        prev_kv: false,
    };
    h.apply(Request::DeleteRange(del)).unwrap();
    let m = h.applier.mvcc.clone();
    let ask = |limit, revision, count_only| RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        limit,
        revision,
        count_only,
        ..Default::default()
    };
    let (r, _) = m.range(&ask(2, 0, false)).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 5, true));
    let (r, _) = m.range(&ask(5, 0, false)).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (5, 5, false));
    let (r, _) = m.range(&ask(2, 7, false)).unwrap(); // before the delete
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 6, true));
    let (r, _) = m.range(&ask(2, 0, true)).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 5));
}

#[test]
fn history_groups_events_by_revision_and_resumes() {
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    for i in 0..5u8 {
        h.apply(Request::Put(PutRequest {
            key: vec![b'k', i],
            value: vec![i],
            ..Default::default()
        }))
        .unwrap();
    }
    h.apply(Request::DeleteRange(DeleteRangeRequest {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        prev_kv: false,
    }))
    .unwrap();
    let m = h.applier.mvcc.clone();
    let (evs, next) = m.history(b"k", b"l", 2, 2, true).unwrap();
    assert_eq!(
        evs.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(next, 4);
    let (evs, next) = m.history(b"k", b"l", next, 100, true).unwrap();
    assert_eq!(
        evs.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    // All five deletes share revision 7 and come in one group, each with prev.
    assert_eq!(evs[3].events.len(), 5);
    assert!(evs[3].events.iter().all(|e| e.prev_kv.is_some()));
    assert_eq!(next, 8);
}

/// `--max-txn-ops` bounds what one request runs, nesting included: each
/// list within the limit (etcd's per-level check) is not enough.
#[test]
fn nested_txns_count_every_op_they_run() {
    use crate::pb::etcdserverpb::{request_op, RequestOp, TxnRequest};
    let put = |i: usize| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    };
    let flat = |n: usize, base: usize| TxnRequest {
        success: (base..base + n).map(put).collect(),
        ..Default::default()
    };
    assert!(super::txn_checks::validate_txn(&flat(8, 0), 8).is_ok());
    // Two nested txns of 4 puts each: 2 + 8 ops run, over a limit of 8.
    let nested = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestTxn(flat(4, 0))),
            },
            RequestOp {
                request: Some(request_op::Request::RequestTxn(flat(4, 4))),
            },
        ],
        ..Default::default()
    };
    assert!(matches!(
        super::txn_checks::validate_txn(&nested, 8),
        Err(StoreError::TooManyOps)
    ));
    assert!(super::txn_checks::validate_txn(&nested, 10).is_ok());
    // Only one branch runs: 8 in success and 8 in failure fit a limit of 8.
    let both = TxnRequest {
        success: (0..8).map(put).collect(),
        failure: (8..16).map(put).collect(),
        ..Default::default()
    };
    assert!(super::txn_checks::validate_txn(&both, 8).is_ok());
}

/// Inside a txn, every range, put and delete response carries etcd's
/// header (the revision after the op), and a nested txn an empty one:
/// clients start watches from `responses[i].response_put.header.revision`.
#[test]
fn txn_sub_responses_carry_etcds_headers() {
    use crate::pb::etcdserverpb::{request_op, response_op, RequestOp, TxnRequest};
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    h.apply(Request::Put(PutRequest {
        key: b"k1".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    }))
    .unwrap();
    let op = |r| RequestOp { request: Some(r) };
    let range = |k: &[u8]| {
        op(request_op::Request::RequestRange(RangeRequest {
            key: k.to_vec(),
            ..Default::default()
        }))
    };
    let put = |k: &[u8]| {
        op(request_op::Request::RequestPut(PutRequest {
            key: k.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
    };
    let del = |k: &[u8]| {
        op(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: k.to_vec(),
                ..Default::default()
            },
        ))
    };
    // Before any change the txn is at revision 2 (the put above); after
    // its put, at 3.
    let txn = TxnRequest {
        success: vec![
            range(b"k1"),
            del(b"nope"),
            put(b"k1"),
            op(request_op::Request::RequestTxn(TxnRequest {
                success: vec![range(b"k1")],
                ..Default::default()
            })),
        ],
        ..Default::default()
    };
    let resp = match h.apply(Request::Txn(txn)).unwrap() {
        WriteResult::Txn(t) => t,
        other => panic!("{other:?}"),
    };
    let rev = |r: &response_op::Response| match r {
        response_op::Response::ResponseRange(x) => x.header.as_ref().map(|h| h.revision),
        response_op::Response::ResponsePut(x) => x.header.as_ref().map(|h| h.revision),
        response_op::Response::ResponseDeleteRange(x) => x.header.as_ref().map(|h| h.revision),
        response_op::Response::ResponseTxn(x) => x.header.as_ref().map(|h| h.revision),
    };
    let got: Vec<Option<i64>> = resp
        .responses
        .iter()
        .map(|r| rev(r.response.as_ref().unwrap()))
        .collect();
    assert_eq!(got, vec![Some(2), Some(2), Some(3), Some(0)]);
    let response_op::Response::ResponseTxn(inner) = resp.responses[3].response.as_ref().unwrap()
    else {
        panic!()
    };
    assert_eq!(rev(inner.responses[0].response.as_ref().unwrap()), Some(3));
}

/// Seed 7707871: the leader decided lease 2 expired at index 81 (its last
/// renewal had not committed, the cluster being cut apart) and proposed a
/// revoke; a renewal proposed before, and acknowledged, landed at 83, then
/// the revoke at 84 took the lease. A revoke decided before the lease's
/// last renewal is skipped on every member; one decided after it is not.
/// The renewal's index survives a reopen (it is in the lease record).
#[test]
fn an_expiry_decided_before_a_renewal_is_skipped() {
    use crate::pb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};
    use crate::pb::internal::LeaseExpiry;
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    h.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 2 }))
        .unwrap();
    let mut batch = WriteBatch::default();
    let renew = LeaseKeepAliveRequest { id: 2 };
    let (res, _) = h
        .applier
        .apply(KvOp::LeaseRenew(&renew, 83), &mut batch, false);
    res.unwrap();
    h.applier.stage_revision(&mut batch);
    h.applier.mvcc.db.write_sync(batch).unwrap();
    h.applier.publish();
    let expire = |decided_at| Request::LeaseExpiry(LeaseExpiry { id: 2, decided_at });
    h.apply(expire(81)).unwrap();
    assert!(h.applier.mvcc.lessor().contains(2), "renewed after 81");
    // Reopened, the renewal index comes back from the record.
    let dir = h.dir;
    drop(h.applier);
    let mut h = Harness::open(dir);
    h.apply(expire(82)).unwrap();
    assert!(h.applier.mvcc.lessor().contains(2), "renewed after 82");
    h.apply(expire(83)).unwrap();
    assert!(!h.applier.mvcc.lessor().contains(2), "not renewed after 83");
}

#[derive(Clone, Debug)]
enum LeaseOp {
    Put(u8, Option<u8>),
    Delete(u8),
    Grant(u8),
    Revoke(u8),
    Compact,
    Reopen,
}

fn lease_op() -> impl Strategy<Value = LeaseOp> {
    prop_oneof![
        5 => (any::<u8>(), proptest::option::of(0..3u8)).prop_map(|(k, l)| LeaseOp::Put(k, l)),
        1 => any::<u8>().prop_map(LeaseOp::Delete),
        2 => (0..3u8).prop_map(LeaseOp::Grant),
        2 => (0..3u8).prop_map(LeaseOp::Revoke),
        1 => Just(LeaseOp::Compact),
        1 => Just(LeaseOp::Reopen),
    ]
}

/// A Range as keys-only, and as a whole Range with the values dropped.
fn both_ways(m: &Mvcc, rev: i64, sort: Option<SortTarget>) -> (Vec<KeyValue>, Vec<KeyValue>) {
    let ask = |keys_only| RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        keys_only,
        sort_order: sort.map_or(0, |_| SortOrder::Descend as i32),
        sort_target: sort.map_or(0, |t| t as i32),
        ..Default::default()
    };
    let keys = m.range(&ask(true)).unwrap().0.kvs;
    let mut whole = m.range(&ask(false)).unwrap().0.kvs;
    whole.iter_mut().for_each(|kv| kv.value.clear());
    (keys, whole)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A keys-only Range answers a key's newest record from the index and
    /// the lessor: under puts with and without leases, deletes, revokes,
    /// compactions and reopens, it returns at every revision what reading
    /// the records returns (the lease most of all).
    #[test]
    fn a_keys_only_range_is_the_records_without_values(ops in proptest::collection::vec(lease_op(), 1..50)) {
        use crate::pb::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest};
        let mut h = Harness::open(tempfile::tempdir().unwrap());
        for op in ops {
            // Refusals (a lease that does not exist or already does, a
            // compaction at the current revision) change nothing.
            let _ = match op {
                LeaseOp::Put(k, l) => h.apply(Request::Put(PutRequest {
                    key: key(k),
                    value: vec![k; 3],
                    lease: l.map_or(0, |l| 1 + l as i64),
                    ..Default::default()
                })),
                LeaseOp::Delete(k) => h.apply(Request::DeleteRange(DeleteRangeRequest { key: key(k), range_end: vec![], prev_kv: false })),
                LeaseOp::Grant(l) => h.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 1 + l as i64 })),
                LeaseOp::Revoke(l) => h.apply(Request::LeaseRevoke(LeaseRevokeRequest { id: 1 + l as i64 })),
                LeaseOp::Compact => {
                    let revision = h.applier.mvcc.current_revision() - 1;
                    h.apply(Request::Compaction(CompactionRequest { revision, physical: false }))
                }
                LeaseOp::Reopen => {
                    let Harness { dir, applier, .. } = h;
                    drop(applier);
                    h = Harness::open(dir);
                    continue;
                }
            };
            let m = h.applier.mvcc.clone();
            for rev in m.compact_revision().max(1)..=m.current_revision() {
                let (keys, whole) = both_ways(&m, rev, None);
                prop_assert_eq!(keys, whole, "at revision {}", rev);
            }
            // Sorting by value reads the values, keys-only or not.
            let (keys, whole) = both_ways(&m, 0, Some(SortTarget::Value));
            prop_assert_eq!(keys, whole);
        }
    }
}

/// What a Range with options answers, worked out from the whole range the
/// slow way: filter the records, sort them stably, cut at the limit.
fn reference(all: &[KeyValue], r: &RangeRequest) -> (Vec<KeyValue>, bool, i64) {
    let within = |v: i64, min: i64, max: i64| (min == 0 || v >= min) && (max == 0 || v <= max);
    let mut kvs: Vec<KeyValue> = all
        .iter()
        .filter(|kv| {
            within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
                && within(
                    kv.create_revision,
                    r.min_create_revision,
                    r.max_create_revision,
                )
        })
        .cloned()
        .collect();
    let target = SortTarget::try_from(r.sort_target).unwrap();
    let mut order = SortOrder::try_from(r.sort_order).unwrap();
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    (kvs, more, all.len() as i64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Filters and sorts decided on the index (all but sorting by value)
    /// answer what filtering and sorting the records would.
    #[test]
    fn ranges_with_options_answer_what_the_records_would(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..40),
        asks in proptest::collection::vec(
            (0..3i32, 0..5i32, 0..4i64, 0..12i64, 0..12i64, 0..12i64, 0..12i64, any::<bool>()),
            1..12,
        ),
    ) {
        let mut h = Harness::open(tempfile::tempdir().unwrap());
        for (k, v, delete) in ops {
            let _ = if delete {
                h.apply(Request::DeleteRange(DeleteRangeRequest { key: key(k), range_end: vec![], prev_kv: false }))
            } else {
                h.apply(Request::Put(PutRequest { key: key(k), value: vec![v % 4], ..Default::default() }))
            };
        }
        let m = h.applier.mvcc.clone();
        let cur = m.current_revision();
        for (order, target, limit, min_mod, max_mod, min_create, max_create, keys_only) in asks {
            for rev in [0, (cur / 2).max(1)] {
                let r = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    revision: rev,
                    limit,
                    sort_order: order,
                    sort_target: target,
                    min_mod_revision: min_mod,
                    max_mod_revision: max_mod,
                    min_create_revision: min_create,
                    max_create_revision: max_create,
                    keys_only,
                    ..Default::default()
                };
                let all = all_at(&m, rev).unwrap();
                let got = m.range(&r).unwrap().0;
                prop_assert_eq!((got.kvs, got.more, got.count), reference(&all, &r), "{:?}", r);
            }
        }
    }
}

mod decided_first {
    //! Txns whose entry says `txn_decided_first` (`txn_path`), as etcd
    //! 3.5 applies them, and the same txns on an older entry.

    use super::*;
    use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use crate::pb::etcdserverpb::{
        request_op::Request as Op, response_op, Compare, RequestOp, TxnRequest,
    };

    fn harness(decided_first: bool) -> Harness {
        let mut h = Harness::open(tempfile::tempdir().unwrap());
        h.terms.txn_decided_first = decided_first;
        h
    }

    fn put(k: &str, v: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })),
        }
    }

    fn range_at(k: &str, revision: i64) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestRange(RangeRequest {
                key: k.into(),
                revision,
                ..Default::default()
            })),
        }
    }

    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestTxn(t)),
        }
    }

    fn value_is(k: &str, v: &str) -> Compare {
        Compare {
            key: k.into(),
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            target_union: Some(TargetUnion::Value(v.into())),
            ..Default::default()
        }
    }

    fn value_of(h: &Harness, k: &str) -> Option<String> {
        let req = RangeRequest {
            key: k.into(),
            ..Default::default()
        };
        let kvs = h.applier.mvcc.range(&req).unwrap().0.kvs;
        kvs.first()
            .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
    }

    fn txn(success: Vec<RequestOp>) -> Request {
        Request::Txn(TxnRequest {
            success,
            ..Default::default()
        })
    }

    /// The outside tester's case: `[put z=POST, txn{z == POST ? r=S : r=F}]`.
    /// etcd 3.5 decides the inner compare before the put: r=F.
    #[test]
    fn a_nested_compare_sees_the_keyspace_as_it_was_before_the_txn() {
        let inner = TxnRequest {
            compare: vec![value_is("z", "POST")],
            success: vec![put("r", "S")],
            failure: vec![put("r", "F")],
        };
        let req = txn(vec![put("z", "POST"), nested(inner)]);
        let mut h = harness(true);
        let WriteResult::Txn(resp) = h.apply(req.clone()).unwrap() else {
            panic!()
        };
        assert_eq!(value_of(&h, "r").as_deref(), Some("F"));
        let Some(response_op::Response::ResponseTxn(inner)) = &resp.responses[1].response else {
            panic!("{resp:?}")
        };
        assert!(!inner.succeeded);
        // An entry from before (or from a mixed cluster) applies as those
        // releases did: the compare sees the put.
        let mut older = harness(false);
        older.apply(req).unwrap();
        assert_eq!(value_of(&older, "r").as_deref(), Some("S"));
    }

    /// A range at a revision past the one the txn starts from is refused
    /// up front (etcd's `checkRange`), even after the txn's own put would
    /// have made that revision: nothing is written.
    #[test]
    fn a_txn_with_a_request_that_would_fail_writes_nothing() {
        let mut h = harness(true);
        h.apply(txn(vec![put("a", "0")])).unwrap();
        let rev = h.applier.revision();
        for (req, want) in [
            (txn(vec![put("a", "1"), range_at("a", rev + 1)]), "future"),
            (
                txn(vec![
                    put("a", "1"),
                    nested(TxnRequest {
                        success: vec![range_at("a", rev + 5)],
                        ..Default::default()
                    }),
                ]),
                "future",
            ),
            (
                txn(vec![put("a", "1"), RequestOp { request: None }]),
                "empty",
            ),
        ] {
            let err = h.apply(req).unwrap_err();
            assert!(
                format!("{err:?}{err}").to_lowercase().contains(want),
                "{err:?}"
            );
            assert_eq!(h.applier.revision(), rev);
            assert_eq!(value_of(&h, "a").as_deref(), Some("0"));
        }
        // Compacted: refused below the compacted revision, as etcd; a
        // negative revision too, once anything is compacted.
        h.apply(txn(vec![put("a", "2")])).unwrap();
        let compacted = h.applier.revision();
        h.apply(Request::Compaction(CompactionRequest {
            revision: compacted,
            physical: false,
        }))
        .unwrap();
        h.apply(txn(vec![put("a", "3")])).unwrap();
        let rev = h.applier.revision();
        for below in [compacted - 1, -1] {
            let err = h
                .apply(txn(vec![put("a", "4"), range_at("a", below)]))
                .unwrap_err();
            assert!(matches!(err, StoreError::Compacted { .. }), "{err:?}");
            assert_eq!(h.applier.revision(), rev);
        }
        // At the compacted revision, and at the start, it reads.
        let read = txn(vec![
            put("a", "4"),
            range_at("a", compacted),
            range_at("a", rev),
        ]);
        h.apply(read).unwrap();
        assert_eq!(value_of(&h, "a").as_deref(), Some("4"));
    }

    /// A put that keeps the value of a key the txn deleted before it (a
    /// delete to `"\0"`, which etcd's duplicate-key check lets through)
    /// stops every etcd 3.5.1 member; here the txn is refused before it
    /// writes.
    #[test]
    fn a_put_keeping_the_value_of_a_key_the_txn_deleted_is_refused() {
        let mut h = harness(true);
        h.apply(txn(vec![put("h", "kept")])).unwrap();
        let rev = h.applier.revision();
        let delete_on = RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: "e".into(),
                range_end: vec![0],
                prev_kv: false,
            })),
        };
        let keep = RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: "h".into(),
                ignore_value: true,
                ..Default::default()
            })),
        };
        let req = TxnRequest {
            success: vec![delete_on.clone(), keep.clone()],
            ..Default::default()
        };
        crate::mvcc::txn_checks::validate_txn(&req, 128).expect("etcd admits it");
        let err = h.apply(Request::Txn(req)).unwrap_err();
        assert!(matches!(err, StoreError::KeyNotFound), "{err:?}");
        assert_eq!(h.applier.revision(), rev);
        assert_eq!(value_of(&h, "h").as_deref(), Some("kept"));
        // In the other order it keeps the value, then deletes the key.
        h.apply(txn(vec![keep, delete_on])).unwrap();
        assert_eq!(value_of(&h, "h"), None);
    }

    /// Only the branch that runs is checked: a nested failure branch that
    /// names a lease that does not exist does not stop the txn (the older
    /// entries checked both branches and refused it).
    #[test]
    fn a_branch_that_does_not_run_is_not_checked() {
        let leased = RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: "k".into(),
                value: "leased".into(),
                lease: 999,
                ..Default::default()
            })),
        };
        let req = txn(vec![nested(TxnRequest {
            compare: vec![value_is("x", "")],
            success: vec![put("k", "plain")],
            failure: vec![leased, range_at("k", 1_000)],
        })]);
        let mut h = harness(true);
        h.apply(txn(vec![put("x", "")])).unwrap();
        h.apply(req.clone()).unwrap();
        assert_eq!(value_of(&h, "k").as_deref(), Some("plain"));
        let mut older = harness(false);
        older.apply(txn(vec![put("x", "")])).unwrap();
        assert!(matches!(
            older.apply(req.clone()),
            Err(StoreError::LeaseNotFound)
        ));
        // The branch that runs is checked: with x changed, the failure
        // branch runs, and its lease does not exist (puts are checked
        // before ranges, as etcd does): refused, nothing written.
        h.apply(txn(vec![put("x", "other")])).unwrap();
        let rev = h.applier.revision();
        assert!(matches!(h.apply(req), Err(StoreError::LeaseNotFound)));
        assert_eq!(h.applier.revision(), rev);
        assert_eq!(value_of(&h, "k").as_deref(), Some("plain"));
    }

    /// Deep nesting: the path names each nested txn once, in the order
    /// they run, each decided before the first write.
    #[test]
    fn every_nested_txn_on_the_path_is_decided_first() {
        // Each level writes its marker, then asks whether the level above
        // wrote its own: decided first, none has.
        fn level(n: usize) -> TxnRequest {
            let mut success = vec![put(&format!("m{n}"), "set")];
            if n < 5 {
                success.push(nested(level(n + 1)));
            }
            TxnRequest {
                compare: if n == 0 {
                    vec![]
                } else {
                    vec![value_is(&format!("m{}", n - 1), "set")]
                },
                success,
                failure: vec![put(&format!("f{n}"), "ran")],
            }
        }
        let mut h = harness(true);
        h.apply(Request::Txn(level(0))).unwrap();
        assert_eq!(value_of(&h, "m0").as_deref(), Some("set"));
        assert_eq!(value_of(&h, "f1").as_deref(), Some("ran"));
        assert_eq!(value_of(&h, "m1"), None);
        let mut older = harness(false);
        older.apply(Request::Txn(level(0))).unwrap();
        assert_eq!(value_of(&older, "m5").as_deref(), Some("set"));
    }
}
