//! secretd's replicated store: raft-rs driven by one loop over RocksDB, an
//! MVCC keyspace with etcd's revision semantics, and the watch hub.
//!
//! Data flows one way: a request is proposed to raft (`node`), committed
//! entries are applied to the keyspace (`mvcc`) in one durable batch per
//! `Ready`, then the revision is published to readers and the events go to
//! the watch hub (`watch`). Nothing here knows about gRPC.

pub mod answers;
pub mod auth;
pub mod bolt;
pub mod clock;
pub mod cluster;
pub mod damage;
pub mod db;
pub(crate) mod disk;
pub mod error;
pub mod etcd_backup;
pub mod growing;
pub mod lease;
pub(crate) mod log_store;
pub(crate) mod membership;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod planted;
pub(crate) mod raftlog;
pub(crate) mod revision;
pub mod schema;
pub mod snapshot;
/// Whole clusters in one process (`MemCluster` on the in-memory network),
/// for tests here and in the crates above.
#[doc(hidden)]
pub mod testing;
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
    pub use crate::open_enum::OpenEnum;
    pub use secretd::internal;
}

mod open_enum;
