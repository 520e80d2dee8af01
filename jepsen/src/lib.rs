//! secretd's Jepsen-style suite.
//!
//! - `check`: history checkers, usable on their own (`jepsen check`); they
//!   know nothing about secretd and read Jepsen's own history formats as
//!   well as ours.
//! - `harness`: `jepsen test` and `jepsen campaign`: real secretd
//!   processes in network namespaces, faults, workloads, reports.

pub mod check;
pub mod harness;
