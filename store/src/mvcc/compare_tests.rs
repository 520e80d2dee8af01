//! Txn compares: decided on the index where the index holds what they
//! compare (`txn::compare_on_index`), and read by etcd's rules on entries
//! that say so (`txn::CompareRules`).

use proptest::prelude::*;

use super::tests::{key, op, Harness, Op};
use super::*;
use crate::pb::etcdserverpb::{CompactionRequest, Compare, DeleteRangeRequest, PutRequest};
use crate::pb::internal::internal_request::Request;

fn compare() -> impl Strategy<Value = Compare> {
    use crate::pb::etcdserverpb::compare::TargetUnion;
    let end = prop_oneof![Just(None), any::<u8>().prop_map(Some), Just(Some(0xff))];
    // Targets and results past etcd's (5, 4) and unions that name another
    // field than the target are what a client may send.
    (0..6i32, 0..5i32, any::<u8>(), end, -1..12i64, any::<u8>()).prop_map(
        |(target, result, k, end, n, v)| Compare {
            result,
            target,
            key: key(k),
            // 0xff stands for etcd's "every key from here" ("\0").
            range_end: match end {
                None => Vec::new(),
                Some(0xff) => vec![0],
                Some(e) => key(e),
            },
            target_union: Some(match (target + i32::from(v % 7 == 0)) % 5 {
                0 => TargetUnion::Version(n),
                1 => TargetUnion::CreateRevision(n),
                2 => TargetUnion::ModRevision(n),
                3 => TargetUnion::Value(vec![v]),
                _ => TargetUnion::Lease(n),
            }),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A version, create or mod compare decided on the index alone answers
    /// what the same compare over the range's records answers, at every
    /// revision still readable; value and lease compares are left to the
    /// range.
    #[test]
    fn a_compare_on_the_index_decides_as_the_range_does(
        ops in proptest::collection::vec(op(), 1..60),
        compares in proptest::collection::vec(compare(), 1..40),
    ) {
        use crate::pb::etcdserverpb::compare::CompareTarget;
        let mut h = Harness::open(tempfile::tempdir().unwrap());
        for op in ops {
            let cur = h.applier.mvcc.current_revision();
            let req = match op {
                Op::Put(k, v) => Request::Put(PutRequest { key: key(k), value: vec![v], ..Default::default() }),
                Op::Delete(k, e) => Request::DeleteRange(DeleteRangeRequest { key: key(k), range_end: e.map(key).unwrap_or_default(), prev_kv: false }),
                Op::Compact(r) => Request::Compaction(CompactionRequest { revision: 1 + (r as i64 % cur.max(1)), physical: false }),
                Op::Reopen => continue,
            };
            let _ = h.apply(req);
        }
        let cur = h.applier.mvcc.current_revision();
        let index = h.applier.mvcc.index.read();
        for (c, rules) in compares.iter().flat_map(|c| [(c, txn::CompareRules::Etcd), (c, txn::CompareRules::Before)]) {
            let target = rules.target(c);
            for at in index.compact_rev.max(1)..=cur {
                let fast = txn::compare_on_index(&index, c, target, at, rules);
                let slow = txn::compare_by_range(&index, c, target, at, &|r| h.applier.fetch(r), rules).unwrap();
                if matches!(target, Some(CompareTarget::Value | CompareTarget::Lease) | None) {
                    prop_assert_eq!(fast, None);
                } else {
                    prop_assert_eq!(fast, Some(slow), "{:?} at {}", c, at);
                }
            }
        }
    }
}

/// etcd's `compareKV`, on entries that say `txn_rules_etcd`: a compare
/// reads the union field its target names and takes zero when the client
/// set another; an unknown target compares as equal; an unknown result
/// holds. Entries without it are applied as the releases before did.
#[test]
fn compares_read_the_union_their_target_names_as_etcd_does() {
    use crate::pb::etcdserverpb::compare::TargetUnion;
    use crate::pb::etcdserverpb::TxnRequest;
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    for v in [b"1", b"2", b"3"] {
        let put = PutRequest {
            key: b"e".to_vec(),
            value: v.to_vec(),
            ..Default::default()
        };
        h.apply(Request::Put(put)).unwrap();
    }
    let mut decide = |etcd: bool, target: i32, result: i32, union: TargetUnion| {
        h.terms.txn_rules_etcd = etcd;
        let compare = vec![Compare {
            key: b"e".to_vec(),
            target,
            result,
            target_union: Some(union),
            ..Default::default()
        }];
        match h.apply(Request::Txn(TxnRequest {
            compare,
            ..Default::default()
        })) {
            Ok(WriteResult::Txn(r)) => r.succeeded,
            other => panic!("{other:?}"),
        }
    };
    // "e" is at version 3, mod revision 4. MOD (2) GREATER (1) with a
    // version set: etcd reads the mod revision against 0.
    assert!(decide(true, 2, 1, TargetUnion::Version(999_999_999)));
    assert!(!decide(false, 2, 1, TargetUnion::Version(999_999_999)));
    // VERSION (0) EQUAL (0) with a mod revision of 3 set: 3 against 0.
    assert!(!decide(true, 0, 0, TargetUnion::ModRevision(3)));
    assert!(decide(false, 0, 0, TargetUnion::ModRevision(3)));
    assert!(decide(true, 0, 0, TargetUnion::Version(3)));
    // An unknown target compares as equal (before: as VERSION).
    assert!(decide(true, 9, 0, TargetUnion::Version(5)));
    assert!(!decide(true, 9, 1, TargetUnion::Version(5)));
    assert!(!decide(false, 9, 0, TargetUnion::Version(5)));
    // An unknown result holds (before: as EQUAL).
    assert!(decide(true, 0, 7, TargetUnion::Version(5)));
    assert!(!decide(false, 0, 7, TargetUnion::Version(5)));
}
