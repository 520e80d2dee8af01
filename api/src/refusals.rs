//! Refused requests, counted rather than each written down. A refusal is
//! cheap to cause: a node certificate asking for an admin RPC in a loop
//! wrote 10 MB of audit log in 10 s, and 83k refusals filled the data
//! disk until the member stopped (D18). So each (who, what) pair is
//! logged and audited once per window; the rest of the window's refusals
//! are counted, and one line says how many when the window is over (or,
//! for a pair that stopped, when the table is next swept). Every refusal
//! still counts in `secretd_requests_refused_total`.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{register_int_counter_vec, IntCounterVec};
use tonic::Status;

use crate::identity::Caller;

/// One (who, what) pair is written down at most once per window.
pub const WINDOW_MS: u64 = 10_000;
/// Pairs tracked at once; past it the oldest windows are closed (their
/// counts written) to make room, so a caller inventing names gains only
/// more summary lines, each of them one per window at most.
pub const PAIRS_MAX: usize = 1_024;

static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "secretd_requests_refused_total",
        "Requests refused by the role matrix, by the caller's role.",
        &["role"]
    )
    .expect("metric registered once")
});

/// A pair's window: when it began, and the refusals not written since.
struct Window {
    started: Instant,
    unwritten: u64,
    caller: Caller,
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// The first of its window: log and audit it.
    This,
    /// Counted: it is in a window already written down.
    Counted,
}

/// The table of open windows.
#[derive(Default)]
pub struct Refusals {
    open: Mutex<HashMap<(String, String), Window>>,
}

/// A window closed with refusals left unwritten: one line says so.
pub struct Summary {
    pub caller: Caller,
    pub rpc: String,
    pub count: u64,
    pub window_ms: u64,
}

impl Refusals {
    /// Notes one refusal at `now`; says whether to write it down, and
    /// hands back the summaries of windows that are over.
    pub fn note(&self, caller: &Caller, rpc: &str, now: Instant) -> (Write, Vec<Summary>) {
        let window = Duration::from_millis(WINDOW_MS);
        let mut open = self.open.lock();
        let mut done = Vec::new();
        let key = (caller.role.to_string(), rpc.to_string());
        // Over windows go: this pair's own, and (when the table is full)
        // the oldest, so that the table stays bounded.
        let expired = open
            .get(&key)
            .is_some_and(|w| now.duration_since(w.started) >= window);
        if expired {
            done.extend(close(&key, open.remove(&key).expect("present")));
        }
        if !open.contains_key(&key) && open.len() >= PAIRS_MAX {
            let over: Vec<(String, String)> = open
                .iter()
                .filter(|(_, w)| now.duration_since(w.started) >= window)
                .map(|(k, _)| k.clone())
                .collect();
            for k in over {
                done.extend(close(&k, open.remove(&k).expect("present")));
            }
            if open.len() >= PAIRS_MAX {
                let oldest = open
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
                    .expect("full");
                done.extend(close(&oldest, open.remove(&oldest).expect("present")));
            }
        }
        let write = match open.get_mut(&key) {
            Some(w) => {
                w.unwritten += 1;
                Write::Counted
            }
            None => {
                open.insert(
                    key,
                    Window {
                        started: now,
                        unwritten: 0,
                        caller: caller.clone(),
                    },
                );
                Write::This
            }
        };
        (write, done)
    }
}

fn close(key: &(String, String), w: Window) -> Option<Summary> {
    (w.unwritten > 0).then(|| Summary {
        caller: w.caller,
        rpc: key.1.clone(),
        count: w.unwritten,
        window_ms: WINDOW_MS,
    })
}

static TABLE: LazyLock<Refusals> = LazyLock::new(Refusals::default);

/// A request the role matrix refused: counted always, logged and audited
/// once per window per (role, RPC), with a count of the rest.
pub fn refused(caller: &Caller, rpc: &str, status: &Status) {
    REFUSED.with_label_values(&[&caller.role.to_string()]).inc();
    let (write, summaries) = TABLE.note(caller, rpc, Instant::now());
    for s in summaries {
        tracing::warn!(role = %s.caller.role, rpc = %s.rpc, refused = s.count, window_ms = s.window_ms, "more requests refused: wrong role");
        crate::audit::denied_many(&s.caller, &s.rpc, status, s.count);
    }
    if write == Write::This {
        tracing::warn!(remote = ?caller.remote, role = %caller.role, rpc = %rpc, "refused a request: wrong role (more from this role are counted for 10 s)");
        crate::audit::denied(caller, rpc, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn node(n: &str) -> Caller {
        Caller {
            role: Role::Node(n.into()),
            remote: None,
            common_name: None,
            token: None,
        }
    }

    #[test]
    fn one_line_per_window_and_a_count_of_the_rest() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let (w, done) = r.note(&node("n1"), "/x", t0);
        assert_eq!((w, done.len()), (Write::This, 0));
        for i in 1..=999 {
            let (w, done) = r.note(&node("n1"), "/x", t0 + Duration::from_millis(i));
            assert_eq!((w, done.len()), (Write::Counted, 0));
        }
        // Another pair has its own window.
        assert_eq!(r.note(&node("n2"), "/x", t0).0, Write::This);
        assert_eq!(r.note(&node("n1"), "/y", t0).0, Write::This);
        // The window is over: this one is written, with the count of the
        // 999 before it.
        let later = t0 + Duration::from_millis(WINDOW_MS);
        let (w, done) = r.note(&node("n1"), "/x", later);
        assert_eq!(w, Write::This);
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].count, done[0].rpc.as_str()), (999, "/x"));
    }

    #[test]
    fn the_table_stays_bounded_whatever_the_names() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let mut summaries = 0;
        for i in 0..(3 * PAIRS_MAX) {
            let rpc = format!("/rpc/{i}");
            for _ in 0..2 {
                summaries += r.note(&node("n1"), &rpc, t0).1.len();
            }
            assert!(r.open.lock().len() <= PAIRS_MAX);
        }
        // Pairs pushed out with refusals unwritten said so.
        assert_eq!(summaries, 2 * PAIRS_MAX);
    }
}
