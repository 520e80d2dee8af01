//! `bench scale`'s agent row: one node agent per backend (FUSE and tmpfs)
//! for a node with 1,000 tasks that all mount one secret, and the time
//! from a `secret rotate`'s answer to every one of the 1,000 files showing
//! the new bytes. The files are read in order, each until it shows the new
//! value, so the time includes one pass of 1,000 reads through the mount
//! (the reader's own cost, a few ms on FUSE); the two backends are read at
//! once, on two threads. Needs root and /dev/fuse.

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
    let agents = [
        start_agent(&secretd, &endpoint, "fuse", dir.path())?,
        start_agent(&secretd, &endpoint, "tmpfs", dir.path())?,
    ];
    let files: Vec<Vec<PathBuf>> = agents
        .iter()
        .map(|a| {
            (0..TASKS)
                .map(|t| a.mount.join(format!("scale.{t}/password")))
                .collect()
        })
        .collect();
    all_visible(&files, value(0), Instant::now()).await?;
    let mut secrets = SecretsClient::new(ch);
    let mut delays = [Vec::new(), Vec::new()];
    for i in 1..=ROTATIONS {
        let v = value(i);
        secrets
            .rotate(RotateRequest {
                name_or_id: SECRET.into(),
                data: v.clone(),
            })
            .await
            .context("secret rotate")?;
        let took = all_visible(&files, v, Instant::now()).await?;
        for k in 0..2 {
            delays[k].push(took[k].as_secs_f64() * 1000.0);
        }
    }
    let q = |mut d: Vec<f64>| {
        d.sort_by(f64::total_cmp);
        let at = |p: f64| d[((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1];
        [at(0.5), at(0.99), d[d.len() - 1]]
    };
    let [fuse, tmpfs] = delays;
    Ok(RotationRow {
        fuse: q(fuse),
        tmpfs: q(tmpfs),
    })
}

/// Reads each backend's files (on a thread each) until every one holds
/// `want`; per backend, the time from `from` until the last did.
async fn all_visible(
    files: &[Vec<PathBuf>],
    want: Vec<u8>,
    from: Instant,
) -> Result<Vec<Duration>> {
    let readers: Vec<_> = files
        .iter()
        .cloned()
        .map(|fs| {
            let want = want.clone();
            tokio::task::spawn_blocking(move || -> Result<Duration> {
                for f in &fs {
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
    let mut out = Vec::new();
    for r in readers {
        out.push(r.await??);
    }
    Ok(out)
}
