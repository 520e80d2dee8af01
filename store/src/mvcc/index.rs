//! The in-memory key index: for every key, the revisions at which it was
//! written, grouped into generations (a generation runs from a key's creation
//! to its deletion). This is etcd's `treeIndex`: values live in RocksDB keyed
//! by revision, and the index says which revision to read.
//!
//! Invariant: within a key, revisions strictly increase across generations;
//! only the last generation may be open (not ended by a tombstone).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::revision::Rev;

#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// Main revision of the put that created the key in this generation.
    pub created: i64,
    /// Number of puts in this generation so far: the key's current version.
    pub version: i64,
    /// Revisions still held (compaction removes the oldest). If `closed`, the
    /// last one is the tombstone.
    pub revs: Vec<Rev>,
    pub closed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    pub generations: Vec<Generation>,
}

/// What a lookup of one key at one revision finds: the revision of the live
/// record to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub modified: Rev,
    pub created: i64,
    pub version: i64,
}

impl KeyIndex {
    pub(crate) fn put(&mut self, rev: Rev) {
        match self.generations.last_mut() {
            Some(g) if !g.closed => {
                assert!(
                    g.revs.last().is_none_or(|l| *l < rev),
                    "revisions must increase"
                );
                g.revs.push(rev);
                g.version += 1;
            }
            _ => self.generations.push(Generation {
                created: rev.main,
                version: 1,
                revs: vec![rev],
                closed: false,
            }),
        }
    }

    fn tombstone(&mut self, rev: Rev) {
        let g = self
            .generations
            .last_mut()
            .filter(|g| !g.closed)
            .expect("tombstone only a live key");
        assert!(
            g.revs.last().is_none_or(|l| *l < rev),
            "revisions must increase"
        );
        g.revs.push(rev);
        g.closed = true;
    }

    /// The live record at `at` (main revision), if any.
    pub fn get(&self, at: i64) -> Option<Found> {
        for g in self.generations.iter().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if first.main > at {
                continue;
            }
            // The newest revision of this generation at or before `at`.
            let pos = g.revs.partition_point(|r| r.main <= at);
            let r = g.revs[pos - 1];
            if g.closed && pos == g.revs.len() {
                return None; // deleted at or before `at`
            }
            // Versions count puts since creation; compaction may have dropped
            // early revisions, so count back from the newest put.
            let puts_after = (g.revs.len() - pos) - usize::from(g.closed);
            return Some(Found {
                modified: r,
                created: g.created,
                version: g.version - puts_after as i64,
            });
        }
        None
    }

    /// The key's current live generation, if the key exists now.
    /// The key's newest revision (a tombstone's, if it was deleted last).
    pub fn newest(&self) -> Option<Rev> {
        self.generations.last().and_then(|g| g.revs.last()).copied()
    }

    pub fn live(&self) -> Option<&Generation> {
        self.generations.last().filter(|g| !g.closed)
    }

    /// Drops every revision not needed to answer reads at `at` or later.
    /// Returns the dropped revisions with their tombstone flag.
    fn compact(&mut self, at: i64, dropped: &mut Vec<(Rev, bool)>) {
        let mut keep = Vec::with_capacity(self.generations.len());
        for mut g in std::mem::take(&mut self.generations) {
            let pos = g.revs.partition_point(|r| r.main <= at);
            if g.closed && pos == g.revs.len() {
                // Deleted at or before `at`: nothing in it is visible any more.
                let last = g.revs.len() - 1;
                dropped.extend(g.revs.iter().enumerate().map(|(i, r)| (*r, i == last)));
                continue;
            }
            if pos > 1 {
                dropped.extend(g.revs.drain(..pos - 1).map(|r| (r, false)));
            }
            keep.push(g);
        }
        self.generations = keep;
    }
}

/// All keys of the keyspace, ordered.
#[derive(Default)]
pub struct Index {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
    /// Reads below this revision fail with `Compacted`.
    pub compact_rev: i64,
}

