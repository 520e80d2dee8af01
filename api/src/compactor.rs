//! Auto-compaction (etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`): on the leader only, a background task
//! proposes compactions through the ordinary Compact path.
//!
//! - `revision`: keep the newest N revisions; checked every 5 minutes (as
//!   etcd), or every retention-worth of seconds if shorter in tests.
//! - `periodic`: keep history younger than the retention; the task samples
//!   the revision every retention/10 and compacts to the sample that is a
//!   full retention old.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use secretd_store::node::Node;
use secretd_store::pb::etcdserverpb::CompactionRequest;
use secretd_store::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Periodic,
    Revision,
}

/// Parses a retention: for `periodic` a duration (`1h`, `30m`, `10s`, or a
/// bare number of hours, as etcd reads it); for `revision` a count.
pub fn parse_retention(mode: Mode, s: &str) -> Result<Retention, String> {
    match mode {
        Mode::Revision => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Retention::Revisions)
            .ok_or_else(|| {
                format!("--auto-compaction-retention {s:?}: want a positive revision count")
            }),
        Mode::Periodic => {
            let d = match s.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours * 3600),
                Err(_) => secretd_client::format::parse_duration(s)?,
            };
            if d.is_zero() {
                return Err("--auto-compaction-retention must be positive".into());
            }
            Ok(Retention::Age(d))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    Revisions(i64),
    Age(Duration),
}

pub fn start(node: Arc<Node>, retention: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        match retention {
            Retention::Revisions(keep) => {
                let every = Duration::from_secs(300).min(Duration::from_secs(keep.max(1) as u64));
                loop {
                    tokio::time::sleep(every).await;
                    let target = node.mvcc().current_revision() - keep;
                    compact(&node, target).await;
                }
            }
            Retention::Age(age) => {
                let every = (age / 10).max(Duration::from_secs(1));
                let keep = (age.as_millis() / every.as_millis()).max(1) as usize;
                let mut samples: VecDeque<i64> = VecDeque::new();
                loop {
                    tokio::time::sleep(every).await;
                    samples.push_back(node.mvcc().current_revision());
                    if samples.len() > keep {
                        let target = samples.pop_front().unwrap_or(0);
                        compact(&node, target).await;
                    }
                }
            }
        }
    })
}

async fn compact(node: &Node, target: i64) {
    if !node.status().is_leader || target <= node.mvcc().compact_revision() {
        return;
    }
    match node
        .compact(
            CompactionRequest {
                revision: target,
                physical: false,
            },
            None,
        )
        .await
    {
        Ok(_) => tracing::info!(revision = target, "auto-compacted"),
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => {
            tracing::warn!(revision = target, error = %e, "auto-compaction failed; will retry")
        }
    }
}
