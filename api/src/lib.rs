//! secretd's network face: the etcd v3 gRPC services, the member-to-member
//! raft transport, and the server that ties them to a `store::node::Node`.
//! The `secretd` binary is a thin shell over this crate (`secretctl` is
//! its own crate, a client over `secretd-client`).

// rustfmt sorts these; their order from bottom to top, and what each may
// use, is ARCHITECTURE.md's api table. Siblings use each other one way
// only (the shape test in `testkit` checks there is no cycle).
pub mod audit;
pub mod authz;
pub mod compactor;
pub mod conn;
pub mod datadir;
pub mod embed;
pub mod errors;
pub mod etcd;
pub mod gate;
pub mod identity;
pub mod metrics;
pub mod objects;
pub mod peer;
pub mod refusals;
pub mod server;
pub mod tls;
pub mod urls;

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

/// The etcd release whose behaviour secretd matches, as etcd reports its
/// own (Status, `GET /version`'s `etcdserver`): clients gate features on
/// it, so it names the release secretd is checked against (etcd 3.5.1,
/// side by side in `api/tests/it/etcdctl/gateway.rs`).
pub const ETCD_SERVER_VERSION: &str = "3.5.1";
/// The cluster version etcd 3.5.1 reports (`GET /version`'s
/// `etcdcluster`: major.minor, patch 0).
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";
