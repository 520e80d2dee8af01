//! A raft entry's request: the one decoder that both admission and apply
//! use, so that nothing is committed that apply cannot read.
//!
//! A committed entry whose bytes passed the log's checksum is never a
//! reason to stop: if apply cannot decode it (a request that slipped past
//! an older admission, or that a newer member wrote), every member applies
//! it alike as a refused request, and its proposer gets the error. Only a
//! checksum or framing failure on disk is corruption (`raftlog`).

use prost::Message as _;

use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest};
use crate::pb::internal::{internal_request::Request, InternalRequest};

/// The deepest txn nesting admitted: defined with the check that enforces
/// it (`mvcc::txn_checks`), which sits below this decoder; it exists for
/// this decoder's sake (`deepest_admitted_txn_decodes` checks the margin).
pub use crate::mvcc::txn_checks::TXN_NESTING_MAX;

/// Decodes a committed entry's request, as apply reads it.
pub fn decode(data: &[u8]) -> std::result::Result<InternalRequest, String> {
    let req = InternalRequest::decode(data).map_err(|e| e.to_string())?;
    if req.request.is_none() {
        return Err("the entry holds no request".into());
    }
    Ok(req)
}

/// Admission's check of an encoded request: what apply cannot decode is
/// refused before it is proposed, with the decoder's reason.
pub fn check_decodes(data: &[u8]) -> Result<()> {
    decode(data)
        .map(|_| ())
        .map_err(|e| StoreError::InvalidArgument(format!("request cannot be applied: {e}")))
}

/// Whether admission must decode the request back: only nested txns can
/// reach the decoder's depth limit.
pub fn needs_decode_check(request: &Request) -> bool {
    matches!(request, Request::Txn(t) if crate::mvcc::txn_checks::nesting_depth(t) > 1)
}

/// The request id and proposer of an entry that does not decode, read
/// from its top-level fields alone (`id` = 1, `proposer` = 20, both
/// varints; proto3 leaves out a zero, which is what an absent one means),
/// so that the proposer can be answered. `None` if even the top level is
/// not well formed: then nobody is waiting that can be found.
pub fn ids_of_undecodable(mut data: &[u8]) -> Option<(u64, u64)> {
    use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
    let (mut id, mut proposer) = (None, None);
    while !data.is_empty() {
        let (tag, wire) = decode_key(&mut data).ok()?;
        match (tag, wire) {
            (1, WireType::Varint) => id = Some(decode_varint(&mut data).ok()?),
            (20, WireType::Varint) => proposer = Some(decode_varint(&mut data).ok()?),
            // Skipping a length-delimited field does not descend into it,
            // so the depth that broke `decode` cannot break this.
            _ => skip_field(wire, tag, &mut data, DecodeContext::default()).ok()?,
        }
    }
    Some((id.unwrap_or(0), proposer.unwrap_or(0)))
}

/// A txn nested `depth` levels deep with one put (of `p/nested`) at the
/// bottom: what the limit is about, for tests and the simulation's probes.
pub fn nested_txn(depth: usize) -> TxnRequest {
    let put = PutRequest {
        key: b"p/nested".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    let mut t = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        ..Default::default()
    };
    for _ in 1..depth {
        t = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestTxn(t)),
            }],
            ..Default::default()
        };
    }
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mvcc::txn_checks;

    pub(crate) use super::nested_txn;

    fn entry(t: TxnRequest) -> Vec<u8> {
        InternalRequest {
            id: 7,
            proposer: 9,
            request: Some(Request::Txn(t)),
            auth_revision: None,
            auth_fence: Some(crate::auth::AuthFence {
                revision: 3,
                user: "u".into(),
                admin: false,
            }),
            write_answer_bytes_max: None,
            txn_decided_first: false,
            txn_rules_etcd: false,
        }
        .encode_to_vec()
    }

    #[test]
    fn deepest_admitted_txn_decodes() {
        let t = nested_txn(TXN_NESTING_MAX);
        assert_eq!(txn_checks::nesting_depth(&t), TXN_NESTING_MAX);
        txn_checks::validate_txn(&t, 128).expect("admitted");
        check_decodes(&entry(t)).expect("apply can read it");
        // The margin: how much deeper the decoder still reads.
        let decodable = (1..100)
            .take_while(|d| check_decodes(&entry(nested_txn(*d))).is_ok())
            .last()
            .unwrap_or(0);
        assert!(
            decodable >= TXN_NESTING_MAX + 8,
            "decodes up to {decodable}"
        );
    }

    #[test]
    fn deeper_txns_are_refused_at_admission() {
        let t = nested_txn(TXN_NESTING_MAX + 1);
        assert_eq!(
            txn_checks::validate_txn(&t, 128),
            Err(StoreError::TxnTooDeep)
        );
        // What killed the cluster: 50 levels are past the decoder's limit,
        // and admission's own decode says so.
        let err = check_decodes(&entry(nested_txn(50))).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }

    #[test]
    fn an_undecodable_entry_still_names_its_proposer() {
        let data = entry(nested_txn(60));
        assert!(decode(&data).is_err());
        assert_eq!(ids_of_undecodable(&data), Some((7, 9)));
        assert_eq!(ids_of_undecodable(b"\xff\xff\xff"), None);
        assert_eq!(ids_of_undecodable(&[]), Some((0, 0)));
        let empty = InternalRequest {
            id: 1,
            proposer: 2,
            ..Default::default()
        };
        assert_eq!(
            decode(&empty.encode_to_vec()).unwrap_err(),
            "the entry holds no request"
        );
    }
}
