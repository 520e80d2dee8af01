//! Key permissions as sets of key intervals: what one user may read and
//! what it may write, merged over all its roles.
//!
//! etcd's rules (`auth/range_perm_cache.go`): a permission with an empty
//! `range_end` is its single key; `range_end` "\0" runs from `key` to the
//! end of the keyspace; anything else is `[key, range_end)`. A request is
//! allowed only if the union of the user's intervals covers all of the
//! request's interval: a range that reaches one key beyond is refused,
//! never cut down to what the user may see.

use crate::pb::authpb::{permission::Type as PermType, Permission};

/// `[start, end)`, `end == None` meaning "to the end of the keyspace".
type Interval = (Vec<u8>, Option<Vec<u8>>);

/// A key interval from etcd's (key, range_end) pair.
fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    match range_end {
        [] => (key.to_vec(), Some(successor(key))),
        [0] => (key.to_vec(), None),
        end => (key.to_vec(), Some(end.to_vec())),
    }
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// Is `(key, range_end)` a permission etcd would grant? A single key, an
/// open range, or a non-empty `[key, range_end)`.
pub fn is_valid_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

/// Disjoint, sorted, non-touching intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    intervals: Vec<Interval>,
}

impl KeySet {
    fn from_intervals(mut all: Vec<Interval>) -> KeySet {
        all.sort();
        let mut out: Vec<Interval> = Vec::with_capacity(all.len());
        for (start, end) in all {
            if let Some(last) = out.last_mut() {
                let touches = match &last.1 {
                    None => true,
                    Some(last_end) => start <= *last_end,
                };
                if touches {
                    last.1 = match (last.1.take(), end) {
                        (None, _) | (_, None) => None,
                        (Some(a), Some(b)) => Some(a.max(b)),
                    };
                    continue;
                }
            }
            out.push((start, end));
        }
        debug_assert!(out
            .windows(2)
            .all(|w| w[0].1.as_ref().is_some_and(|e| *e < w[1].0)));
        KeySet { intervals: out }
    }

    /// Does the set hold every key of the request's `(key, range_end)`?
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let (start, end) = interval(key, range_end);
        // An empty or inverted range reads nothing, but its first key is
        // still what the caller named: it must be allowed.
        let end = match end {
            Some(e) if e <= start => Some(successor(&start)),
            e => e,
        };
        // The one interval that could hold `start`: the last starting at or
        // before it (intervals are disjoint and do not touch, so a covered
        // range lies inside a single interval).
        let i = self.intervals.partition_point(|(s, _)| *s <= start);
        let Some((_, have_end)) = i.checked_sub(1).map(|i| &self.intervals[i]) else {
            return false;
        };
        match (have_end, &end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(h), Some(e)) => e <= h,
        }
    }
}

/// What one user may read and write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPerms {
    pub read: KeySet,
    pub write: KeySet,
}

