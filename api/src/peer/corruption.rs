//! Corruption checks, as etcd 3.5 has them: members compare the keyspace
//! hash (`HashKV`) at the same revision over the peer port.
//!
//! - Initially (`--experimental-initial-corrupt-check`, on by default
//!   here): before a member serves clients, it asks every peer for the hash
//!   at its own revision; outvoted, it refuses to start.
//! - Periodically (`--experimental-corrupt-check-time`, 5 minutes by
//!   default here; etcd's default is off): the leader hashes at its
//!   revision and asks every member for the hash at the same one.
//!
//! Members are compared only when they hashed the same revision over the
//! same compacted history. Whoever is outside a strict majority of equal
//! hashes is damaged (all of them, when no majority exists: with two
//! answers that differ nobody can tell which is right). A damaged member
//! gets a CORRUPT alarm through raft, which stops writes on every member
//! (etcd's rule) and stops the named member serving reads
//! (`Node::check_serving`); both hashes go to the log and to metrics.
//! Repair is the operator's, one member at a time: README, "Repairing a
//! damaged member".

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::{register_int_counter_vec, IntCounterVec};
use secretd_store::node::Node;
use secretd_store::StoreError;
use tonic::Status;

use crate::pb::raftpb::{PeerHashKvRequest, PeerHashKvResponse};

/// How long a peer gets to connect and answer one hash request of the
/// periodic check.
const PEER_HASH_TIMEOUT_MS: u64 = 10_000;
/// The same at start, where every second of it delays serving clients.
const INITIAL_PEER_HASH_TIMEOUT_MS: u64 = 5_000;
/// How long an answering member waits to reach the asked revision.
pub const REACH_REVISION_TIMEOUT_MS: u64 = 3_000;

static CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "secretd_corruption_checks_total",
        "Keyspace hash comparisons between members, by outcome (agree, damaged, undecided).",
        &["outcome"]
    )
    .expect("metric registered once")
});

/// One member's keyspace hash at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberHash {
    pub member: u64,
    pub hash: u32,
    pub compact_revision: i64,
}

/// The members outside a strict majority of equal hashes; every member when
/// no majority exists. Empty when all agree.
pub fn damaged(hashes: &[MemberHash]) -> Vec<u64> {
    let mut groups: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for h in hashes {
        groups.entry(h.hash).or_default().push(h.member);
    }
    if groups.len() <= 1 {
        return Vec::new();
    }
    let majority = groups.values().find(|g| g.len() * 2 > hashes.len());
    let mut out: Vec<u64> = hashes
        .iter()
        .map(|h| h.member)
        .filter(|m| majority.is_none_or(|g| !g.contains(m)))
        .collect();
    out.sort_unstable();
    out
}

/// Hashes of the whole keyspace computed at once on this member (each
/// reads every record and holds compaction off): peers asking more often
/// than that wait their turn, bounded by their calls' timeouts.
const HASHES_AT_ONCE_MAX: usize = 1;
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHES_AT_ONCE_MAX);

/// This member's hash at `revision`, off the async threads.
async fn own_hash(node: &Arc<Node>, revision: i64) -> Result<MemberHash, StoreError> {
    let _turn = HASHING
        .acquire()
        .await
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    let n = node.clone();
    let (hash, compact_revision, _) =
        tokio::task::spawn_blocking(move || n.mvcc().hash_kv(revision))
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))??;
    Ok(MemberHash {
        member: node.id(),
        hash,
        compact_revision,
    })
}

