//! Sequential specifications. `step` says whether an operation with this
//! input could have produced this output from this state, and the state
//! after it; an unknown output accepts whatever the operation would do.

use std::fmt::Debug;
use std::hash::Hash;

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
}

/// One key of a string-valued key-value store with append; initially "".
pub struct KvString;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Get,
    Put(String),
    Append(String),
}

impl Model for KvString {
    type State = String;
    type Input = KvOp;
    /// A get's result; puts and appends return ().
    type Output = Option<String>;

    fn init() -> String {
        String::new()
    }

    fn step(state: &String, input: &KvOp, output: Option<&Option<String>>) -> Option<String> {
        match (input, output) {
            (KvOp::Get, Some(Some(v))) => (v == state).then(|| state.clone()),
            (KvOp::Get, _) => Some(state.clone()),
            (KvOp::Put(v), _) => Some(v.clone()),
            (KvOp::Append(v), _) => Some(format!("{state}{v}")),
        }
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
            KvString::step(&"a".into(), &KvOp::Append("b".into()), None),
            Some("ab".into())
        );
    }
}
