//! Builders for the txns secretd's objects are made of: ranges, puts,
//! deletes and the compares that make each change atomic. Shared by the
//! object store, the keyring, autolock and KEK rotation.

use secretd_store::node::Node;
use secretd_store::pb::etcdserverpb::{
    compare, request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, TxnResponse,
};

use crate::{layout, Result};

/// Proposes one txn: `success` runs if every compare holds, else nothing.
pub(crate) async fn run(
    node: &Node,
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
) -> Result<TxnResponse> {
    let req = TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    };
    Ok(node.txn(req, None).await?)
}

pub(crate) fn get(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

pub(crate) fn scan(prefix: Vec<u8>, limit: i64, keys_only: bool) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            range_end: layout::prefix_end(&prefix),
            key: prefix,
            limit,
            keys_only,
            ..Default::default()
        })),
    }
}

pub(crate) fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

pub(crate) fn del(key: Vec<u8>, range_end: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key,
                range_end,
                prev_kv: false,
            },
        )),
    }
}

pub(crate) fn cmp(
    key: Vec<u8>,
    range_end: Vec<u8>,
    result: compare::CompareResult,
    target: compare::TargetUnion,
) -> Compare {
    let t = match target {
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        key,
        range_end,
        target: t as i32,
        result: result as i32,
        target_union: Some(target),
    }
}

/// The key does not exist.
pub(crate) fn absent(key: Vec<u8>) -> Compare {
    cmp(
        key,
        Vec::new(),
        compare::CompareResult::Equal,
        compare::TargetUnion::CreateRevision(0),
    )
}

/// The key was last changed at `rev` (unchanged since it was read).
pub(crate) fn unchanged(key: Vec<u8>, rev: i64) -> Compare {
    cmp(
        key,
        Vec::new(),
        compare::CompareResult::Equal,
        compare::TargetUnion::ModRevision(rev),
    )
}

/// No key with this prefix exists.
pub(crate) fn none_with_prefix(prefix: Vec<u8>) -> Compare {
    let end = layout::prefix_end(&prefix);
    cmp(
        prefix,
        end,
        compare::CompareResult::Equal,
        compare::TargetUnion::CreateRevision(0),
    )
}

/// No key with this prefix changed (or appeared) after `rev`.
pub(crate) fn prefix_unchanged_since(prefix: Vec<u8>, rev: i64) -> Compare {
    let end = layout::prefix_end(&prefix);
    cmp(
        prefix,
        end,
        compare::CompareResult::Less,
        compare::TargetUnion::ModRevision(rev + 1),
    )
}