impl UserPerms {
    /// Merges the permissions of all of a user's roles.
    pub fn merge<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> UserPerms {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for p in perms {
            let ivl = interval(&p.key, &p.range_end);
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => read.push(ivl),
                Ok(PermType::Write) => write.push(ivl),
                Ok(PermType::Readwrite) => {
                    read.push(ivl.clone());
                    write.push(ivl);
                }
                // Unknown types are refused when granted; one read back
                // from disk grants nothing.
                Err(_) => {}
            }
        }
        UserPerms {
            read: KeySet::from_intervals(read),
            write: KeySet::from_intervals(write),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &[u8], end: &[u8]) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.to_vec(),
            range_end: end.to_vec(),
        }
    }

    #[test]
    fn a_request_must_lie_wholly_inside_what_is_granted() {
        let p = UserPerms::merge(&[
            perm(PermType::Read, b"a", b"c"),
            perm(PermType::Read, b"c", b"e"),
            perm(PermType::Readwrite, b"k", b""),
            perm(PermType::Write, b"w/", b"\0"),
        ]);
        // [a, c) and [c, e) touch: one interval [a, e).
        assert!(p.read.covers(b"a", b"e"));
        assert!(p.read.covers(b"b", b"d"));
        assert!(!p.read.covers(b"a", b"f"), "one key past the grant");
        assert!(!p.read.covers(b"0", b"b"), "starts before the grant");
        assert!(p.read.covers(b"d", b""));
        assert!(!p.read.covers(b"e", b""));
        // A single key: itself only, not its prefix range.
        assert!(p.read.covers(b"k", b""));
        assert!(p.write.covers(b"k", b""));
        assert!(!p.read.covers(b"k", b"l"));
        assert!(!p.read.covers(b"k0", b""));
        // Open-ended.
        assert!(p.write.covers(b"w/x", b""));
        assert!(p.write.covers(b"w/", b"\0"));
        assert!(!p.read.covers(b"w/x", b""), "write does not grant read");
        assert!(!p.write.covers(b"a", b"")); // read does not grant write
        assert!(!p.write.covers(b"w", b"\0"));
        // Everything from "a" on is not covered by [a, e).
        assert!(!p.read.covers(b"a", b"\0"));
        // An inverted range still names its first key.
        assert!(p.read.covers(b"b", b"a"));
        assert!(!UserPerms::default().read.covers(b"a", b""));
    }

    #[test]
    fn overlapping_grants_merge() {
        let s = KeySet::from_intervals(vec![
            (b"a".to_vec(), Some(b"d".to_vec())),
            (b"b".to_vec(), Some(b"c".to_vec())),
            (b"c".to_vec(), None),
            (b"x".to_vec(), Some(b"y".to_vec())),
        ]);
        assert_eq!(s.intervals, vec![(b"a".to_vec(), None)]);
        assert!(s.covers(b"a", b"\0"));
    }

    #[test]
    fn valid_permission_ranges() {
        assert!(is_valid_range(b"a", b""));
        assert!(is_valid_range(b"a", b"\0"));
        assert!(is_valid_range(b"a", b"b"));
        assert!(!is_valid_range(b"b", b"a"));
        assert!(!is_valid_range(b"a", b"a"));
        assert!(!is_valid_range(b"", b""));
    }

    proptest::proptest! {
        /// `covers` agrees with checking every key of a small alphabet.
        #[test]
        fn covers_agrees_with_brute_force(
            grants in proptest::collection::vec((0u8..6, 0u8..7), 0..5),
            req in (0u8..6, 0u8..7),
        ) {
            let key = |b: u8| vec![b'a' + b];
            let perms: Vec<Permission> = grants
                .iter()
                .map(|(k, e)| {
                    let end = match e { 6 => Vec::new(), e => key(*e) };
                    perm(PermType::Read, &key(*k), &end)
                })
                .filter(|p| is_valid_range(&p.key, &p.range_end))
                .collect();
            let p = UserPerms::merge(&perms);
            let (rk, re) = (key(req.0), match req.1 { 6 => Vec::new(), e => key(e) });
            if re.is_empty() || rk < re {
                // Keys of one letter, plus each letter followed by "\0"
                // (the only keys between two letters that matter here).
                let in_req = |k: &[u8]| k >= &rk[..] && if re.is_empty() { k == &rk[..] } else { k < &re[..] };
                let allowed = |k: &[u8]| perms.iter().any(|p| {
                    k >= &p.key[..] && if p.range_end.is_empty() { k == &p.key[..] } else { k < &p.range_end[..] }
                });
                let mut keys: Vec<Vec<u8>> = (0u8..8).map(key).collect();
                keys.extend((0u8..8).map(|b| [key(b), vec![0]].concat()));
                let brute = keys.iter().filter(|k| in_req(k)).all(|k| allowed(k));
                proptest::prop_assert_eq!(p.read.covers(&rk, &re), brute);
            }
        }
    }
}
