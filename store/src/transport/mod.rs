//! How a member's raft messages reach the others. The real transport is
//! gRPC over the peer port (`api::peer`); `mem` delivers them inside one
//! process, for tests that run whole clusters in memory.

pub mod mem;

use raft::eraftpb::Message;

/// Sends raft messages to other members. Must never block (queue or drop:
/// raft retransmits).
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msgs: Vec<Message>);
    /// The other members and their peer URL, after a membership change.
    fn update_peers(&self, peers: Vec<(u64, String)>);
}
