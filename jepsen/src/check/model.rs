//! Sequential specifications. `step` says whether an operation with this
//! input could have produced this output from this state, and the state
//! after it; an unknown output accepts whatever the operation would do.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use super::history::{Op, Outcome};

pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;
    fn init() -> Self::State;
    fn step(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether this operation leaves every state it is accepted in
    /// unchanged (a read, a CAS known to have failed). The search may then
    /// linearize it as soon as it is accepted, without branching. An
    /// operation that changes some states (a CAS of unknown outcome) is not
    /// read-only, even where it happens to change nothing.
    fn read_only(_input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// For an operation of unknown outcome: whether any of the completed
    /// operations' `outputs` could have seen its effect. One that could
    /// not is left out of the search (as if it never happened), which must
    /// lose no linearization; a model says so only where it can argue it.
    fn may_be_observed(_input: &Self::Input, _outputs: &[&Self::Output]) -> bool {
        true
    }

    /// Rewrites a history's operations before the search, where the model
    /// can tell from the whole history that an operation's effect was never
    /// seen (and so need not be told apart). Must keep every verdict.
    fn prepare(_ops: &mut [Op<Self::Input, Self::Output>]) {}

    /// Whether an operation that must come after some of `changes` (the
    /// state-changing operations that may still precede it) and after no
    /// other change could still be accepted, from `state`. False only if
    /// it certainly cannot; the default knows only that with no change
    /// left, it must be accepted as things stand.
    fn may_reach(
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
        changes: &[&Self::Input],
    ) -> bool {
        !changes.is_empty() || Self::step(state, input, output).is_some()
    }
}

/// One integer register, initially absent.
pub struct Register;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    Read,
    Write(i64),
    Cas(i64, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOut {
    /// What a read returned (None: absent).
    Value(Option<i64>),
    /// A write's acknowledgement.
    Done,
    /// Whether a CAS succeeded.
    Cas(bool),
}

impl Model for Register {
    type State = Option<i64>;
    type Input = RegisterOp;
    type Output = RegisterOut;

    fn init() -> Self::State {
        None
    }

    fn step(
        state: &Option<i64>,
        input: &RegisterOp,
        output: Option<&RegisterOut>,
    ) -> Option<Option<i64>> {
        match (input, output) {
            (RegisterOp::Read, Some(RegisterOut::Value(v))) => (v == state).then_some(*state),
            (RegisterOp::Read, None) => Some(*state),
            (RegisterOp::Write(v), Some(RegisterOut::Done) | None) => Some(Some(*v)),
            (RegisterOp::Cas(from, to), Some(RegisterOut::Cas(true))) => {
                (*state == Some(*from)).then_some(Some(*to))
            }
            (RegisterOp::Cas(from, _), Some(RegisterOut::Cas(false))) => {
                (*state != Some(*from)).then_some(*state)
            }
            (RegisterOp::Cas(from, to), None) => Some(if *state == Some(*from) {
                Some(*to)
            } else {
                *state
            }),
            _ => None, // an output of the wrong kind never matches
        }
    }

    fn read_only(input: &RegisterOp, output: Option<&RegisterOut>) -> bool {
        matches!(
            (input, output),
            (RegisterOp::Read, _) | (RegisterOp::Cas(..), Some(RegisterOut::Cas(false)))
        )
    }
}

/// One key of a string-valued key-value store with append; initially "".
///
/// The state is `Some(value)`, shared (`Arc<str>`: the search copies
/// states on every step, and values grow to kilobytes), or `None`: the
/// value holds a change that no get ever saw ([`KvOp::Unseen`]), which only
/// a put can end. Every ordering of unseen changes is then one state, not
/// one per order: without that, a burst of concurrent appends that a put
/// wiped before anyone read them made the search try all their orders.
pub struct KvString;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Get,
    Put(String),
    Append(String),
    /// A put or append of a value that no completed get's result contains
    /// (marked by [`KvString::prepare`]).
    Unseen(String),
}

impl Model for KvString {
    type State = Option<Arc<str>>;
    type Input = KvOp;
    /// A get's result; puts and appends return ().
    type Output = Option<String>;

    fn init() -> Option<Arc<str>> {
        Some(Arc::from(""))
    }

    fn step(
        state: &Option<Arc<str>>,
        input: &KvOp,
        output: Option<&Option<String>>,
    ) -> Option<Option<Arc<str>>> {
        match (input, output) {
            (KvOp::Get, Some(Some(v))) => {
                (state.as_deref() == Some(v.as_str())).then(|| state.clone())
            }
            (KvOp::Get, _) => Some(state.clone()),
            (KvOp::Put(v), _) => Some(Some(Arc::from(v.as_str()))),
            (KvOp::Append(v), _) => Some(state.as_ref().map(|s| Arc::from(format!("{s}{v}")))),
            (KvOp::Unseen(_), _) => Some(None),
        }
    }

    fn read_only(input: &KvOp, _output: Option<&Option<String>>) -> bool {
        matches!(input, KvOp::Get)
    }

    /// After a put or append of `v`, the value contains `v` until the next
    /// put replaces it. If no completed get ever returned a value
    /// containing `v`, no get was linearized in that window: only puts and
    /// appends were, which are accepted in any state, and what they built
    /// was replaced unseen. So the window's states need not be told apart.
    fn prepare(ops: &mut [Op<KvOp, Option<String>>]) {
        let seen: Vec<String> = ops
            .iter()
            .filter_map(|op| match (&op.input, &op.outcome) {
                (KvOp::Get, Outcome::Ok(Some(v))) => Some(v.clone()),
                _ => None,
            })
            .collect();
        for op in ops.iter_mut() {
            if let KvOp::Put(v) | KvOp::Append(v) = &op.input {
                if !seen.iter().any(|s| s.contains(v.as_str())) {
                    op.input = KvOp::Unseen(v.clone());
                }
            }
        }
    }

    /// Between puts a value only grows: a get that only appends may
    /// precede must see a value that starts with the current one (and an
    /// unseen change in it rules it out).
    fn may_reach(
        state: &Option<Arc<str>>,
        input: &KvOp,
        output: Option<&Option<String>>,
        changes: &[&KvOp],
    ) -> bool {
        match (input, output) {
            (KvOp::Get, Some(Some(v))) => {
                changes.iter().any(|c| matches!(c, KvOp::Put(_)))
                    || state.as_deref().is_some_and(|s| v.starts_with(s))
            }
            _ => true,
        }
    }

    /// An unseen change of unknown outcome may as well not have happened.
    fn may_be_observed(input: &KvOp, _outputs: &[&Option<String>]) -> bool {
        !matches!(input, KvOp::Get | KvOp::Unseen(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_steps() {
        use RegisterOp as I;
        use RegisterOut as O;
        assert_eq!(
            Register::step(&None, &I::Read, Some(&O::Value(None))),
            Some(None)
        );
        assert_eq!(
            Register::step(&Some(1), &I::Read, Some(&O::Value(None))),
            None
        );
        assert_eq!(
            Register::step(&Some(1), &I::Cas(1, 2), Some(&O::Cas(true))),
            Some(Some(2))
        );
        assert_eq!(
            Register::step(&Some(1), &I::Cas(1, 2), Some(&O::Cas(false))),
            None
        );
        assert_eq!(Register::step(&Some(3), &I::Cas(1, 2), None), Some(Some(3)));
        assert_eq!(
            KvString::step(&Some(Arc::from("a")), &KvOp::Append("b".into()), None),
            Some(Some(Arc::from("ab")))
        );
    }
}
