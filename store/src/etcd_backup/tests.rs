//! Export and import against each other on a real member's state (the
//! round trips through etcd's binaries are `api/tests/it/etcd_format.rs`).

use super::*;

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
