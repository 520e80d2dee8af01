//! Strict serializability of list-append transactions, reduced to checks
//! on etcd's revisions (not an Elle cycle search).
//!
//! Every committed etcd txn has a revision, and revisions totally order
//! the writes. So a history of append/read txns is strictly serializable
//! exactly when that order (a) is consistent with real time, (b) is the
//! order of the appends in every list, (c) explains every read: a read at
//! revision R sees exactly the appends committed at or before R, and (d)
//! no acknowledged append is lost, nothing appears that nobody appended,
//! and no transaction is half applied. Transactions with an unknown
//! outcome have no revision; they must fit somewhere: between the
//! acknowledged appends around them, at one point for all their keys.

use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct Txn {
    /// Where it was invoked in the history (for messages).
    pub line: usize,
    /// `Some(revision)` when acknowledged, `None` when the outcome is unknown.
    pub revision: Option<i64>,
    pub invoke: u64,
    pub complete: u64,
    /// (key, list read); reads come before the txn's own appends.
    pub reads: Vec<(String, Vec<String>)>,
    /// (key, appended element); elements are unique in a history.
    pub appends: Vec<(String, String)>,
}

impl Txn {
    /// The revision its reads saw: a writing txn reads the state before
    /// its own commit.
    fn read_revision(&self) -> Option<i64> {
        self.revision
            .map(|r| if self.appends.is_empty() { r } else { r - 1 })
    }
}

/// Who appended what: (key, value) to the index of its txn.
type Origin<'a> = HashMap<(&'a str, &'a str), usize>;
type Finals = BTreeMap<String, Vec<String>>;

/// Anomalies found, each one line; empty when the history is strictly
/// serializable.
pub fn check(txns: &[Txn], finals: &Finals) -> Vec<String> {
    let mut out = Vec::new();
    let mut origin: Origin = HashMap::new();
    for (i, t) in txns.iter().enumerate() {
        for (k, v) in &t.appends {
            origin.insert((k.as_str(), v.as_str()), i);
        }
    }
    final_lists(txns, finals, &origin, &mut out);
    unique_revisions(txns, &mut out);
    real_time(txns, &mut out);
    list_order(txns, finals, &origin, &mut out);
    reads(txns, finals, &origin, &mut out);
    out
}

/// (d) Final lists: no duplicates, no phantoms, no lost or half txns.
fn final_lists(txns: &[Txn], finals: &Finals, origin: &Origin, out: &mut Vec<String>) {
    let mut position: HashMap<(&str, &str), usize> = HashMap::new();
    for (k, list) in finals {
        for (p, v) in list.iter().enumerate() {
            if position.insert((k.as_str(), v.as_str()), p).is_some() {
                out.push(format!("duplicate: {v} appears twice in {k}"));
            }
            if !origin.contains_key(&(k.as_str(), v.as_str())) {
                out.push(format!("phantom: {v} in {k} was never appended"));
            }
        }
    }
    for t in txns {
        let present: Vec<bool> = t
            .appends
            .iter()
            .map(|(k, v)| position.contains_key(&(k.as_str(), v.as_str())))
            .collect();
        if t.revision.is_some() {
            for ((k, v), here) in t.appends.iter().zip(&present) {
                if !here {
                    out.push(format!(
                        "lost write: the acknowledged append of {v} to {k} (line {}) is not in the final read",
                        t.line
                    ));
                }
            }
        } else if present.iter().any(|p| *p) && !present.iter().all(|p| *p) {
            out.push(format!(
                "partial transaction: line {} is applied to some of its keys only",
                t.line
            ));
        }
    }
}

/// Write revisions are unique.
fn unique_revisions(txns: &[Txn], out: &mut Vec<String>) {
    let mut by_revision: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        if let (Some(r), false) = (t.revision, t.appends.is_empty()) {
            if let Some(j) = by_revision.insert(r, i) {
                out.push(format!(
                    "two writing transactions (lines {} and {}) committed at revision {r}",
                    txns[j].line, t.line
                ));
            }
        }
    }
}

/// (a) Real time: a txn invoked after another completed has a revision at
/// least as high.
fn real_time(txns: &[Txn], out: &mut Vec<String>) {
    let mut done: Vec<&Txn> = txns.iter().filter(|t| t.revision.is_some()).collect();
    done.sort_by_key(|t| t.complete);
    let mut started: Vec<&Txn> = done.clone();
    started.sort_by_key(|t| t.invoke);
    let (mut j, mut max_rev, mut max_line) = (0, i64::MIN, 0);
    for t in &started {
        while j < done.len() && done[j].complete < t.invoke {
            if done[j].revision.unwrap_or(0) > max_rev {
                max_rev = done[j].revision.unwrap_or(0);
                max_line = done[j].line;
            }
            j += 1;
        }
        if t.revision.unwrap_or(0) < max_rev {
            out.push(format!(
                "real-time order: line {} began after line {max_line} completed at revision {max_rev}, yet has revision {}",
                t.line,
                t.revision.unwrap_or(0)
            ));
        }
    }
}

