//! The watch checker: what etcd promises a watcher, checked against the
//! committed history (every event by revision, read back at the end).
//!
//! - ordered: revisions never go back;
//! - unique: no (revision, key) event twice;
//! - atomic: all events of one revision arrive in one response;
//! - reliable: every committed event in the watched range from the start
//!   revision up to the last revision the watcher heard of arrives, exactly
//!   as committed, and nothing else does;
//! - progress: after a progress notification at revision P, no event at or
//!   below P arrives, and every one at or below P had arrived;
//! - agreement: watchers of the same range see the same events over the
//!   revisions they all covered.
//!
//! Resumption is checked by recording the resumed watch as its own watcher
//! (start = last revision seen + 1): reliability then covers the gap.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Event {
    pub revision: i64,
    pub key: String,
    pub kind: Kind,
    /// The value written (None for deletes).
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The response header's revision.
    pub revision: i64,
    pub events: Vec<Event>,
    /// A progress notification (no events): everything up to `revision`
    /// has been delivered.
    pub progress: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherLog {
    pub name: String,
    pub key: String,
    /// etcd's convention: empty means the single key, "\0" means every key
    /// from `key` on.
    pub range_end: String,
    pub start_revision: i64,
    pub responses: Vec<Response>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub watcher: String,
    pub guarantee: &'static str,
    pub detail: String,
}

fn in_range(k: &str, key: &str, end: &str) -> bool {
    if end.is_empty() {
        return k == key;
    }
    k >= key && (end == "\0" || k < end)
}

/// Checks every watcher against `committed` (all events, any key, by
/// revision) and against each other.
pub fn check(watchers: &[WatcherLog], committed: &[Event]) -> Vec<Violation> {
    let mut out = Vec::new();
    let truth: HashSet<&Event> = committed.iter().collect();
    for w in watchers {
        check_one(w, committed, &truth, &mut out);
    }
    check_agreement(watchers, &mut out);
    out
}

fn violation(out: &mut Vec<Violation>, w: &WatcherLog, guarantee: &'static str, detail: String) {
    out.push(Violation {
        watcher: w.name.clone(),
        guarantee,
        detail,
    });
}

/// The last revision this watcher is known to have been told about.
fn covered_up_to(w: &WatcherLog) -> i64 {
    w.responses
        .iter()
        .map(|r| {
            if r.progress {
                r.revision
            } else {
                r.events.iter().map(|e| e.revision).max().unwrap_or(0)
            }
        })
        .max()
        .unwrap_or(0)
}

/// What one watcher's stream has shown so far.
struct Seen<'a> {
    last: i64,
    keys: HashSet<(i64, &'a str)>,
    response_of_rev: HashMap<i64, usize>,
    progress_floor: i64,
    delivered: HashSet<&'a Event>,
}

/// Committed events the watch covers up to `upto` that it did not deliver.
fn missed<'a>(
    w: &'a WatcherLog,
    committed: &'a [Event],
    delivered: &'a HashSet<&'a Event>,
    upto: i64,
) -> impl Iterator<Item = &'a Event> {
    committed.iter().filter(move |e| {
        e.revision >= w.start_revision
            && e.revision <= upto
            && in_range(&e.key, &w.key, &w.range_end)
            && !delivered.contains(e)
    })
}

fn check_one(
    w: &WatcherLog,
    committed: &[Event],
    truth: &HashSet<&Event>,
    out: &mut Vec<Violation>,
) {
    let mut seen = Seen {
        last: i64::MIN,
        keys: HashSet::new(),
        response_of_rev: HashMap::new(),
        progress_floor: i64::MIN,
        delivered: HashSet::new(),
    };
    for (i, r) in w.responses.iter().enumerate() {
        if r.progress {
            // Everything in range up to P must have arrived by now.
            for e in missed(w, committed, &seen.delivered, r.revision) {
                violation(
                    out,
                    w,
                    "progress",
                    format!("progress at {} before event {:?} arrived", r.revision, e),
                );
            }
            seen.progress_floor = seen.progress_floor.max(r.revision);
            continue;
        }
        for e in &r.events {
            check_event(w, i, e, &mut seen, truth, out);
        }
    }
    let upto = covered_up_to(w);
    for e in missed(w, committed, &seen.delivered, upto) {
        violation(
            out,
            w,
            "reliable",
            format!("missed {:?} (watch covered up to {upto})", e),
        );
    }
}

/// One delivered event `e` of response `i`: ordered, unique, atomic per
/// revision, after no progress notice that covered it, inside the watch,
/// and committed.
fn check_event<'a>(
    w: &WatcherLog,
    i: usize,
    e: &'a Event,
    seen: &mut Seen<'a>,
    truth: &HashSet<&Event>,
    out: &mut Vec<Violation>,
) {
    if e.revision < seen.last {
        violation(
            out,
            w,
            "ordered",
            format!("revision {} after {}", e.revision, seen.last),
        );
    }
    seen.last = seen.last.max(e.revision);
    if !seen.keys.insert((e.revision, e.key.as_str())) {
        violation(out, w, "unique", format!("{:?} delivered twice", e));
    }
    if let Some(prev) = seen.response_of_rev.insert(e.revision, i) {
        if prev != i {
            violation(
                out,
                w,
                "atomic",
                format!(
                    "revision {} split over responses {prev} and {i}",
                    e.revision
                ),
            );
        }
    }
    if e.revision <= seen.progress_floor {
        violation(
            out,
            w,
            "progress",
            format!("{:?} arrived after progress at {}", e, seen.progress_floor),
        );
    }
    if e.revision < w.start_revision || !in_range(&e.key, &w.key, &w.range_end) {
        violation(out, w, "reliable", format!("{:?} is outside the watch", e));
    } else if !truth.contains(e) {
        violation(out, w, "reliable", format!("{:?} was never committed", e));
    }
    seen.delivered.insert(e);
}

