//! How a member's raft messages reach the others. The real transport is
//! gRPC over the peer port (`api::peer`); `testing::net` delivers them
//! inside one process, for tests that run whole clusters in memory.

use raft::eraftpb::Message;

/// The peer wire versions (`ClusterInfo`'s `wire_version`) that brought
/// something an older member would apply differently, and so what a member
/// proposes only once every peer speaks it (README, "Upgrades").
pub mod wire {
    /// `LeaseExpiry` and `AuthRequest` entries: an older member stops at
    /// an entry it cannot decode.
    pub const AUTH_AND_LEASE_EXPIRY: u32 = 2;
    /// `write_answer_bytes_max` on entries: an older member would apply a
    /// write the others refuse.
    pub const WRITE_ANSWER_BOUND: u32 = 3;
    /// `txn_decided_first` on entries: an older member would evaluate a
    /// nested txn's compares after the txn's earlier writes, and check
    /// both branches of it, and so apply some txns differently.
    pub const TXN_DECIDED_FIRST: u32 = 4;
    /// `txn_rules_etcd` on entries: an older member would decide a compare
    /// whose union field is not its target's, or bound a limited range
    /// after a delete, differently.
    pub const TXN_RULES_ETCD: u32 = 5;
}

/// Sends raft messages to other members. Must never block (queue or drop:
/// raft retransmits).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msgs: Vec<Message>);
    /// The other members and their peer URL, after a membership change.
    fn update_peers(&self, peers: Vec<(u64, String)>);
    /// Peers that may run an older release, one that cannot apply the
    /// entry kinds added since (`LeaseExpiry`, `AuthRequest`): the leader
    /// then proposes only what every member applies (a lease expiry as a
    /// plain `LeaseRevoke`) and auth changes are refused until the upgrade
    /// is done. A peer not reached yet counts as one. In-process
    /// transports have none.
    fn older_peers(&self) -> Vec<u64> {
        self.peers_below(wire::AUTH_AND_LEASE_EXPIRY)
    }
    /// Peers not known to speak peer wire `wire` (`wire`): they may run a
    /// release that applies what came with it differently. A peer not
    /// reached yet, or not asked yet, counts as one.
    fn peers_below(&self, _wire: u32) -> Vec<u64> {
        Vec::new()
    }
    /// Peer `id` has just connected to us, so it is up: a sender waiting
    /// out a reconnect backoff towards it should try now. Without this, a
    /// restarted follower heard nothing from its leader until the leader's
    /// backoff ran out, and served its first linearizable read that much
    /// later.
    fn peer_up(&self, _id: u64) {}
}
