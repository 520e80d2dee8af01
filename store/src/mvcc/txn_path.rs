//! A write txn decided before it writes, as etcd 3.5 applies one
//! (`compareToPath` and `checkRequests` in `server/etcdserver/apply.go`):
//! every compare on the path the txn takes, its nested txns' included, is
//! evaluated against the keyspace as it was before the txn, and every
//! request on that path is checked against it, before anything is
//! written. So a nested txn's compare does not see the txn's own earlier
//! writes, a branch that does not run is not checked, and a request that
//! would fail (a range at a future or compacted revision, a put that keeps
//! the value or lease of a key that does not exist, a put to a lease that
//! does not) refuses the whole txn with nothing written.
//!
//! Only entries that say so (`ApplyTerms::txn_decided_first`) are applied
//! this way; older ones as they were (`txn::Writer::apply`), nested
//! compares evaluated where they run and both branches of nested txns
//! checked, so that a replayed entry comes out as it did.

use crate::error::{Result, StoreError};
use crate::lease::Lessor;
use crate::pb::etcdserverpb::{
    request_op::Request as Op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::index::Index;
use super::key_in_range;

/// Which branch each txn on the path takes: the outer txn's first, then
/// each nested txn of the branch taken, depth first, in the order they
/// run (etcd's `txnPath`). `true` is success.
pub(super) fn decide(
    t: &TxnRequest,
    compare: &mut dyn FnMut(&Compare) -> Result<bool>,
) -> Result<Vec<bool>> {
    let mut taken = Vec::new();
    decide_into(t, compare, &mut taken)?;
    Ok(taken)
}

fn decide_into(
    t: &TxnRequest,
    compare: &mut dyn FnMut(&Compare) -> Result<bool>,
    taken: &mut Vec<bool>,
) -> Result<()> {
    let mut succeeded = true;
    for c in &t.compare {
        if !compare(c)? {
            succeeded = false;
            break;
        }
    }
    taken.push(succeeded);
    for op in branch(t, succeeded) {
        if let Some(Op::RequestTxn(inner)) = &op.request {
            decide_into(inner, compare, taken)?;
        }
    }
    Ok(())
}

fn branch(t: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &t.success
    } else {
        &t.failure
    }
}

/// The requests the path `taken` runs, in the order they run, each nested
/// txn replaced by the requests of its branch. An op with no request is
/// kept (`check` refuses it).
pub(super) fn requests<'a>(t: &'a TxnRequest, taken: &[bool]) -> Result<Vec<&'a RequestOp>> {
    let mut out = Vec::new();
    let mut rest = taken.iter();
    requests_into(t, &mut rest, &mut out)?;
    Ok(out)
}

fn requests_into<'a>(
    t: &'a TxnRequest,
    taken: &mut std::slice::Iter<'_, bool>,
    out: &mut Vec<&'a RequestOp>,
) -> Result<()> {
    let succeeded = *taken.next().ok_or_else(path_too_short)?;
    for op in branch(t, succeeded) {
        match &op.request {
            Some(Op::RequestTxn(inner)) => requests_into(inner, taken, out)?,
            _ => out.push(op),
        }
    }
    Ok(())
}

/// A path that names fewer txns than the request runs: a defect here, not
/// the client's, and the same on every member.
pub(super) fn path_too_short() -> StoreError {
    StoreError::InvalidArgument("txn path shorter than its nested txns".into())
}

/// Checks the requests of a path as etcd does before it writes: first
/// every put (`checkPut`), then every range (`checkRange`) against the
/// revision the txn starts from (`start_rev`) and the compacted one.
pub(super) fn check(
    index: &Index,
    lessor: &Lessor,
    start_rev: i64,
    path: &[&RequestOp],
) -> Result<()> {
    for (i, op) in path.iter().enumerate() {
        match &op.request {
            Some(Op::RequestPut(p)) => {
                check_put(lessor, p, || exists_when_run(index, &p.key, &path[..i]))?
            }
            Some(_) => {}
            None => {
                return Err(StoreError::InvalidArgument(
                    "empty request op in txn".into(),
                ))
            }
        }
    }
    check_ranges(index, start_rev, path)
}

/// etcd's `checkRange` over a path: a range at a revision past `start_rev`
/// (the one the txn starts from) or compacted away refuses the txn. A
/// read-only txn is checked so too (etcd serves it with the same code).
fn check_ranges(index: &Index, start_rev: i64, path: &[&RequestOp]) -> Result<()> {
    path.iter().try_for_each(|op| match &op.request {
        Some(Op::RequestRange(r)) => check_range(index, start_rev, r),
        _ => Ok(()),
    })
}

/// etcd's `checkRange` for one range of a txn that starts at `start_rev`.
/// A read-only txn's ranges are checked so too, where they run (nothing
/// is written, so where is the same; `range_at` already refuses a future
/// or compacted positive revision, and this adds the negative one).
pub(super) fn check_range(index: &Index, start_rev: i64, r: &RangeRequest) -> Result<()> {
    // etcd's first revision is -1 until something is compacted: a
    // negative revision is refused only after a compaction, or below -1.
    let first_rev = if index.compact_rev > 0 {
        index.compact_rev
    } else {
        -1
    };
    if r.revision == 0 {
        Ok(())
    } else if r.revision > start_rev {
        Err(StoreError::FutureRevision)
    } else if r.revision < first_rev {
        Err(StoreError::Compacted {
            compact_revision: index.compact_rev,
        })
    } else {
        Ok(())
    }
}

/// Whether `key` exists when a put after the requests `before` runs: the
/// last of them that puts it or deletes it says, else the keyspace before
/// the txn. etcd 3.5.1 checks the keyspace before the txn only, and a txn
/// that deletes a key (a range ending in `"\0"`, which its duplicate-key
/// check lets through) and then puts it keeping its value stops every
/// etcd member ("unexpected error during txn"); here it is refused,
/// nothing written.
fn exists_when_run(index: &Index, key: &[u8], before: &[&RequestOp]) -> bool {
    for op in before.iter().rev() {
        match &op.request {
            Some(Op::RequestPut(p)) if p.key == key => return true,
            Some(Op::RequestDeleteRange(d)) if key_in_range(key, &d.key, &d.range_end) => {
                return false
            }
            _ => {}
        }
    }
    index.get(key).and_then(|ki| ki.live()).is_some()
}

/// What a put needs before it runs: its key (`key_exists`), if it keeps
/// the key's value or lease; the lease it attaches, if any.
pub(super) fn check_put(
    lessor: &Lessor,
    p: &PutRequest,
    key_exists: impl FnOnce() -> bool,
) -> Result<()> {
    // Only these flags need the key to exist; an index lookup per put
    // cost ~5% of a member's CPU under load.
    if (p.ignore_value || p.ignore_lease) && !key_exists() {
        return Err(StoreError::KeyNotFound);
    }
    if p.lease != 0 && !lessor.contains(p.lease) {
        return Err(StoreError::LeaseNotFound);
    }
    Ok(())
}

/// Where a txn being run gets each of its branches from.
pub(super) enum Decided<'p> {
    /// From its compares, evaluated where the txn runs (older entries,
    /// and read-only txns, where it is the same).
    Now,
    /// From the path decided before the txn wrote (`decide`).
    First(std::slice::Iter<'p, bool>),
}
