//! secretd's own objects: secrets (sealed), configs and task assignments,
//! stored in the reserved key range and served as `secretstore.v1`.
//!
//! - `layout`: every key under the reserved prefix.
//! - `validate`: names, sizes, targets, with Docker's messages.
//! - `keys`: this member's keyring and its sync with the cluster's.
//! - `store`: the objects' operations, each one atomic txn.
//! - `service`: the gRPC services over `store`.
//! - `agent`: the node agent's stream and fetch.

pub mod agent;
pub mod keys;
pub mod layout;
pub mod lock;
pub mod rotation;
pub mod service;
pub mod store;
mod txns;
pub mod validate;

/// Wall-clock now, Unix nanoseconds: the timestamps Swarm's objects carry.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
