//! secretd's own objects: secrets (sealed), configs and task assignments,
//! stored in the reserved key range of the store's MVCC keyspace, and the
//! cluster keyring that seals them. Knows nothing of the wire: operations
//! return [`Error`], which `api` maps to gRPC statuses at its edge.
//!
//! - `layout`: every key under the reserved prefix.
//! - `validate`: names, sizes, targets, with Docker's messages.
//! - `aad`: the one place encryption contexts are built.
//! - `txns`: builders for the txns every change is made of.
//! - `store`: the objects' operations, each one atomic txn.
//! - `node_view`: what one node's agent may see and fetch.
//! - `keys`: this member's keyring, its sync with the cluster's (peer
//!   fetches behind [`keys::KekPeers`]), autolock and KEK rotation.

pub mod aad;
mod error;
pub mod keys;
pub mod layout;
mod listing;
pub mod node_view;
pub mod store;
mod txns;
pub mod validate;

/// Fast tests of the object store and the keyring on in-process members.
#[cfg(test)]
mod tests;

pub use error::{Error, Result, LOCKED_MESSAGE};

/// Generated messages: secretstore.v1 (the objects as clients see them) and
/// the records stored in the reserved range (KEKs, autolock, settings).
pub mod pb {
    #![allow(clippy::all)]
    pub mod records {
        include!(concat!(env!("OUT_DIR"), "/secretd.records.v1.rs"));
    }
    pub mod secretstore {
        include!(concat!(env!("OUT_DIR"), "/secretstore.v1.rs"));
    }
}

/// Wall-clock now, Unix nanoseconds: the timestamps Swarm's objects carry.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