/// Asks the member at `url` for its hash at `revision`.
async fn peer_hash(
    node: &Node,
    url: &str,
    revision: i64,
    timeout_ms: u64,
) -> anyhow::Result<PeerHashKvResponse> {
    let resp = crate::peer::raft_client(url, timeout_ms.min(2_000), timeout_ms)
        .await?
        .hash_kv(PeerHashKvRequest {
            cluster_id: node.cluster_id(),
            from: node.id(),
            revision,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(resp.into_inner())
}

/// Every comparable hash at `revision`: ours first, then each other
/// member's that answered for the same revision and compacted history.
/// Members that cannot answer are logged and left out.
async fn gather(
    node: &Arc<Node>,
    revision: i64,
    timeout_ms: u64,
) -> Result<Vec<MemberHash>, StoreError> {
    let peers: Vec<_> = node
        .members()
        .into_iter()
        .filter(|m| m.id != node.id())
        .filter_map(|m| m.peer_ur_ls.first().cloned().map(|u| (m.id, u)))
        .collect();
    // Our own pass and the peers' at once: one after the other, a restart
    // with a million keys waited for two whole passes before serving.
    let (mine, answers) = tokio::join!(
        own_hash(node, revision),
        futures::future::join_all(peers.iter().map(|(id, url)| async move {
            (*id, peer_hash(node, url, revision, timeout_ms).await)
        }))
    );
    let mine = mine?;
    let mut out = vec![mine];
    for (id, answer) in answers {
        match answer {
            Ok(a) if a.member_id != id || a.revision != revision => tracing::warn!(
                member = format_args!("{id:x}"),
                answered_as = format_args!("{:x}", a.member_id),
                revision = a.revision,
                "corruption check: a peer answered for another member or revision; left out"
            ),
            Ok(a) if a.compact_revision != mine.compact_revision => tracing::info!(
                member = format_args!("{id:x}"),
                compact_revision = a.compact_revision,
                ours = mine.compact_revision,
                "corruption check: a peer compacted other history; compared next time"
            ),
            Ok(a) => out.push(MemberHash {
                member: id,
                hash: a.hash,
                compact_revision: a.compact_revision,
            }),
            Err(e) => tracing::info!(
                member = format_args!("{id:x}"),
                error = %e,
                "corruption check: a peer did not answer; left out"
            ),
        }
    }
    Ok(out)
}

fn ids(members: &[u64]) -> String {
    members
        .iter()
        .map(|m| format!("{m:x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn describe(hashes: &[MemberHash]) -> String {
    hashes
        .iter()
        .map(|h| format!("{:x}={:08x}", h.member, h.hash))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The check a member runs before it serves clients. Outvoted by its
/// peers, it refuses to start: its keyspace differs from theirs at the
/// same revision. A peer outvoted by the rest is only logged (the leader's
/// periodic check raises the alarm).
pub async fn initial_check(node: &Arc<Node>) -> anyhow::Result<()> {
    let revision = node.mvcc().current_revision();
    let hashes = gather(node, revision, INITIAL_PEER_HASH_TIMEOUT_MS).await?;
    let bad = damaged(&hashes);
    if bad.is_empty() {
        CHECKS.with_label_values(&["agree"]).inc();
        tracing::info!(
            revision,
            members = hashes.len(),
            "initial corruption check: the keyspace matches every peer that answered"
        );
        return Ok(());
    }
    if bad.contains(&node.id()) {
        CHECKS.with_label_values(&["damaged"]).inc();
        node.mark_damaged();
        anyhow::bail!(
            "initial corruption check: this member's keyspace differs from its peers' at revision {revision} \
             (hashes {}): its data is damaged and it will not serve. Repair it from a peer \
             (README, \"Repairing a damaged member\"), or start with \
             --experimental-initial-corrupt-check=false to inspect it",
            describe(&hashes)
        );
    }
    CHECKS.with_label_values(&["damaged"]).inc();
    tracing::error!(
        revision,
        hashes = %describe(&hashes),
        damaged = %ids(&bad),
        "initial corruption check: a peer's keyspace differs from the majority's"
    );
    Ok(())
}

/// One round of the leader's check; returns the members found damaged.
pub async fn leader_round(node: &Arc<Node>) -> Result<Vec<u64>, StoreError> {
    let revision = node.mvcc().current_revision();
    let hashes = gather(node, revision, PEER_HASH_TIMEOUT_MS).await?;
    if hashes.len() < 2 {
        CHECKS.with_label_values(&["undecided"]).inc();
        return Ok(Vec::new());
    }
    let bad = damaged(&hashes);
    if bad.is_empty() {
        CHECKS.with_label_values(&["agree"]).inc();
        tracing::info!(revision, hashes = %describe(&hashes), "corruption check: members agree");
        return Ok(bad);
    }
    CHECKS.with_label_values(&["damaged"]).inc();
    tracing::error!(
        revision,
        hashes = %describe(&hashes),
        damaged = %ids(&bad),
        "corruption check: members' keyspaces differ at the same revision; raising CORRUPT"
    );
    for m in &bad {
        if let Err(e) = node.raise_corrupt(*m).await {
            tracing::error!(member = format_args!("{m:x}"), error = %e, "could not raise CORRUPT");
        }
    }
    Ok(bad)
}

/// The leader's periodic check, every `every` (never when zero).
pub fn start_periodic(node: Arc<Node>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if node.status().fatal.is_some() {
                return;
            }
            if !node.status().is_leader {
                continue;
            }
            if let Err(e) = leader_round(&node).await {
                tracing::warn!(error = %e, "corruption check could not hash this member's keyspace");
            }
        }
    }))
}

/// The answering side of `Raft.HashKv`: waits (bounded) to reach the
/// revision, then hashes there.
pub async fn answer(node: &Arc<Node>, revision: i64) -> Result<PeerHashKvResponse, Status> {
    if revision <= 0 {
        return Err(Status::invalid_argument(
            "a hash request names a revision above 0",
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(REACH_REVISION_TIMEOUT_MS);
    while node.mvcc().current_revision() < revision {
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::unavailable(format!(
                "this member is at revision {}, behind {revision}",
                node.mvcc().current_revision()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = own_hash(node, revision)
        .await
        .map_err(crate::errors::status)?;
    Ok(PeerHashKvResponse {
        member_id: h.member,
        hash: h.hash,
        compact_revision: h.compact_revision,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(member: u64, hash: u32) -> MemberHash {
        MemberHash {
            member,
            hash,
            compact_revision: 0,
        }
    }

    #[test]
    fn the_minority_is_damaged_and_a_tie_condemns_everyone() {
        assert!(damaged(&[h(1, 7), h(2, 7), h(3, 7)]).is_empty());
        assert!(damaged(&[h(1, 7)]).is_empty());
        assert_eq!(damaged(&[h(1, 7), h(2, 9), h(3, 7)]), vec![2]);
        assert_eq!(
            damaged(&[h(1, 9), h(2, 7), h(3, 7)]),
            vec![1],
            "a leader can be the damaged one"
        );
        assert_eq!(damaged(&[h(1, 7), h(2, 9)]), vec![1, 2]);
        assert_eq!(damaged(&[h(1, 1), h(2, 2), h(3, 3)]), vec![1, 2, 3]);
        assert_eq!(
            damaged(&[h(1, 1), h(2, 1), h(3, 2), h(4, 2)]),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            damaged(&[h(1, 1), h(2, 1), h(3, 1), h(4, 2), h(5, 3)]),
            vec![4, 5]
        );
    }
}
