//! etcd 3.5.1's `checkIntervals`: a txn may not put a key twice, or put
//! a key it deletes, where etcd says so ("duplicate key given in txn
//! request"). Ported rule for rule, since clients meet its edges:
//!
//! - a level's puts conflict with every put and delete of the txns nested
//!   in it (both their branches) and with the level's own deletes;
//! - a nested txn's puts conflict with the puts of the nested txns before
//!   it and with the deletes of the level and of the nested txns before
//!   it, not after it; its failure branch may put what its success branch
//!   puts (only one runs);
//! - a delete covers `[key, range_end)` in plain byte order, `key` alone
//!   if `range_end` is empty. A `range_end` of `"\0"` (every key from
//!   `key` on, when the delete runs) is, to etcd's interval tree, an
//!   interval that ends before it starts: it conflicts with no put.

use std::collections::HashSet;

use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::{request_op::Request as Op, RequestOp};

/// The keys a list of ops puts, and the key intervals it deletes, with its
/// nested txns'.
struct Writes<'a> {
    puts: HashSet<&'a [u8]>,
    dels: Vec<(&'a [u8], &'a [u8])>,
}

impl Writes<'_> {
    /// Whether a delete covers `k`, as etcd's interval tree answers it.
    fn deletes(&self, k: &[u8]) -> bool {
        self.dels.iter().any(|(key, end)| {
            if end.is_empty() {
                *key == k
            } else {
                *key <= k && k < *end
            }
        })
    }
}

/// Checks one branch's ops (etcd checks a txn's success and failure lists
/// each on its own).
pub(super) fn check(ops: &[RequestOp]) -> Result<()> {
    writes(ops).map(|_| ())
}

fn writes(ops: &[RequestOp]) -> Result<Writes<'_>> {
    let mut w = Writes {
        puts: HashSet::new(),
        dels: ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Op::RequestDeleteRange(d)) => Some((&d.key[..], &d.range_end[..])),
                _ => None,
            })
            .collect(),
    };
    for op in ops {
        let Some(Op::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = writes(&t.success)?;
        let otherwise = writes(&t.failure)?;
        for k in &then.puts {
            if w.puts.contains(k) || w.deletes(k) {
                return Err(StoreError::DuplicateKey);
            }
        }
        w.puts.extend(&then.puts);
        for k in &otherwise.puts {
            if (w.puts.contains(k) && !then.puts.contains(k)) || w.deletes(k) {
                return Err(StoreError::DuplicateKey);
            }
        }
        w.puts.extend(&otherwise.puts);
        w.dels.extend(then.dels);
        w.dels.extend(otherwise.dels);
    }
    for op in ops {
        let Some(Op::RequestPut(p)) = &op.request else {
            continue;
        };
        if !w.puts.insert(&p.key) || w.deletes(&p.key) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.to_vec(),
                prev_kv: false,
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn dup(ops: Vec<RequestOp>) -> bool {
        match check(&ops) {
            Ok(()) => false,
            Err(StoreError::DuplicateKey) => true,
            Err(e) => panic!("{e:?}"),
        }
    }

    /// Each case as etcd 3.5.1 answers it (the side-by-side test in
    /// `it txn_diff` sends such txns to both).
    #[test]
    fn duplicates_are_what_etcd_says_they_are() {
        assert!(dup(vec![put("a"), put("a")]));
        assert!(dup(vec![put("a"), del("a", b"")]));
        assert!(dup(vec![del("a", b"c"), put("b")]));
        assert!(!dup(vec![del("a", b"c"), put("c")]));
        // "\0": every key from "e" on when it runs, but no conflict here.
        assert!(!dup(vec![del("e", b"\0"), put("h")]));
        // A range that ends before it starts deletes nothing, conflicts
        // with nothing.
        assert!(!dup(vec![del("e", b"b"), put("f")]));
        // Nested: the branches of one txn may put the same key.
        assert!(!dup(vec![txn(vec![put("a")], vec![put("a")])]));
        // Two nested txns may not, nor the level and a nested txn.
        assert!(dup(vec![
            txn(vec![put("a")], vec![]),
            txn(vec![], vec![put("a")])
        ]));
        assert!(dup(vec![put("a"), txn(vec![], vec![put("a")])]));
        assert!(dup(vec![txn(vec![del("a", b"")], vec![]), put("a")]));
        // A nested txn's put meets the deletes before it, not after it.
        assert!(dup(vec![del("a", b""), txn(vec![put("a")], vec![])]));
        assert!(dup(vec![
            txn(vec![del("a", b"")], vec![]),
            txn(vec![put("a")], vec![])
        ]));
        assert!(!dup(vec![
            txn(vec![put("a")], vec![]),
            txn(vec![del("a", b"")], vec![])
        ]));
        // Deeper levels carry up.
        assert!(dup(vec![
            txn(vec![txn(vec![put("a")], vec![])], vec![]),
            put("a")
        ]));
        // Inside one nested branch, its own rules.
        assert!(dup(vec![txn(vec![put("a"), del("a", b"")], vec![])]));
    }
}