/// (b) Acknowledged appends sit in each list in revision order; and where
/// unknown ones sit bounds their revision.
fn list_order(txns: &[Txn], finals: &Finals, origin: &Origin, out: &mut Vec<String>) {
    let mut bounds: HashMap<usize, (i64, i64)> = HashMap::new();
    for (k, list) in finals {
        let revs: Vec<Option<i64>> = list
            .iter()
            .map(|v| {
                origin
                    .get(&(k.as_str(), v.as_str()))
                    .and_then(|&i| txns[i].revision)
            })
            .collect();
        let mut last: Option<(i64, &str)> = None;
        for (v, r) in list.iter().zip(&revs) {
            if let Some(r) = r {
                if let Some((lr, lv)) = last {
                    if *r < lr {
                        out.push(format!(
                            "order: in {k}, {v} (revision {r}) comes after {lv} (revision {lr})"
                        ));
                    }
                }
                last = Some((*r, v));
            }
        }
        for (p, v) in list.iter().enumerate() {
            let Some(&i) = origin.get(&(k.as_str(), v.as_str())) else {
                continue;
            };
            if txns[i].revision.is_some() {
                continue;
            }
            let lo = revs[..p].iter().flatten().max().copied().unwrap_or(0);
            let hi = revs[p + 1..]
                .iter()
                .flatten()
                .min()
                .copied()
                .unwrap_or(i64::MAX);
            let b = bounds.entry(i).or_insert((i64::MIN, i64::MAX));
            b.0 = b.0.max(lo);
            b.1 = b.1.min(hi);
        }
    }
    for (i, (lo, hi)) in bounds {
        if lo >= hi {
            out.push(format!(
                "unknown transaction at line {} would need a revision above {lo} and below {hi}",
                txns[i].line
            ));
        }
    }
}

/// (c) Reads see exactly what committed up to their revision.
fn reads(txns: &[Txn], finals: &Finals, origin: &Origin, out: &mut Vec<String>) {
    for t in txns {
        let Some(rr) = t.read_revision() else {
            continue;
        };
        for (k, seen) in &t.reads {
            let fin = finals.get(k).map(Vec::as_slice).unwrap_or(&[]);
            if !fin.starts_with(seen) {
                out.push(format!(
                    "read at line {} of {k} is not a prefix of the final list",
                    t.line
                ));
                continue;
            }
            for v in fin {
                let Some(&i) = origin.get(&(k.as_str(), v.as_str())) else {
                    continue;
                };
                let Some(r) = txns[i].revision else {
                    continue;
                };
                let visible = seen.contains(v);
                if r <= rr && !visible {
                    out.push(format!(
                        "stale read at line {}: {k} misses {v}, committed at revision {r} <= {rr}",
                        t.line
                    ));
                    break;
                }
                if r > rr && visible {
                    out.push(format!(
                        "future read at line {}: {k} shows {v}, committed at revision {r} > {rr}",
                        t.line
                    ));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        line: usize,
        rev: Option<i64>,
        span: (u64, u64),
        reads: &[(&str, &[&str])],
        appends: &[(&str, &str)],
    ) -> Txn {
        Txn {
            line,
            revision: rev,
            invoke: span.0,
            complete: span.1,
            reads: reads
                .iter()
                .map(|(k, l)| (k.to_string(), l.iter().map(|s| s.to_string()).collect()))
                .collect(),
            appends: appends
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn finals(lists: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        lists
            .iter()
            .map(|(k, l)| (k.to_string(), l.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_serial_history_passes() {
        let h = vec![
            t(1, Some(2), (0, 1), &[], &[("a", "1"), ("b", "1")]),
            t(2, Some(3), (2, 3), &[("a", &["1"])], &[("a", "2")]),
            t(
                3,
                Some(3),
                (4, 5),
                &[("a", &["1", "2"]), ("b", &["1"])],
                &[],
            ),
            t(4, None, (6, 7), &[], &[("b", "2")]),
        ];
        assert!(check(&h, &finals(&[("a", &["1", "2"]), ("b", &["1", "2"])])).is_empty());
    }

    #[test]
    fn anomalies_are_named() {
        let h = vec![
            t(1, Some(5), (0, 1), &[], &[("a", "1")]),
            t(2, Some(4), (2, 3), &[("a", &[])], &[("a", "2")]),
            t(3, Some(6), (4, 5), &[("a", &["1"])], &[]),
            t(4, None, (6, 7), &[], &[("a", "3"), ("b", "3")]),
            t(5, Some(7), (8, 9), &[], &[("b", "4")]),
        ];
        let out = check(&h, &finals(&[("a", &["1", "2", "3", "9"]), ("b", &[])]));
        let text = out.join("\n");
        for want in [
            "phantom: 9",
            "lost write",
            "partial transaction",
            "real-time order",
            "order: in a",
            "stale read at line 3",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
