//! `bench scale`'s agent row: one node agent for a node with 1,000 tasks
//! that all mount one secret, and the time from a `secret rotate`'s answer
//! to every one of the 1,000 files showing the new bytes. The files are
//! read in order, each until it shows the new value, so the time includes
//! one pass of 1,000 reads through the mount (the reader's own cost, a
//! few ms). Each backend (FUSE, then tmpfs) is measured alone, with its
//! own agent, as a node runs one: two agents at once on a 2-core machine
//! each took the other's CPU. Needs root and /dev/fuse.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use secretd_client::pb::secretstore::{
    secrets_client::SecretsClient, tasks_client::TasksClient, CreateRequest, Mount, RotateRequest,
    Task,
};
use tonic::transport::Channel;

use crate::channel_within;

use crate::agent::{check_root_and_fuse, start_agent};
use crate::compare::{self, ClusterProc};

pub const TASKS: usize = 1_000;
const ROTATIONS: usize = 50;
/// Threads reading the files after a rotation, each its share. One alone
/// measured mostly its own cold reads: on FUSE each is three round trips
/// to the agent (the task directory's attributes, the new name, its
/// bytes), and on this VM a round trip that wakes the other CPU costs
/// tens of µs, so one reader's pass took 110-170 ms of a rotation the
/// agent had applied in 10.
const READERS: usize = 4;
const SECRET: &str = "scale_rotated";
const SECRET_BYTES: usize = 200;
/// How long every file may take to show a value before the run gives up.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Per backend (FUSE, tmpfs): p50, p99 and max ms from a rotation's answer
/// to all `TASKS` files showing it.
#[derive(Clone, Debug, Default)]
pub struct RotationRow {
    pub fuse: [f64; 3],
    pub tmpfs: [f64; 3],
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("r{i:08}-").into_bytes();
    v.resize(SECRET_BYTES, b'x');
    v
}

/// The secret and `TASKS` tasks on node n1 that each mount it.
async fn set_up(ch: Channel) -> Result<()> {
    SecretsClient::new(ch.clone())
        .create(CreateRequest {
            name: SECRET.into(),
            data: value(0),
            ..Default::default()
        })
        .await
        .context("secret create")?;
    let mut tasks = TasksClient::new(ch.clone());
    for t in 0..TASKS {
        tasks
            .create(Task {
                id: format!("scale.{t}"),
                node: "n1".into(),
                secrets: vec![Mount {
                    source: SECRET.into(),
                    target: "password".into(),
                    mode: 0o444,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .with_context(|| format!("task create scale.{t}"))?;
    }
    Ok(())
}

/// Runs the row against `c` (a secretd cluster).
pub async fn rotation(c: &ClusterProc) -> Result<RotationRow> {
    check_root_and_fuse()?;
    let secretd = compare::ensure_secretd()?;
    let endpoint = c.endpoints[0].clone();
    let ch = channel_within(&endpoint, Duration::from_secs(30))?;
    set_up(ch.clone()).await?;
    let dir = tempfile::tempdir()?;
    let mut secrets = SecretsClient::new(ch);
    let mut version = 0;
    let mut rows = Vec::new();
    // One agent at a time, as a node runs one backend: two at once on a
    // small machine each took the other's CPU for its rewrite.
    for backend in ["fuse", "tmpfs"] {
        let agent = start_agent(&secretd, &endpoint, backend, dir.path())?;
        let files: Vec<PathBuf> = (0..TASKS)
            .map(|t| agent.mount.join(format!("scale.{t}/password")))
            .collect();
        all_visible(&files, value(version), Instant::now()).await?;
        let mut delays = Vec::new();
        for _ in 0..ROTATIONS {
            version += 1;
            let v = value(version);
            secrets
                .rotate(RotateRequest {
                    name_or_id: SECRET.into(),
                    data: v.clone(),
                })
                .await
                .context("secret rotate")?;
            let took = all_visible(&files, v, Instant::now()).await?;
            delays.push(took.as_secs_f64() * 1000.0);
        }
        drop(agent);
        rows.push(delays);
    }
    let q = |mut d: Vec<f64>| {
        if d.is_empty() {
            return [f64::NAN; 3];
        }
        d.sort_by(f64::total_cmp);
        let at = |p: f64| d[((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1];
        [at(0.5), at(0.99), d[d.len() - 1]]
    };
    let tmpfs = rows.pop().unwrap_or_default();
    let fuse = rows.pop().unwrap_or_default();
    Ok(RotationRow {
        fuse: q(fuse),
        tmpfs: q(tmpfs),
    })
}

/// Reads `files` until every one holds `want`, on `READERS` threads (each
/// a share, as the tasks' containers each read their own); the time from
/// `from` until the last did.
async fn all_visible(files: &[PathBuf], want: Vec<u8>, from: Instant) -> Result<Duration> {
    let want = std::sync::Arc::new(want);
    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let share: Vec<PathBuf> = files.iter().skip(r).step_by(READERS).cloned().collect();
            let want = want.clone();
            tokio::task::spawn_blocking(move || -> Result<Duration> {
                for f in &share {
                    while std::fs::read(f).ok().as_deref() != Some(&want[..]) {
                        if from.elapsed() > VISIBLE_TIMEOUT {
                            bail!(
                                "{} did not show the value within {VISIBLE_TIMEOUT:?}",
                                f.display()
                            );
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                Ok(from.elapsed())
            })
        })
        .collect();
    let mut last = Duration::ZERO;
    for r in readers {
        last = last.max(r.await??);
    }
    Ok(last)
}