impl Index {
    pub fn put(&mut self, key: &[u8], rev: Rev) {
        self.entry(key).put(rev);
    }

    /// `key`'s entry, found or made in one search (copying the key costs
    /// less than searching twice). A made entry has no generation until
    /// its first `KeyIndex::put`, which must follow.
    pub(crate) fn entry(&mut self, key: &[u8]) -> &mut KeyIndex {
        self.keys.entry(key.to_vec()).or_default()
    }

    pub fn tombstone(&mut self, key: &[u8], rev: Rev) {
        if let Some(ki) = self.keys.get_mut(key) {
            ki.tombstone(rev);
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Keys in `[key, range_end)` with etcd's conventions: an empty
    /// `range_end` means the single key, `"\0"` means every key >= `key`.
    pub fn range<'a>(
        &'a self,
        key: &'a [u8],
        range_end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Vec<u8>, &'a KeyIndex)> + 'a> {
        if range_end.is_empty() {
            return Box::new(self.keys.get_key_value(key).into_iter());
        }
        let end = if range_end == [0] {
            Bound::Unbounded
        } else if range_end <= key {
            return Box::new(std::iter::empty());
        } else {
            Bound::Excluded(range_end)
        };
        Box::new(self.keys.range::<[u8], _>((Bound::Included(key), end)))
    }

    /// Compacts every key at `at`; returns the records to delete from disk.
    pub fn compact(&mut self, at: i64) -> Vec<(Rev, bool)> {
        assert!(at >= self.compact_rev, "compaction never goes backwards");
        let mut dropped = Vec::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut dropped);
            !ki.generations.is_empty()
        });
        self.compact_rev = at;
        dropped
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Rebuilds the index entry of one put read back from disk at start.
    /// Creation and version come from the record itself, since compaction
    /// may have dropped the revisions they were counted from.
    /// The index of a store's records, given in key then revision order
    /// (`by_key_rev`: a restart sorts what it reads, an install's runs are
    /// sorted while it reads, `runs::merged`): each key's history replayed
    /// alone, and the tree built from sorted keys in one pass. Inserting
    /// record by record in revision order visits the keys in random order,
    /// a cache miss per tree level per record: the cost that made a restart
    /// grow faster than the data. Calls `last` with each key's newest
    /// record (the caller's lease attachment).
    pub fn restore_sorted(
        records: impl Iterator<Item = Restored>,
        compact_rev: i64,
        mut last: impl FnMut(&Restored),
    ) -> Index {
        let mut keys: Vec<(Vec<u8>, KeyIndex)> = Vec::new();
        let mut records = records.peekable();
        while let Some(first) = records.next() {
            let mut ki: Option<KeyIndex> = None;
            let mut r = first;
            loop {
                ki = replay(ki, &r);
                match records.peek() {
                    Some(next) if next.key == r.key => {
                        r = records.next().expect("peeked");
                    }
                    _ => break,
                }
            }
            last(&r);
            if let Some(ki) = ki {
                keys.push((r.key, ki));
            }
        }
        Index {
            keys: keys.into_iter().collect(),
            compact_rev,
        }
    }
}

/// The index's order: by key, then revision.
pub fn by_key_rev(a: &Restored, b: &Restored) -> std::cmp::Ordering {
    a.key.cmp(&b.key).then(a.rev.cmp(&b.rev))
}

/// One record of the kv column family, as a restart reads it.
pub struct Restored {
    pub key: Vec<u8>,
    pub rev: Rev,
    pub tombstone: bool,
    pub created: i64,
    pub version: i64,
    pub lease: i64,
}

/// One record applied to its key's history, as the old replay
/// (`Index::restore_put`, kept for the test) and `Index::tombstone` apply
/// it (a tombstone of a key not in the index is ignored, as there).
fn replay(ki: Option<KeyIndex>, r: &Restored) -> Option<KeyIndex> {
    if r.tombstone {
        let mut ki = ki?;
        ki.tombstone(r.rev);
        return Some(ki);
    }
    let mut ki = ki.unwrap_or_default();
    ki.put(r.rev);
    if let Some(g) = ki.generations.last_mut() {
        g.created = r.created;
        g.version = r.version;
    }
    Some(ki)
}

