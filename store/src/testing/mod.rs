//! Whole clusters in one process, for tests here and in the crates above
//! (`secrets`' unit tests): members of the real store (raft loop, log,
//! MVCC, apply) joined by the in-memory network (`net`), in a scratch
//! directory of their own. Compiled in every build, hidden from the docs:
//! it needs no dependency and little code, and a feature that only tests
//! enable would make `cargo build --bins` and `--all-targets` resolve this
//! crate differently, rebuilding it and everything above it (issue 31).

pub mod net;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{self, Member};
use crate::error::StoreError;
use crate::node::{Node, NodeConfig};
use crate::pb::etcdserverpb::PutRequest;
use net::MemNetwork;

/// The cluster token every in-memory cluster is made with.
pub const TOKEN: &str = "mem-cluster";

/// Members started on one in-memory network. Dropping it stops them, then
/// removes their data directories.
pub struct MemCluster {
    pub net: Arc<MemNetwork>,
    pub nodes: Vec<Arc<Node>>,
    // Last: dropped after the members have stopped.
    dir: ScratchDir,
}

impl MemCluster {
    /// `n` members with the network's faults drawn from `seed`.
    pub fn start(n: usize, seed: u64) -> MemCluster {
        Self::start_with(n, seed, |_| {})
    }

    /// As `start`, with each member's configuration changed by `tune`
    /// first. Must be called inside a tokio runtime.
    pub fn start_with(n: usize, seed: u64, tune: impl Fn(&mut NodeConfig)) -> MemCluster {
        let dir = ScratchDir::new();
        let net = MemNetwork::new(seed);
        let members: Vec<Member> = (1..=n)
            .map(|i| {
                let peer_urls = vec![format!("http://n{i}.mem:2380")];
                Member {
                    id: cluster::member_id(&peer_urls, TOKEN),
                    name: format!("n{i}"),
                    peer_urls,
                }
            })
            .collect();
        let nodes = members
            .iter()
            .map(|m| {
                let mut cfg = NodeConfig {
                    name: m.name.clone(),
                    data_dir: dir.0.join(&m.name),
                    initial_members: members.clone(),
                    cluster_token: TOKEN.into(),
                    client_urls: vec![format!("http://{}.mem:2379", m.name)],
                    tick_ms: 20,
                    request_timeout: Duration::from_secs(2),
                    ..Default::default()
                };
                tune(&mut cfg);
                let node = Node::start(cfg, net.transport(m.id)).unwrap();
                net.attach(&node);
                node
            })
            .collect();
        MemCluster { net, nodes, dir }
    }

    /// The directory the members' data directories are in.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The member all running members agree leads, once they do.
    pub async fn leader(&self, among: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<u64> = among
                .iter()
                .map(|i| self.nodes[*i].status().leader)
                .collect();
            if seen[0] != 0 && seen.iter().all(|l| *l == seen[0]) {
                if let Some(i) = among.iter().find(|i| self.nodes[**i].id() == seen[0]) {
                    return *i;
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:x?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts through member `i`, retrying what the network lost (a put of
    /// the same value twice is harmless here).
    pub async fn put(&self, i: usize, key: &str, value: &str) {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        };
        for _ in 0..20 {
            match self.nodes[i].put(req.clone(), None).await {
                Ok(_) => return,
                Err(StoreError::Timeout | StoreError::TooManyRequests | StoreError::NoLeader) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("put {key} through member {i}: {e}"),
            }
        }
        panic!("put {key} through member {i} never committed");
    }
}

impl Drop for MemCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.stop();
        }
    }
}

/// A directory under the system's temporary directory, unique to this
/// process and cluster, removed when dropped (what `tempfile` would do,
/// without making it a dependency of every build).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("secretd-mem-cluster-{}-{n}", std::process::id()));
        // A directory left by an earlier process of the same id.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        ScratchDir(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
