//! Starting the member itself: joining a running cluster, the node with
//! its peer transport (built from the ids the opened storage decided), the
//! keyring and the object store, and `--autolock`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use secretd_store::node::{Node, NodeConfig};

use crate::peer::GrpcTransport;

/// What a started member serves from.
pub(super) struct Member {
    pub node: Arc<Node>,
    pub keys: Arc<secretd_secrets::keys::Keys>,
    pub objects: crate::objects::service::ObjectService,
}

/// Opens the member's storage (which decides its ids: from flags on first
/// start, from disk afterwards), builds the peer transport from them,
/// starts the node on it, then the keyring and the object store.
pub(super) fn start(cfg: &NodeConfig, secret_history: usize, autolock: bool) -> Result<Member> {
    let opened = Node::open(cfg.clone()).context("cannot open the member's storage")?;
    let peers: HashMap<u64, String> = opened
        .members()?
        .iter()
        .filter(|m| m.id != opened.id())
        .filter_map(|m| m.peer_ur_ls.first().map(|u| (m.id, u.clone())))
        .collect();
    let transport = GrpcTransport::start(
        opened.id(),
        opened.cluster_id(),
        peers,
        opened.snapshot_dir(),
        Some(cfg.data_dir.join("peer-wires")),
    );
    let node = opened
        .start(transport.clone())
        .context("cannot start the member")?;
    transport.attach(&node);
    let peers = Arc::new(crate::objects::kek_peers::GrpcKekPeers {
        cluster_id: node.cluster_id(),
        me: node.id(),
    });
    let keys = secretd_secrets::keys::Keys::load(node.clone(), peers, &cfg.data_dir)
        .context("cannot open this member's keyring")?;
    keys.spawn_sync();
    if autolock {
        enable_autolock(keys.clone());
    }
    let objects = crate::objects::service::ObjectService {
        store: Arc::new(secretd_secrets::store::ObjectStore::new(
            node.clone(),
            keys.clone(),
            secret_history,
        )),
    };
    Ok(Member {
        node,
        keys,
        objects,
    })
}

/// For a member joining a running cluster: asks the other members listed in
/// `--initial-cluster` for the cluster id, and finds this member's id (given
/// by `member add`) by its peer URLs.
pub(super) async fn join_info(cfg: &NodeConfig) -> Result<secretd_store::node::JoinInfo> {
    let me = cfg
        .initial_members
        .iter()
        .find(|m| m.name == cfg.name)
        .expect("checked by the caller");
    let others: Vec<String> = cfg
        .initial_members
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    if others.is_empty() {
        bail!(
            "--initial-cluster-state existing: --initial-cluster must list the running members too"
        );
    }
    let info = crate::peer::fetch_cluster_info(&others)
        .await
        .context("cannot reach any running member to join")?;
    let mut mine = me.peer_urls.clone();
    mine.sort();
    let found = info.members.iter().find(|m| {
        let mut u = m.peer_urls.clone();
        u.sort();
        u == mine
    });
    let Some(found) = found else {
        bail!(
            "the cluster has no member with peer URLs {}: add it first (etcdctl member add {} --peer-urls={})",
            mine.join(","),
            cfg.name,
            mine.join(",")
        );
    };
    tracing::info!(
        cluster = format_args!("{:x}", info.cluster_id),
        member = format_args!("{:x}", found.id),
        "joining a running cluster"
    );
    let members = info
        .members
        .iter()
        .map(|m| secretd_store::pb::etcdserverpb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: m.is_learner,
        })
        .collect();
    Ok(secretd_store::node::JoinInfo {
        cluster_id: info.cluster_id,
        member_id: found.id,
        members,
    })
}

/// How long `--autolock` keeps trying to switch autolock on while the
/// cluster elects a leader.
const AUTOLOCK_ENABLE_TIMEOUT_MS: u64 = 120_000;

/// `--autolock`: switches autolock on once the cluster can write, and
/// prints the unlock key to stderr (never to the log). If it is already
/// on, does nothing: the key was shown when it was switched on.
fn enable_autolock(keys: Arc<secretd_secrets::keys::Keys>) {
    tokio::spawn(async move {
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(AUTOLOCK_ENABLE_TIMEOUT_MS);
        loop {
            match keys.set_autolock(true).await {
                Ok(Some(mut key)) => {
                    eprintln!(
                        "\nAutolock is on. To unlock a restarted member, run `secretctl cluster unlock` and give it this key:\n\n    {key}\n\nKeep it somewhere safe: it is not shown again.\n"
                    );
                    zeroize::Zeroize::zeroize(&mut key);
                    return;
                }
                Ok(None) => return,
                Err(secretd_secrets::Error::AutolockAlready { .. }) => return,
                Err(secretd_secrets::Error::Locked) => return,
                Err(e) if std::time::Instant::now() >= deadline => {
                    tracing::error!(error = %e, "--autolock: cannot switch autolock on");
                    return;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    });
}
