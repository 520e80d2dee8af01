//! How a member's raft messages reach the others. The real transport is
//! gRPC over the peer port (`api::peer`); `testing::net` delivers them
//! inside one process, for tests that run whole clusters in memory.

use raft::eraftpb::Message;

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
        Vec::new()
    }
    /// Peer `id` has just connected to us, so it is up: a sender waiting
    /// out a reconnect backoff towards it should try now. Without this, a
    /// restarted follower heard nothing from its leader until the leader's
    /// backoff ran out, and served its first linearizable read that much
    /// later.
    fn peer_up(&self, _id: u64) {}
}
