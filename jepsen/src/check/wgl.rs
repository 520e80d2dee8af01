//! The Wing–Gong–Lowe linearizability search, with Lowe's cache of
//! (linearized set, state) pairs, as Porcupine implements it.
//!
//! Every operation contributes a call and a return entry to a doubly linked
//! list in history order; unknown outcomes return after everything else, so
//! they stay open to the end. The search repeatedly linearizes the first
//! call whose operation the model accepts (removing its call and return from
//! the list), and backtracks when it meets a return whose call it could not
//! linearize. A (set, state) pair already explored is never explored again.
//! The search is bounded by a deadline: running out gives `Unknown`, never a
//! guess.

use std::collections::HashSet;
use std::time::Instant;

use super::history::{Op, Outcome};
use super::model::Model;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// `explanation` names the operations that could not be placed.
    NotLinearizable {
        explanation: String,
    },
    Unknown,
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable { .. } => "not-linearizable",
            Verdict::Unknown => "unknown",
        }
    }
}

/// How many search steps run between deadline checks.
const DEADLINE_CHECK_STEPS: u64 = 4096;

struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    /// Every op's call and return entries in history order, between `head`
    /// (2n) and `tail` (2n+1): entries 2i (call) and 2i+1 (return) for op i.
    fn of<I, O>(ops: &[Op<I, O>]) -> List {
        let n = ops.len();
        let (head, tail) = (2 * n, 2 * n + 1);
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.invoke, 0, 2 * i));
            let ret_at = match op.outcome {
                Outcome::Ok(_) => op.complete,
                Outcome::Unknown => u64::MAX,
            };
            // At equal positions returns sort after calls: concurrent, not
            // ordered.
            order.push((ret_at, 1, 2 * i + 1));
        }
        order.sort_unstable();
        let mut list = List {
            next: vec![0; 2 * n + 2],
            prev: vec![0; 2 * n + 2],
        };
        let mut last = head;
        for &(_, _, e) in &order {
            list.next[last] = e;
            list.prev[e] = last;
            last = e;
        }
        list.next[last] = tail;
        list.prev[tail] = last;
        list
    }

    /// The ops whose calls lie between `from` and `to` (not linearized).
    fn calls_between(&self, from: usize, to: usize) -> Vec<usize> {
        let mut pending = Vec::new();
        let mut e = self.next[from];
        while e != to {
            if e.is_multiple_of(2) {
                pending.push(e / 2);
            }
            e = self.next[e];
        }
        pending
    }

    /// Unlinks the call entry `call` and its return entry `ret`.
    fn lift(&mut self, call: usize, ret: usize) {
        for e in [call, ret] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    /// Relinks them, in the reverse order of `lift`.
    fn unlift(&mut self, call: usize, ret: usize) {
        for e in [ret, call] {
            let (p, n) = (self.prev[e], self.next[e]);
            self.next[p] = e;
            self.prev[n] = e;
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one partition (ops on independent state must be split first).
pub fn check<M: Model>(ops: &[Op<M::Input, M::Output>], deadline: Instant) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    let (head, tail) = (2 * n, 2 * n + 1);
    let mut list = List::of(ops);
    let mut state = M::init();
    let mut linearized = Bits::new(n);
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut calls: Vec<(usize, M::State)> = Vec::new();
    // The deepest point reached, for the explanation.
    let mut best: Option<Deepest<M::State>> = None;
    let mut entry = list.next[head];
    let mut steps = 0u64;
    while list.next[head] != tail {
        steps += 1;
        if steps.is_multiple_of(DEADLINE_CHECK_STEPS) && Instant::now() >= deadline {
            return Verdict::Unknown;
        }
        if entry.is_multiple_of(2) {
            let i = entry / 2;
            let out = match &ops[i].outcome {
                Outcome::Ok(o) => Some(o),
                Outcome::Unknown => None,
            };
            if let Some(next_state) = M::step(&state, &ops[i].input, out) {
                let mut next_set = linearized.clone();
                next_set.set(i);
                if cache.insert((next_set.clone(), next_state.clone())) {
                    calls.push((entry, state));
                    state = next_state;
                    linearized = next_set;
                    list.lift(entry, entry + 1);
                    entry = list.next[head];
                    continue;
                }
            }
            entry = list.next[entry];
        } else {
            // A return whose call we have not linearized: backtrack.
            if best.as_ref().is_none_or(|b| calls.len() > b.depth) {
                best = Some(Deepest {
                    depth: calls.len(),
                    blocked: entry / 2,
                    pending: list.calls_between(head, entry),
                    state: state.clone(),
                });
            }
            let Some((call, prev_state)) = calls.pop() else {
                return Verdict::NotLinearizable {
                    explanation: explain(ops, best),
                };
            };
            state = prev_state;
            linearized.clear(call / 2);
            list.unlift(call, call + 1);
            entry = list.next[call];
        }
    }
    Verdict::Linearizable
}

fn describe<I: std::fmt::Debug, O: std::fmt::Debug>(op: &Op<I, O>) -> String {
    let out = match &op.outcome {
        Outcome::Ok(o) => format!("{o:?}"),
        Outcome::Unknown => "unknown".into(),
    };
    format!(
        "line {}: process {} {:?} -> {}",
        op.line, op.process, op.input, out
    )
}

struct Deepest<S> {
    /// Operations linearized at the deepest point of the search.
    depth: usize,
    /// The operation that had to complete there but could not be placed.
    blocked: usize,
    /// The other operations open at that point, none of which fit either.
    pending: Vec<usize>,
    state: S,
}

/// Names the operations that could not be placed at the deepest point.
fn explain<I: std::fmt::Debug, O: std::fmt::Debug, S: std::fmt::Debug>(
    ops: &[Op<I, O>],
    best: Option<Deepest<S>>,
) -> String {
    let Some(b) = best else {
        return "no operation could be linearized first".into();
    };
    const LISTED_MAX: usize = 8;
    let mut s = format!(
        "after {} operations linearized (state {:?}), this one must complete but cannot: {}",
        b.depth,
        b.state,
        describe(&ops[b.blocked])
    );
    let others: Vec<_> = b.pending.iter().filter(|i| **i != b.blocked).collect();
    if !others.is_empty() {
        s.push_str(&format!(
            "; nor can any of the {} operations open with it:",
            others.len()
        ));
        for i in others.iter().take(LISTED_MAX) {
            s.push_str(&format!("\n    {}", describe(&ops[**i])));
        }
        if others.len() > LISTED_MAX {
            s.push_str(&format!("\n    ... and {} more", others.len() - LISTED_MAX));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::check::model::{Register, RegisterOp, RegisterOut};

    fn op(
        invoke: u64,
        complete: u64,
        input: RegisterOp,
        out: Option<RegisterOut>,
    ) -> Op<RegisterOp, RegisterOut> {
        Op {
            process: invoke,
            input,
            outcome: out.map(Outcome::Ok).unwrap_or(Outcome::Unknown),
            invoke,
            complete,
            line: invoke as usize,
        }
    }

    fn verdict(ops: &[Op<RegisterOp, RegisterOut>]) -> &'static str {
        check::<Register>(ops, Instant::now() + Duration::from_secs(5)).word()
    }

    #[test]
    fn stale_read_after_write_completes_is_caught() {
        let ops = [
            op(0, 1, RegisterOp::Write(1), Some(RegisterOut::Done)),
            op(2, 3, RegisterOp::Read, Some(RegisterOut::Value(None))),
        ];
        assert_eq!(verdict(&ops), "not-linearizable");
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        let ops = [
            op(0, 3, RegisterOp::Write(1), Some(RegisterOut::Done)),
            op(1, 2, RegisterOp::Read, Some(RegisterOut::Value(Some(1)))),
            op(1, 4, RegisterOp::Read, Some(RegisterOut::Value(None))),
        ];
        assert_eq!(verdict(&ops), "linearizable");
    }

    #[test]
    fn unknown_write_may_land_late_or_never() {
        let w = op(0, 0, RegisterOp::Write(7), None);
        let late = op(5, 6, RegisterOp::Read, Some(RegisterOut::Value(Some(7))));
        let never = op(7, 8, RegisterOp::Read, Some(RegisterOut::Value(None)));
        assert_eq!(verdict(&[w.clone(), late.clone()]), "linearizable");
        assert_eq!(verdict(&[w.clone(), never.clone()]), "linearizable");
        // ...but not both: once seen, it cannot be unseen.
        assert_eq!(verdict(&[w, late, never]), "not-linearizable");
    }

    #[test]
    fn deadline_gives_unknown_not_a_guess() {
        let ops: Vec<_> = (0..40)
            .map(|i| op(0, 100, RegisterOp::Write(i), Some(RegisterOut::Done)))
            .collect();
        let mut ops = ops;
        ops.push(op(
            101,
            102,
            RegisterOp::Read,
            Some(RegisterOut::Value(Some(1000))),
        ));
        assert_eq!(check::<Register>(&ops, Instant::now()).word(), "unknown");
    }
}
