//! `secrets`' own tests, fast: the object store and the keyring over real
//! members of the store in one process (`secretd_store::testing`), with
//! KEK fetches between members as direct calls. What they check is the
//! behaviour the gRPC tests reach only through the whole stack: sealing,
//! versions, in-use protection, KEK generations and autolock.

mod keys;
mod objects;

use std::sync::Arc;
use std::time::Duration;

use secretd_crypto::SecretBytes;
use secretd_store::node::Node;
use secretd_store::pb::etcdserverpb::RangeRequest;
use secretd_store::testing::MemCluster;

use crate::keys::{InProcessPeers, Keys};
use crate::pb::secretstore::{CreateRequest, Mount, Task};
use crate::store::ObjectStore;

/// Old versions a secret keeps in these tests (the newest few, and every
/// pinned one).
const HISTORY: usize = 2;

/// A cluster whose every member runs the object store and its keyring.
struct Objects {
    cluster: MemCluster,
    peers: InProcessPeers,
    stores: Vec<ObjectStore>,
}

impl Objects {
    /// `n` members (short ticks: a test waits out elections), each with
    /// its keyring in its own data directory, kept in step in the
    /// background.
    async fn start(n: usize) -> Objects {
        let cluster = MemCluster::start_with(n, 1, |cfg| cfg.tick_ms = 5);
        let all: Vec<usize> = (0..n).collect();
        cluster.leader(&all, Duration::from_secs(10)).await;
        let peers = InProcessPeers::default();
        let stores = cluster
            .nodes
            .iter()
            .map(|node| {
                let keys = load_keys(node, &peers);
                // As a running member does: a new generation reaches a
                // quorum before anything is sealed under it.
                keys.spawn_sync();
                ObjectStore::new(node.clone(), keys, HISTORY)
            })
            .collect();
        Objects {
            cluster,
            peers,
            stores,
        }
    }

    fn node(&self, i: usize) -> &Arc<Node> {
        &self.cluster.nodes[i]
    }
}

/// Loads member `node`'s keyring from its data directory and makes it
/// reachable by its peers (replacing any earlier one: a restart).
fn load_keys(node: &Arc<Node>, peers: &InProcessPeers) -> Arc<Keys> {
    let keys = Keys::load(
        node.clone(),
        Arc::new(peers.clone()),
        &node.config().data_dir,
    )
    .expect("load the keyring");
    peers.register(node.id(), &keys);
    keys
}

fn create_request(name: &str, data: &[u8]) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        data: data.to_vec(),
        ..Default::default()
    }
}

fn secret(data: &[u8]) -> SecretBytes {
    SecretBytes::new(data.to_vec())
}

/// A task on node `n1` mounting `secrets` (name, pinned version: 0 for
/// the current one).
fn task(id: &str, secrets: &[(&str, u64)]) -> Task {
    Task {
        id: id.into(),
        node: "n1".into(),
        secrets: secrets
            .iter()
            .map(|(name, version)| Mount {
                source: name.to_string(),
                target: format!("{name}.txt"),
                mode: 0o400,
                version: *version,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The value stored at `key`, as every member's state holds it (a
/// linearizable read through the store, past the object store).
async fn stored(node: &Node, key: Vec<u8>) -> Option<Vec<u8>> {
    let resp = node
        .range(RangeRequest {
            key,
            ..Default::default()
        })
        .await
        .expect("read the keyspace");
    resp.kvs.into_iter().next().map(|kv| kv.value)
}
