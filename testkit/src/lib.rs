//! What the workspace's harnesses and tests share:
//! - `launch`: the one way to start a secretd member (the integration
//!   tests, `bench compare` and the fault suite all use it);
//! - the code's shape as tests (`shape`, `shape_rules`): no non-test
//!   function over 70 lines, no file over 900, no module cycle inside a
//!   crate. They parse the sources with `syn`, so they exist only in this
//!   crate's test build.

pub mod launch;

#[cfg(test)]
mod shape;
#[cfg(test)]
mod shape_rules;
