//! Requests at and just past every admission limit (security round 3): a
//! client that probes the edges. Past a limit, admission must refuse with
//! that limit's own error; at it, admission must let the request through;
//! and whatever is committed must come to the same result on every member
//! (the apply invariant, checked by `Invariants`). D16 was a request that
//! admission let through and apply could not decode, which stopped every
//! member for good.
//!
//! Probes write only under `p/`, away from the registers' keys.

use rand::rngs::StdRng;
use rand::Rng;
use secretd_store::lease::TTL_MAX_SECS;
use secretd_store::node::entry::{nested_txn, TXN_NESTING_MAX};
use secretd_store::pb::etcdserverpb::{
    request_op, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
};
use secretd_store::StoreError;

/// The simulation's request limits (small, so that probes stay cheap).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
pub const MAX_TXN_OPS: usize = 32;

/// One probe: what it asks, and what admission must say.
pub struct Probe {
    pub what: String,
    pub request: ProbeRequest,
    /// `Some(e)`: admission refuses it with `e`; `None`: it passes
    /// admission (it may still fail for other reasons: no leader, a lease
    /// already there).
    pub refused_with: Option<StoreError>,
}

pub enum ProbeRequest {
    Txn(TxnRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    LeaseGrant { id: i64, ttl: i64 },
}

fn put_op(key: String, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into_bytes(),
            value,
            ..Default::default()
        })),
    }
}

/// Draws a probe; `n` makes its keys and lease ids unique.
pub fn draw(rng: &mut StdRng, n: u64) -> Probe {
    match rng.gen_range(0..10) {
        0 => probe(
            format!("txn nested {TXN_NESTING_MAX} deep"),
            ProbeRequest::Txn(nested_txn(TXN_NESTING_MAX)),
            None,
        ),
        1 => too_deep(rng),
        2 | 3 => wide_txn(rng, n),
        4 | 5 => big_put(rng, n),
        6 | 7 => range_end_edge(rng),
        _ => lease_ttl(rng, n),
    }
}

fn probe(what: String, request: ProbeRequest, refused_with: Option<StoreError>) -> Probe {
    Probe {
        what,
        request,
        refused_with,
    }
}

/// A txn nested past the limit.
fn too_deep(rng: &mut StdRng) -> Probe {
    // Just past the limit, or as deep as the request that stopped
    // every member (D16).
    let depth = if rng.gen_bool(0.5) {
        TXN_NESTING_MAX + 1
    } else {
        50
    };
    probe(
        format!("txn nested {depth} deep"),
        ProbeRequest::Txn(nested_txn(depth)),
        Some(StoreError::TxnTooDeep),
    )
}

/// A txn of as many puts as the limit allows, or one more.
fn wide_txn(rng: &mut StdRng, n: u64) -> Probe {
    let ops = if rng.gen_bool(0.5) {
        MAX_TXN_OPS
    } else {
        MAX_TXN_OPS + 1
    };
    let t = TxnRequest {
        success: (0..ops)
            .map(|i| put_op(format!("p/ops/{n}/{i}"), b"v".to_vec()))
            .collect(),
        ..Default::default()
    };
    let refused = (ops > MAX_TXN_OPS).then_some(StoreError::TooManyOps);
    probe(format!("txn of {ops} puts"), ProbeRequest::Txn(t), refused)
}

/// A put just over or just under the request size limit.
fn big_put(rng: &mut StdRng, n: u64) -> Probe {
    // The entry wraps the value in a few dozen bytes: a value of
    // the limit itself is over it, one 256 bytes short is under.
    let over = rng.gen_bool(0.5);
    let len = if over {
        MAX_REQUEST_BYTES
    } else {
        MAX_REQUEST_BYTES - 256
    };
    probe(
        format!("put of {len} bytes"),
        ProbeRequest::Put(PutRequest {
            key: format!("p/big/{n}").into_bytes(),
            value: vec![b'x'; len],
            ..Default::default()
        }),
        over.then_some(StoreError::RequestTooLarge),
    )
}

/// A delete_range at one of range_end's edges.
fn range_end_edge(rng: &mut StdRng) -> Probe {
    // range_end's edges: a prefix, one before the key (empty),
    // equal to the key, and one byte past it. ("\0", everything
    // from the key on, is the API's to cut at the reserved range:
    // the store below it has no such range, and the simulation
    // drives the store.)
    let (key, end): (&[u8], &[u8]) = match rng.gen_range(0..4) {
        0 => (b"p/ops/", b"p/ops0"),
        1 => (b"p/z", b"p/a"),
        2 => (b"p/big/", b"p/big/"),
        _ => (b"p/nested", b"p/nested\0"),
    };
    probe(
        format!("delete_range {key:?}..{end:?}"),
        ProbeRequest::DeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prev_kv: rng.gen_bool(0.5),
        }),
        None,
    )
}

/// A lease grant at, past or well under the TTL limit.
fn lease_ttl(rng: &mut StdRng, n: u64) -> Probe {
    let ttl = match rng.gen_range(0..3) {
        0 => TTL_MAX_SECS,
        1 => TTL_MAX_SECS + 1,
        _ => 1,
    };
    let refused = (ttl > TTL_MAX_SECS).then_some(StoreError::LeaseTtlTooLarge);
    probe(
        format!("lease grant ttl {ttl}"),
        ProbeRequest::LeaseGrant {
            // Far from the lease client's ids.
            id: 1_000_000 + n as i64,
            ttl,
        },
        refused,
    )
}
