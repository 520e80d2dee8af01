//! The reserved key range: secretd's own objects (secrets, configs, tasks,
//! KEK records) live in the same MVCC keyspace as etcd clients' keys, from
//! [`RESERVED`] to the end of the keyspace. The etcd-compatible API may
//! neither read nor write there: a request aimed into the range is refused,
//! and a range that runs into it (`--prefix ""`, `--from-key`) is cut at
//! its start. Since no client key can exist at or past `RESERVED`, cutting
//! a range there changes nothing a client could have written.
//!
//! Internal code (the `objects` module) talks to `store::node::Node`
//! directly and never passes through these checks.

use tonic::Status;

use crate::pb::etcdserverpb::{
    request_op::Request as Op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};

pub use secretd_secrets::layout::RESERVED;

fn refused() -> Status {
    Status::invalid_argument(
        "etcdserver: keys from \"\\xff\\xffsecretd/\" on are reserved for secretd's own objects",
    )
}

/// Checks a key (`end` empty) or range, and cuts a range that reaches into
/// the reserved range.
pub fn clamp(key: &[u8], end: &mut Vec<u8>) -> Result<(), Status> {
    if key >= RESERVED {
        return Err(refused());
    }
    // `[0]` is etcd's "to the end of the keyspace".
    if end.as_slice() == [0] || end.as_slice() > RESERVED {
        *end = RESERVED.to_vec();
    }
    Ok(())
}

pub fn range(r: &mut RangeRequest) -> Result<(), Status> {
    clamp(&r.key, &mut r.range_end)
}

pub fn put(p: &PutRequest) -> Result<(), Status> {
    clamp(&p.key, &mut Vec::new())
}

pub fn delete(d: &mut DeleteRangeRequest) -> Result<(), Status> {
    clamp(&d.key, &mut d.range_end)
}

fn compare(c: &mut Compare) -> Result<(), Status> {
    clamp(&c.key, &mut c.range_end)
}

fn ops(list: &mut [RequestOp]) -> Result<(), Status> {
    for op in list {
        match &mut op.request {
            Some(Op::RequestRange(r)) => range(r)?,
            Some(Op::RequestPut(p)) => put(p)?,
            Some(Op::RequestDeleteRange(d)) => delete(d)?,
            Some(Op::RequestTxn(t)) => txn(t)?,
            None => {}
        }
    }
    Ok(())
}

pub fn txn(t: &mut TxnRequest) -> Result<(), Status> {
    t.compare.iter_mut().try_for_each(compare)?;
    ops(&mut t.success)?;
    ops(&mut t.failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_and_reserved_keys_refused() {
        let mut end = vec![0];
        clamp(&[0], &mut end).unwrap();
        assert_eq!(end, RESERVED);
        let mut end = b"\xff\xff\xff".to_vec();
        clamp(b"a", &mut end).unwrap();
        assert_eq!(end, RESERVED);
        let mut end = b"b".to_vec();
        clamp(b"a", &mut end).unwrap();
        assert_eq!(end, b"b");
        assert!(clamp(RESERVED, &mut Vec::new()).is_err());
        assert!(clamp(b"\xff\xffz", &mut Vec::new()).is_err());
        clamp(b"\xff\xfe", &mut Vec::new()).unwrap();
        let mut t = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestTxn(TxnRequest {
                    failure: vec![RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: [RESERVED, b"x"].concat(),
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        assert!(txn(&mut t).is_err());
    }
}
