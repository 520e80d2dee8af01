//! secretd's replicated store: raft-rs driven by one loop over RocksDB, an
//! MVCC keyspace with etcd's revision semantics, and the watch hub.
//!
//! Data flows one way: a request is proposed to raft (`node`), committed
//! entries are applied to the keyspace (`mvcc`) in one durable batch per
//! `Ready`, then the revision is published to readers and the events go to
//! the watch hub (`watch`). Nothing here knows about gRPC.

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod db;
pub mod disk;
pub mod error;
pub mod lease;
pub mod log_store;
pub mod membership;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod planted;
pub mod raftlog;
pub mod revision;
pub mod schema;
pub mod snapshot;
pub mod transport;
pub mod watch;

/// Whole clusters in one process (the in-memory transport): the store's
/// own tests, part of its unit-test binary rather than a binary of their own.
#[cfg(test)]
mod mem_cluster_tests;

/// Structured fuzzing of the store's decoders, a fixed number of cases.
#[cfg(test)]
mod fuzz_tests;

pub use error::{Result, StoreError};

/// Generated wire types: etcd's messages and secretd's raft-log entry.
pub mod pb {
    #![allow(clippy::all)]
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    pub mod authpb {
        include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
    pub mod v3lockpb {
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
    }
    pub mod v3electionpb {
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
    }
    pub mod secretd {
        pub mod internal {
            include!(concat!(env!("OUT_DIR"), "/secretd.internal.rs"));
        }
    }
    pub use secretd::internal;
}
