//! Installing a snapshot in one pass: nothing replaced until the file is
//! read whole and its trailer matches, and a snapshot with more meta
//! records than the pass holds falls back to checking first.

use super::tests::Harness;
use super::*;
use crate::pb::etcdserverpb::{LeaseGrantRequest, PutRequest};
use crate::pb::internal::internal_request::Request;
use crate::snapshot::SnapshotHeader;

fn put(h: &mut Harness, k: &str, v: &str) {
    h.apply(Request::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }))
    .unwrap();
}

/// A snapshot of a keyspace with `keys` keys and `leases` leases.
fn snapshot_of(keys: usize, leases: i64) -> (Harness, std::path::PathBuf) {
    let mut h = Harness::open(tempfile::tempdir().unwrap());
    for i in 0..keys {
        put(&mut h, &format!("src{i:04}"), &format!("v{i}"));
    }
    for id in 1..=leases {
        h.apply(Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id }))
            .unwrap();
    }
    let header = SnapshotHeader {
        index: 7,
        term: 2,
        conf_state: Vec::new(),
    };
    let mut w = SnapshotWriter::create(h.dir.path(), &header).unwrap();
    h.applier.mvcc.write_snapshot(&mut w, &mut || {}).unwrap();
    let path = w.finish().unwrap();
    (h, path)
}

fn kv_keys(db: &Db) -> Vec<Vec<u8>> {
    db.iterator_cf(db.cf(CF_KV), IteratorMode::Start)
        .map(|item| item.unwrap().0.to_vec())
        .collect()
}

#[test]
fn a_snapshot_is_installed_in_one_pass_and_a_corrupt_one_replaces_nothing() {
    let (src, path) = snapshot_of(200, 3);
    let mut dst = Harness::open(tempfile::tempdir().unwrap());
    for i in 0..10 {
        put(&mut dst, &format!("old{i}"), "x");
    }
    let db = dst.applier.mvcc.db.clone();
    let before = kv_keys(&db);
    let bytes = std::fs::read(&path).unwrap();
    let bad = path.with_extension("bad");
    for at in [bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        std::fs::write(&bad, &b).unwrap();
        let mut started = 0;
        let mut r = SnapshotReader::open(&bad).unwrap();
        let got = install_records_checked(&db, &mut r, &mut || {
            started += 1;
            Ok(())
        });
        assert!(got.is_err(), "a flip at {at} was installed");
        assert_eq!(started, 0, "a flip at {at} began replacing");
        assert_eq!(kv_keys(&db), before, "a flip at {at} replaced records");
    }
    let mut started = 0;
    let mut r = SnapshotReader::open(&path).unwrap();
    let installed = install_records_checked(&db, &mut r, &mut || {
        started += 1;
        Ok(())
    })
    .unwrap()
    .expect("three leases are held");
    assert_eq!(started, 1);
    assert_eq!(kv_keys(&db), kv_keys(&src.applier.mvcc.db));
    dst.applier.mvcc.reload_installed(installed).unwrap();
    assert_eq!(dst.applier.mvcc.key_count(), 200);
    assert_eq!(dst.applier.mvcc.lessor().len(), 3);
}

#[test]
fn more_meta_than_one_pass_holds_is_checked_first_then_installed() {
    // Each lease record is tens of bytes: past the tests' 64 KiB.
    let (src, path) = snapshot_of(20, 3_000);
    let dst = Harness::open(tempfile::tempdir().unwrap());
    let db = dst.applier.mvcc.db.clone();
    let mut started = 0;
    let mut r = SnapshotReader::open(&path).unwrap();
    let held = install_records_checked(&db, &mut r, &mut || {
        started += 1;
        Ok(())
    })
    .unwrap();
    assert!(held.is_none() && started == 0);
    assert!(kv_keys(&db).is_empty());
    let installed = install_records(&db, &mut SnapshotReader::open(&path).unwrap()).unwrap();
    assert_eq!(kv_keys(&db), kv_keys(&src.applier.mvcc.db));
    dst.applier.mvcc.reload_installed(installed).unwrap();
    assert_eq!(dst.applier.mvcc.lessor().len(), 3_000);
}