#[cfg(test)]
impl Index {
    /// The record-by-record replay a restart did before `Index::restore_sorted`:
    /// the reference `restore` is tested against.
    fn restore_put(&mut self, key: &[u8], rev: Rev, created: i64, version: i64) {
        self.put(key, rev);
        if let Some(g) = self
            .keys
            .get_mut(key)
            .and_then(|ki| ki.generations.last_mut())
        {
            g.created = created;
            g.version = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restart's bulk build is the record-by-record replay it replaced:
    /// the same generations per key, and the same newest record per key.
    #[test]
    fn restore_builds_what_replaying_in_revision_order_builds() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut replayed, mut records) = (Index::default(), Vec::new());
        let mut newest = std::collections::BTreeMap::new();
        for main in 2..3000i64 {
            let key = format!("k{:02}", next() % 40).into_bytes();
            let live = replayed
                .get(&key)
                .and_then(|ki| ki.generations.last())
                .is_some_and(|g| !g.closed);
            let tombstone = live && next() % 4 == 0;
            let rev = Rev::new(main, 0);
            let (created, version, lease) = (main - 1, (next() % 9) as i64, (next() % 3) as i64);
            if tombstone {
                replayed.tombstone(&key, rev);
            } else {
                replayed.restore_put(&key, rev, created, version);
            }
            newest.insert(key.clone(), (tombstone, lease));
            records.push(Restored {
                key,
                rev,
                tombstone,
                created,
                version,
                lease,
            });
        }
        let mut seen = std::collections::BTreeMap::new();
        records.sort_unstable_by(by_key_rev);
        let built = Index::restore_sorted(records.into_iter(), 7, |r| {
            assert!(
                seen.insert(r.key.clone(), (r.tombstone, r.lease)).is_none(),
                "one call per key"
            );
        });
        assert_eq!(seen, newest);
        assert_eq!(built.compact_rev, 7);
        assert_eq!(built.keys.len(), replayed.keys.len());
        for (k, ki) in &replayed.keys {
            assert_eq!(format!("{:?}", built.keys[k]), format!("{ki:?}"), "{k:?}");
        }
    }

    #[test]
    fn generations_and_lookup_at_revisions() {
        let mut idx = Index::default();
        idx.put(b"a", Rev::new(2, 0));
        idx.put(b"a", Rev::new(3, 0));
        idx.tombstone(b"a", Rev::new(4, 0));
        idx.put(b"a", Rev::new(6, 0));
        let ki = idx.get(b"a").unwrap();
        assert_eq!(ki.get(1), None);
        assert_eq!(ki.get(2).unwrap().version, 1);
        let f = ki.get(3).unwrap();
        assert_eq!((f.modified.main, f.created, f.version), (3, 2, 2));
        assert_eq!(ki.get(4), None);
        assert_eq!(ki.get(5), None);
        let f = ki.get(9).unwrap();
        assert_eq!((f.modified.main, f.created, f.version), (6, 6, 1));
    }

    #[test]
    fn compaction_keeps_answers_at_and_after_the_compacted_revision() {
        let mut idx = Index::default();
        for m in 2..=5 {
            idx.put(b"k", Rev::new(m, 0));
        }
        idx.put(b"gone", Rev::new(6, 0));
        idx.tombstone(b"gone", Rev::new(7, 0));
        let before: Vec<_> = (4..=8).map(|r| idx.get(b"k").unwrap().get(r)).collect();
        let dropped = idx.compact(7);
        let after: Vec<_> = (4..=8).map(|r| idx.get(b"k").unwrap().get(r)).collect();
        // Answers at revisions >= 7 are unchanged; version survives compaction.
        assert_eq!(before[3..], after[3..]);
        assert_eq!(after[4].unwrap().version, 4);
        assert!(idx.get(b"gone").is_none());
        assert_eq!(dropped.len(), 3 + 2);
    }
}