fn check_agreement(watchers: &[WatcherLog], out: &mut Vec<Violation>) {
    let mut groups: BTreeMap<(&str, &str), Vec<&WatcherLog>> = BTreeMap::new();
    for w in watchers {
        groups
            .entry((w.key.as_str(), w.range_end.as_str()))
            .or_default()
            .push(w);
    }
    for ws in groups.values().filter(|ws| ws.len() > 1) {
        let from = ws.iter().map(|w| w.start_revision).max().unwrap_or(0);
        let to = ws.iter().map(|w| covered_up_to(w)).min().unwrap_or(0);
        let window = |w: &WatcherLog| -> Vec<Event> {
            w.responses
                .iter()
                .flat_map(|r| r.events.iter())
                .filter(|e| e.revision >= from && e.revision <= to)
                .cloned()
                .collect()
        };
        let reference = window(ws[0]);
        for w in &ws[1..] {
            if window(w) != reference {
                out.push(Violation {
                    watcher: w.name.clone(),
                    guarantee: "agreement",
                    detail: format!(
                        "sees different events than {} over revisions {from}..={to}",
                        ws[0].name
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, k: &str, v: &str) -> Event {
        Event {
            revision: rev,
            key: k.into(),
            kind: Kind::Put,
            value: Some(v.into()),
        }
    }

    fn resp(events: Vec<Event>) -> Response {
        Response {
            revision: events.last().map(|e| e.revision).unwrap_or(0),
            events,
            progress: false,
        }
    }

    fn watcher(name: &str, start: i64, responses: Vec<Response>) -> WatcherLog {
        WatcherLog {
            name: name.into(),
            key: "a".into(),
            range_end: "b".into(),
            start_revision: start,
            responses,
        }
    }

    fn committed() -> Vec<Event> {
        vec![
            put(2, "a1", "x"),
            put(3, "a2", "y"),
            put(3, "a3", "z"),
            put(4, "zz", "out"),
            put(5, "a1", "w"),
        ]
    }

    fn guarantees(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.guarantee).collect()
    }

    #[test]
    fn a_correct_watcher_passes() {
        let good = watcher(
            "w1",
            2,
            vec![
                resp(vec![put(2, "a1", "x")]),
                resp(vec![put(3, "a2", "y"), put(3, "a3", "z")]),
                resp(vec![put(5, "a1", "w")]),
            ],
        );
        let resumed = watcher(
            "w2",
            3,
            vec![resp(vec![
                put(3, "a2", "y"),
                put(3, "a3", "z"),
                put(5, "a1", "w"),
            ])],
        );
        assert!(check(&[good, resumed], &committed()).is_empty());
    }

    #[test]
    fn each_broken_guarantee_is_named() {
        let c = committed();
        let gap = watcher(
            "gap",
            2,
            vec![resp(vec![put(2, "a1", "x")]), resp(vec![put(5, "a1", "w")])],
        );
        assert!(guarantees(&check(&[gap], &c)).contains(&"reliable"));
        let split = watcher(
            "split",
            3,
            vec![resp(vec![put(3, "a2", "y")]), resp(vec![put(3, "a3", "z")])],
        );
        assert_eq!(guarantees(&check(&[split], &c)), vec!["atomic"]);
        let dup = watcher(
            "dup",
            2,
            vec![resp(vec![put(2, "a1", "x")]), resp(vec![put(2, "a1", "x")])],
        );
        assert!(guarantees(&check(&[dup], &c)).contains(&"unique"));
        let back = watcher(
            "back",
            2,
            vec![
                resp(vec![put(3, "a2", "y"), put(3, "a3", "z")]),
                resp(vec![put(2, "a1", "x")]),
            ],
        );
        assert!(guarantees(&check(&[back], &c)).contains(&"ordered"));
        let phantom = watcher("phantom", 2, vec![resp(vec![put(2, "a1", "NOT")])]);
        assert!(guarantees(&check(&[phantom], &c)).contains(&"reliable"));
        let early = watcher(
            "early",
            2,
            vec![Response {
                revision: 3,
                events: vec![],
                progress: true,
            }],
        );
        assert!(guarantees(&check(&[early], &c)).contains(&"progress"));
        let a = watcher(
            "a",
            2,
            vec![
                resp(vec![put(2, "a1", "x")]),
                resp(vec![put(3, "a2", "y"), put(3, "a3", "z")]),
            ],
        );
        let b = watcher(
            "b",
            2,
            vec![
                resp(vec![put(2, "a1", "x")]),
                resp(vec![put(3, "a2", "y"), put(3, "a3", "Q")]),
            ],
        );
        assert!(guarantees(&check(&[a, b], &c)).contains(&"agreement"));
    }
}
