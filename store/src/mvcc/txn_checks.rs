//! The checks etcd makes on a Put or a Txn before it enters the raft log
//! (`server/etcdserver/api/v3rpc/key.go`), in etcd's order, and the limits
//! secretd adds on a txn's nesting and on the ops one run of it executes.
//! They run on the member a client asked, never in apply, so they may
//! change between releases without members applying anything differently.

use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::{request_op::Request as Op, PutRequest, TxnRequest};

mod intervals;

pub use super::txn::{has_put, is_read_only, is_serializable};

/// Checks a Put before it is proposed.
pub fn validate_put(p: &PutRequest) -> Result<()> {
    if p.key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(StoreError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(StoreError::LeaseProvided);
    }
    Ok(())
}

/// Deepest nesting of txns in one request (a txn with no txn inside is 1).
/// etcd sets none, but prost's decoder stops at 100 nested messages, and
/// each level of nesting costs two (`TxnRequest`, `RequestOp`) plus the
/// entry's own wrapping: at 50 levels, a request that the gRPC decoder
/// accepted could not be decoded from the log (D16); the entry decodes up
/// to 48 (`node::entry`). 32 keeps every admitted request well inside that
/// (`deepest_admitted_txn_decodes` checks the margin).
pub const TXN_NESTING_MAX: usize = 32;

/// Checks a Txn before it is proposed, in etcd's order: each level's op
/// counts, keys present and puts' flags (`checkTxnRequest`), then no key
/// written twice (`checkIntervals`, `intervals`), then what secretd adds:
/// how deep it nests, and how many ops one run of it executes.
pub fn validate_txn(t: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    validate_txn_but_duplicates(t, max_txn_ops)?;
    intervals::check(&t.success)?;
    intervals::check(&t.failure)
}

/// `validate_txn` but the duplicate-key rule: for a request that passed
/// `validate_txn` as its client sent it, and whose ranges were then cut
/// short (the API's reserved range cuts a delete's `"\0"` end, which
/// etcd's rule lets meet any put, to an end that meets some).
pub fn validate_txn_but_duplicates(t: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    // First, and without recursing past the limit: everything below walks
    // the request recursively.
    if nesting_exceeds(t, TXN_NESTING_MAX) {
        return Err(StoreError::TxnTooDeep);
    }
    check_txn(t, max_txn_ops)?;
    // Per level, each list is within the limit (etcd's check); across
    // levels, the ops one run of the request executes are too, so nesting
    // cannot multiply the limit (128 nested txns of 64 puts once wrote
    // 8,192 keys in one request).
    if ops_executed_max(t) > max_txn_ops {
        return Err(StoreError::TooManyOps);
    }
    Ok(())
}

/// Checks a write txn that will be applied as the releases before peer
/// wire 4 apply one (its entry not decided first, `txn_path`: a member
/// may run such a release). Those run a txn's requests one by one and
/// keep what the first ones wrote when a later one fails, so two things
/// that etcd's own checks let through are refused while they may apply
/// it (`OlderApply`).
pub fn refused_by_older_apply(t: &TxnRequest) -> std::result::Result<(), OlderApply> {
    let (mut puts, mut dels) = (Vec::new(), Vec::new());
    let mut ranges_at_a_revision = false;
    let mut stack = vec![t];
    while let Some(t) = stack.pop() {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Op::RequestPut(p)) => puts.push(&p.key[..]),
                Some(Op::RequestDeleteRange(d)) => dels.push((&d.key[..], &d.range_end[..])),
                Some(Op::RequestRange(r)) => ranges_at_a_revision |= r.revision > 0,
                Some(Op::RequestTxn(inner)) => stack.push(inner),
                None => {}
            }
        }
    }
    let covered = |k: &[u8]| {
        dels.iter()
            .any(|(key, end)| super::key_in_range(k, key, end))
    };
    if puts.into_iter().any(covered) {
        return Err(OlderApply::DuplicateKey);
    }
    if ranges_at_a_revision {
        return Err(OlderApply::RangeAtRevision);
    }
    Ok(())
}

/// Why a write txn is refused while a member may apply it as the releases
/// before peer wire 4 do (`refused_by_older_apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OlderApply {
    /// It puts a key that a delete anywhere in it covers, a `"\0"` end
    /// covering every key on: those releases' own rule ("duplicate key").
    /// etcd's rule lets a delete to `"\0"` meet a later put, which they
    /// would apply without the value or lease the put asks to keep.
    DuplicateKey,
    /// It ranges at a revision: that range can fail once the txn has
    /// written, and they keep those writes while answering the error.
    RangeAtRevision,
}

/// How deeply txns nest in `t` (a txn with no txn inside is 1).
pub fn nesting_depth(t: &TxnRequest) -> usize {
    1 + nested_txns(t).map(nesting_depth).max().unwrap_or(0)
}

/// Whether `t` nests deeper than `max`, looking no deeper than `max + 1`.
fn nesting_exceeds(t: &TxnRequest, max: usize) -> bool {
    max == 0 || nested_txns(t).any(|inner| nesting_exceeds(inner, max - 1))
}

fn nested_txns(t: &TxnRequest) -> impl Iterator<Item = &TxnRequest> {
    t.success
        .iter()
        .chain(&t.failure)
        .filter_map(|op| match &op.request {
            Some(Op::RequestTxn(inner)) => Some(inner),
            _ => None,
        })
}

/// The most ops one execution of `t` can run: the longer branch, with a
/// nested txn counting as itself plus what it runs.
fn ops_executed_max(t: &TxnRequest) -> usize {
    [&t.success, &t.failure]
        .iter()
        .map(|ops| {
            ops.iter()
                .map(|op| match &op.request {
                    Some(Op::RequestTxn(inner)) => 1 + ops_executed_max(inner),
                    _ => 1,
                })
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

/// etcd's `checkTxnRequest`, down every level.
fn check_txn(t: &TxnRequest, max_ops: usize) -> Result<()> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max_ops {
        return Err(StoreError::TooManyOps);
    }
    for c in &t.compare {
        if c.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) if r.key.is_empty() => return Err(StoreError::EmptyKey),
            Some(Op::RequestRange(_)) => {}
            Some(Op::RequestPut(p)) => validate_put(p)?,
            Some(Op::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(StoreError::EmptyKey)
            }
            Some(Op::RequestDeleteRange(_)) => {}
            // A nested txn gets what its level leaves of the limit, as in
            // etcd: nesting spends it.
            Some(Op::RequestTxn(inner)) => check_txn(inner, max_ops - opc)?,
            // etcd's answer to an op with no request ("key not found").
            None => return Err(StoreError::KeyNotFound),
        }
    }
    Ok(())
}
