//! secretd's network face: the etcd v3 gRPC services, the member-to-member
//! raft transport, and the server that ties them to a `store::node::Node`.
//! The `secretd` and `secretctl` binaries are thin shells over this crate.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod cluster;
pub mod compactor;
pub mod concurrency;
pub mod conn;
pub mod datadir;
pub mod election;
pub mod errors;
pub mod gateway;
pub mod identity;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod metrics;
pub mod objects;
pub mod peer;
pub mod peer_raw;
pub mod refusals;
pub mod reserved;
pub mod server;
pub mod tls;
pub mod urls;
pub mod watch;
pub mod watch_grpc;

/// Generated gRPC services and clients. Message types live in
/// `secretd_store::pb` and are re-exported here.
pub mod pb {
    #![allow(clippy::all)]
    pub use secretd_store::pb::authpb;
    pub use secretd_store::pb::mvccpb;
    pub mod etcdserverpb {
        pub use secretd_store::pb::etcdserverpb::*;
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    }
    pub mod v3lockpb {
        pub use secretd_store::pb::v3lockpb::*;
        include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    }
    pub mod v3electionpb {
        pub use secretd_store::pb::v3electionpb::*;
        include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    }
    pub mod raftpb {
        include!(concat!(env!("OUT_DIR"), "/secretd.raft.v1.rs"));
    }
    /// Records stored in the reserved range (KEKs, autolock, settings).
    pub use secretd_secrets::pb::records;
    pub mod secretstore {
        pub use secretd_secrets::pb::secretstore::*;
        include!(concat!(env!("OUT_DIR"), "/secretstore.v1.rs"));
    }
}

/// The etcd API version this server speaks, reported by Status.
pub const ETCD_API_VERSION: &str = "3.4.0";
/// The etcd server version `GET /version` reports: the release whose API
/// and gateway secretd follows.
pub const ETCD_SERVER_VERSION: &str = "3.4.0";
