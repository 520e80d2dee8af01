//! Export and import against each other on a real member's state (the
//! round trips through etcd's binaries are `api/tests/it/etcd_format.rs`).

use super::export::{conf_state_json, member_json};
use super::*;
use crate::bolt::write::Writer;

#[test]
fn revision_keys_convert_both_ways() {
    for (main, sub, tomb) in [(1i64, 0i64, false), (300, 7, true), (i64::MAX, 0, false)] {
        let rev = crate::revision::Rev::new(main, sub);
        let e = etcd_rev_key(&rev.key(tomb)).unwrap();
        assert_eq!(e.len(), if tomb { 18 } else { 17 });
        assert_eq!(e[8], b'_');
        assert_eq!(parse_etcd_key(&e), Some((main, sub, tomb)));
    }
    assert_eq!(parse_etcd_key(b"0123456789abcdefg"), None);
    let mut bad = etcd_key(1, 0, true);
    bad[17] = b'x';
    assert_eq!(parse_etcd_key(&bad), None);
}

#[test]
fn member_and_conf_state_json_are_gos() {
    let m = crate::pb::etcdserverpb::Member {
        id: 0x8e9e05c52164694d,
        name: "n\"0".into(),
        peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
        client_ur_ls: vec![],
        is_learner: false,
    };
    assert_eq!(
        String::from_utf8(member_json(&m)).unwrap(),
        r#"{"id":10276657743932975437,"peerURLs":["http://127.0.0.1:2380"],"name":"n\"0"}"#
    );
    use protobuf::Message as _;
    let cs = raft::eraftpb::ConfState {
        voters: vec![1, 2],
        ..Default::default()
    };
    assert_eq!(
        String::from_utf8(conf_state_json(&cs.write_to_bytes().unwrap()).unwrap()).unwrap(),
        r#"{"voters":[1,2],"learners":null,"voters_outgoing":null,"learners_next":null,"auto_leave":false}"#
    );
}

#[test]
fn sniff_tells_formats_apart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    std::fs::write(&p, b"SDSN\x01").unwrap();
    assert_eq!(sniff(&p).unwrap(), Format::Secretd);
    std::fs::write(&p, b"hello").unwrap();
    assert!(sniff(&p)
        .unwrap_err()
        .to_string()
        .contains("neither an etcd snapshot"));
    let w = Writer::create(&p).unwrap();
    w.finish().unwrap();
    assert_eq!(sniff(&p).unwrap(), Format::Etcd);
    // A database without etcd's buckets is refused by name.
    let e = plan(&p).err().unwrap().to_string();
    assert!(e.contains("no \"key\" bucket"), "{e}");
    // A snapshot's sha256 is checked.
    let mut b = std::fs::read(&p).unwrap();
    let digest = Sha256::digest(&b);
    b.extend_from_slice(&digest);
    b[5000] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let e = plan(&p).err().unwrap().to_string();
    assert!(e.contains("sha256 mismatch"), "{e}");
    std::fs::write(&p, &b[..b.len() - 5]).unwrap();
    let e = plan(&p).err().unwrap().to_string();
    assert!(e.contains("truncated?"), "{e}");
}

/// A member's state exported as etcd's database and planned back: every
/// revision, the lease, and secretd's own records (the stamp still
/// matches), with the revisions the member had; and `install` feeds back
/// exactly the keyspace and meta records the state snapshot held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_plan_gives_back_the_state() {
    use crate::pb::etcdserverpb::DeleteRangeRequest;
    use crate::snapshot::SnapshotReader;
    use crate::testing::MemCluster;
    use std::time::Duration;

    let c = MemCluster::start(1, 1);
    c.leader(&[0], Duration::from_secs(10)).await;
    for i in 0..5 {
        c.put(0, &format!("k/{i}"), &format!("v{i}")).await;
    }
    let node = &c.nodes[0];
    node.delete_range(
        DeleteRangeRequest {
            key: b"k/0".to_vec(),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    node.lease_grant(60, 7, None).await.unwrap();
    let state = node.backup().await.unwrap();
    let mut want = Vec::new();
    let mut r = SnapshotReader::open(&state).unwrap();
    while let Some(rec) = r.next_record().unwrap() {
        want.push(rec);
    }

    let out = state.with_extension("db");
    export(&state, &out).unwrap();
    assert_eq!(sniff(&out).unwrap(), Format::Etcd);
    let import = plan(&out).unwrap();
    let s = &import.summary;
    assert_eq!(s.revisions, 6, "five puts and a delete");
    assert_eq!(s.current_revision, node.mvcc().current_revision());
    assert_eq!(s.compact_revision, 0);
    assert_eq!(s.leases, 1);
    assert!(s.secretd_records, "the stamp matches what was exported");
    assert!(s.unhashed, "a bare database, no sha256 trailer");

    let mut got = Vec::new();
    import
        .install(&mut |cf, k, v| {
            got.push((cf, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
