//! Structured fuzzing of everything the store decodes from bytes it did
//! not write itself, or may find damaged: a raft entry's request, a log
//! record, a snapshot file, a peer's raft message. Each runs a fixed
//! number of cases from a fixed seed (so CI is repeatable), on random
//! bytes and on valid encodings with bytes flipped, cut or inserted. The
//! property is always the same: an answer (a value or an error), never a
//! panic, and never more than the input can describe.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::node::entry;
use crate::pb::etcdserverpb::{PutRequest, TxnRequest};
use crate::pb::internal::{internal_request::Request, InternalRequest};

/// Cases per property: enough to walk every branch of these small
/// decoders many times, few enough for CI (well under a second each).
const CASES: u32 = 2_000;

fn config() -> Config {
    Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(0x5ec2_e7d0),
        failure_persistence: None,
        ..Config::default()
    }
}

/// A valid encoding, then damaged: bytes flipped, the tail cut, bytes put
/// in the middle.
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len().max(1);
    (
        proptest::collection::vec((0..n, any::<u8>()), 0..8),
        0..=n,
        proptest::collection::vec(any::<u8>(), 0..16),
        0..=n,
    )
        .prop_map(move |(flips, cut, insert, at)| {
            let mut b = valid.clone();
            for (i, x) in flips {
                if i < b.len() {
                    b[i] ^= x;
                }
            }
            b.truncate(cut);
            let at = at.min(b.len());
            b.splice(at..at, insert);
            b
        })
}

fn an_entry() -> Vec<u8> {
    use prost::Message as _;
    InternalRequest {
        id: 42,
        proposer: 7,
        request: Some(Request::Txn(TxnRequest {
            success: vec![crate::pb::etcdserverpb::RequestOp {
                request: Some(crate::pb::etcdserverpb::request_op::Request::RequestTxn(
                    entry::nested_txn(5),
                )),
            }],
            failure: vec![crate::pb::etcdserverpb::RequestOp {
                request: Some(crate::pb::etcdserverpb::request_op::Request::RequestPut(
                    PutRequest {
                        key: b"k".to_vec(),
                        value: vec![1; 300],
                        lease: 9,
                        ..Default::default()
                    },
                )),
            }],
            ..Default::default()
        })),
        auth_revision: Some(3),
        auth_fence: Some(crate::auth::AuthFence {
            revision: 3,
            user: "u".into(),
            admin: false,
        }),
        write_answer_bytes_max: Some(1 << 20),
        txn_decided_first: true,
        txn_rules_etcd: true,
    }
    .encode_to_vec()
}

proptest! {
    #![proptest_config(config())]

    /// Apply's decoder and the proposer lookup it falls back on.
    #[test]
    fn entry_decoding_never_panics(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            damaged(an_entry()),
        ]
    ) {
        let decoded = entry::decode(&bytes);
        let _ = entry::ids_of_undecodable(&bytes);
        let _ = entry::check_decodes(&bytes);
        if let Ok(req) = decoded {
            prop_assert!(req.request.is_some());
        }
    }

    /// A log record: a whole one never claims more bytes than it had.
    #[test]
    fn log_records_never_panic(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            {
                let mut valid = Vec::new();
                crate::raftlog::record::encode(&mut valid, crate::raftlog::record::Kind::Entry, &an_entry());
                damaged(valid)
            },
        ]
    ) {
        if let crate::raftlog::record::Decoded::Record(_, payload, used) =
            crate::raftlog::record::decode(&bytes)
        {
            prop_assert!(used <= bytes.len() && payload.len() < used);
        }
        let _ = crate::raftlog::record::parse_index_term(&bytes);
    }

    /// A peer's raft message, as the transports parse it.
    #[test]
    fn raft_messages_never_panic(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            {
                use protobuf::Message as _;
                let mut m = raft::eraftpb::Message::default();
                m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
                m.term = 3;
                m.index = 10;
                let e = raft::eraftpb::Entry {
                    index: 11,
                    data: an_entry().into(),
                    ..Default::default()
                };
                m.set_entries(vec![e].into());
                damaged(m.write_to_bytes().unwrap())
            },
        ]
    ) {
        use protobuf::Message as _;
        let _ = raft::eraftpb::Message::parse_from_bytes(&bytes);
    }
}

/// A snapshot file, damaged anywhere: reading it to the end is an error
/// or every record, never a panic, and a damaged one never passes.
#[test]
fn damaged_snapshots_are_refused_without_panicking() {
    use crate::snapshot::{SnapshotHeader, SnapshotReader, SnapshotWriter, CF_TAG_KV};
    let dir = tempfile::tempdir().unwrap();
    let header = SnapshotHeader {
        index: 12,
        term: 3,
        conf_state: vec![8, 1],
    };
    let mut w = SnapshotWriter::create(dir.path(), &header).unwrap();
    for i in 0..20u32 {
        w.record(CF_TAG_KV, &i.to_be_bytes(), &[i as u8; 40])
            .unwrap();
    }
    let path = w.finish().unwrap();
    let valid = std::fs::read(&path).unwrap();
    let read_all = |bytes: &[u8]| -> Result<usize, String> {
        std::fs::write(&path, bytes).unwrap();
        let mut r = SnapshotReader::open(&path).map_err(|e| e.to_string())?;
        let mut n = 0;
        while r.next_record().map_err(|e| e.to_string())?.is_some() {
            n += 1;
        }
        Ok(n)
    };
    assert_eq!(read_all(&valid), Ok(20));
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases: CASES / 4,
        ..config()
    });
    runner
        .run(&damaged(valid.clone()), |bytes| {
            if let Ok(n) = read_all(&bytes) {
                // Only the untouched file reads whole.
                prop_assert!(bytes == valid && n == 20, "damaged snapshot passed");
            }
            Ok(())
        })
        .unwrap();
}
