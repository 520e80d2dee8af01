//! What the workspace's tests share. Today: `shape`, the checks that keep
//! the code's shape as ARCHITECTURE.md promises it (no function over 70
//! lines, no file over 900, no module cycle inside a crate).

pub mod shape;
