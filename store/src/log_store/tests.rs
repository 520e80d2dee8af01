use super::migrate::{entry_key, read_old_log, KEY_CONF_STATE, KEY_HARD_STATE, KEY_SNAPSHOT_META};
use super::*;
use crate::db::CF_RAFT;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: vec![index as u8; 3].into(),
        ..Default::default()
    }
}

#[test]
fn append_truncate_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut s = LogStore::open(db.clone()).unwrap();
    let mut b = WriteBatch::default();
    s.bootstrap(vec![1, 2, 3], &mut b).unwrap();
    // The configuration is entry 1: the log proper starts at 2.
    assert_eq!(
        (
            s.first_index().unwrap(),
            s.last_index().unwrap(),
            s.term(1).unwrap()
        ),
        (2, 1, 1)
    );
    s.append(&(2..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
        .unwrap();
    db.write_sync(b).unwrap();
    s.persist(true).unwrap();
    // A new leader overwrites 5..: entry 6 must disappear.
    let b = WriteBatch::default();
    s.append(&[entry(5, 2)]).unwrap();
    let hs = HardState {
        term: 2,
        commit: 5,
        ..Default::default()
    };
    s.set_hard_state(hs).unwrap();
    db.write_sync(b).unwrap();
    s.persist(true).unwrap();
    assert_eq!(s.last_index().unwrap(), 5);
    // From the cache, then (below) from disk.
    let index_terms = |s: &LogStore| {
        s.entries(3, 6, None, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect::<Vec<_>>()
    };
    assert_eq!(index_terms(&s), vec![(3, 1), (4, 1), (5, 2)]);
    drop(s);
    let mut s = LogStore::open(db).unwrap();
    // From disk: the cache is warmed at open, and is checked above.
    s.cache.clear();
    assert_eq!(s.last_index().unwrap(), 5);
    assert_eq!(s.term(5).unwrap(), 2);
    assert_eq!(s.term(4).unwrap(), 1);
    assert_eq!(s.hard_state().commit, 5);
    assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
    assert_eq!(index_terms(&s), vec![(3, 1), (4, 1), (5, 2)]);
    // A size limit still returns at least one entry.
    assert_eq!(
        s.entries(3, 6, 1, GetEntriesContext::empty(false))
            .unwrap()
            .len(),
        1
    );
    assert!(s.term(9).is_err());
    assert!(
        s.entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err(),
        "entry 1 is never served"
    );
}

/// Whatever appends, overwrites and compactions happen, every read
/// answers the same from the cache as from disk.
#[test]
fn cache_answers_as_disk_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let mut s = LogStore::open(db.clone()).unwrap();
    let mut b = WriteBatch::default();
    s.bootstrap(vec![1], &mut b).unwrap();
    db.write_sync(b).unwrap();
    s.persist(true).unwrap();
    let mut term = 1;
    let mut seed = 7u64;
    let mut rand = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..200u64 {
        let b = WriteBatch::default();
        let last = s.last_index().unwrap();
        let first = s.first_index().unwrap();
        // Mostly appends; sometimes a new leader overwrites a tail.
        let at = if rand(5) == 0 && last >= first {
            term += 1;
            first + rand(last - first + 1)
        } else {
            last + 1
        };
        let n = 1 + rand(20);
        let es: Vec<Entry> = (at..at + n)
            .map(|i| Entry {
                index: i,
                term,
                data: vec![round as u8; rand(300) as usize].into(),
                ..Default::default()
            })
            .collect();
        s.append(&es).unwrap();
        let (lo, last) = (s.first_index().unwrap(), s.last_index().unwrap());
        if rand(10) == 0 && last >= lo {
            let to = lo + rand(last - lo + 1);
            s.set_applied(to);
            s.compact(to).unwrap();
        }
        db.write_sync(b).unwrap();
        s.persist(true).unwrap();
        let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
        if lo == hi {
            continue;
        }
        // A reopened store (cache warmed by the open scan) and one
        // reading from disk alone.
        let warm = LogStore::open(db.clone()).unwrap();
        let mut fresh = LogStore::open(db.clone()).unwrap();
        fresh.cache.clear();
        for _ in 0..5 {
            let low = lo + rand(hi - lo);
            let high = low + 1 + rand(hi - low);
            let max = if rand(3) == 0 { Some(rand(2000)) } else { None };
            let cached = s
                .entries(low, high, max, GetEntriesContext::empty(false))
                .unwrap();
            let disk = fresh
                .entries(low, high, None, GetEntriesContext::empty(false))
                .unwrap();
            let reopened = warm
                .entries(low, high, max, GetEntriesContext::empty(false))
                .unwrap();
            assert_eq!(cached, reopened, "round {round}: {low}..{high}");
            assert!(!cached.is_empty());
            assert_eq!(
                cached[..],
                disk[..cached.len()],
                "round {round}: {low}..{high}"
            );
            if max.is_none() {
                assert_eq!(cached.len() as u64, high - low);
            }
        }
    }
}

/// A data directory from before the segment files: its log, hard
/// state and configuration move out of the `raft` column family.
#[test]
fn an_old_log_in_rocksdb_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let cf = db.cf(CF_RAFT);
    let mut b = WriteBatch::default();
    let hs = HardState {
        term: 3,
        vote: 2,
        commit: 8,
        ..Default::default()
    };
    b.put_cf(cf, KEY_HARD_STATE, hs.write_to_bytes().unwrap());
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    b.put_cf(cf, KEY_CONF_STATE, cs.write_to_bytes().unwrap());
    let mut snap = [0u8; 16];
    snap[..8].copy_from_slice(&4u64.to_be_bytes());
    snap[8..].copy_from_slice(&2u64.to_be_bytes());
    b.put_cf(cf, KEY_SNAPSHOT_META, snap);
    for i in 5..=9 {
        b.put_cf(cf, entry_key(i), entry(i, 3).write_to_bytes().unwrap());
    }
    b.put_cf(db.cf(CF_META), meta::APPLIED, 7u64.to_be_bytes());
    db.write_sync(b).unwrap();
    for _ in 0..2 {
        // Twice: the second open finds the segments and migrates nothing.
        let s = LogStore::open(db.clone()).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (5, 9));
        assert_eq!(s.term(4).unwrap(), 2);
        assert_eq!(s.hard_state(), &hs);
        assert_eq!(s.conf_state().voters, vec![1, 2, 3]);
        let got = s
            .entries(5, 10, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got, (5..=9).map(|i| entry(i, 3)).collect::<Vec<_>>());
        assert!(read_old_log(&db).unwrap().is_none(), "the old log is gone");
    }
}
