//! secretd's Jepsen-style suite. `check`: history checkers, usable on their
//! own (`jepsen check`); they know nothing about secretd and read Jepsen's
//! own history formats as well as ours.

pub mod check;
