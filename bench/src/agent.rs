//! `bench agent`: what reading a secret through the node agent costs.
//!
//! One single-member secretd (release build), one 200-byte secret given to
//! a task on node n1, and two agents for that node: one with the FUSE
//! backend, one with the tmpfs backend (a plain tmpfs the agent writes
//! into, the speed a FUSE mount is measured against). Prints the
//! `open`+`read`+`close` latency through each (a tight loop of raw system
//! calls, as a program reading /run/secrets would make them), and how long
//! a rotation takes to show in each mount. Needs root and /dev/fuse; it
//! says so and stops where they are missing. Nothing here asserts.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use secretd_client::pb::secretstore::{
    secrets_client::SecretsClient, tasks_client::TasksClient, CreateRequest, Mount, RotateRequest,
    Task,
};
use tonic::transport::Channel;

use crate::compare::{self, System};

/// open+read+close iterations per round, after `WARMUP` untimed ones (as
/// the C loop: 200,000 after 1,000).
const ITERATIONS: u32 = 200_000;
const WARMUP: u32 = 1_000;
const ROUNDS: usize = 3;
const ROTATIONS: usize = 200;
const SECRET_BYTES: usize = 200;
/// How long a rotation may take to show before the run gives up on it.
const VISIBLE_TIMEOUT_MS: u64 = 10_000;

/// A running `secretd agent`, stopped with SIGTERM (so it unmounts).
pub(crate) struct AgentProc {
    child: Child,
    pub(crate) mount: PathBuf,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub(crate) fn check_root_and_fuse() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench agent needs root (it mounts FUSE and tmpfs file systems)");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("bench agent needs /dev/fuse (modprobe fuse), which this machine lacks");
    }
    Ok(())
}

pub(crate) fn start_agent(
    secretd: &Path,
    endpoint: &str,
    backend: &str,
    dir: &Path,
) -> Result<AgentProc> {
    let mount = dir.join(backend);
    std::fs::create_dir_all(&mount)?;
    let log = std::fs::File::create(dir.join(format!("agent-{backend}.log")))?;
    let child = Command::new(secretd)
        .args([
            "agent",
            "--node",
            "n1",
            "--backend",
            backend,
            "--endpoints",
            endpoint,
        ])
        .arg("--mount")
        .arg(&mount)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {} agent", secretd.display()))?;
    Ok(AgentProc { child, mount })
}

/// One open+read+close, as raw system calls; the bytes read.
fn open_read_close(path: &CString, buf: &mut [u8]) -> isize {
    // SAFETY: a NUL-terminated path; `buf` is valid for its length; the
    // descriptor is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    }
}

/// Latency of open+read+close of `path`: (mean µs, p50 µs, p99 µs).
fn read_latency(path: &Path, want: usize) -> Result<(f64, f64, f64)> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..WARMUP {
        if open_read_close(&c, &mut buf) != want as isize {
            bail!("reading {} failed or came back short", path.display());
        }
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        let n = open_read_close(&c, &mut buf);
        h.record(t.elapsed().as_nanos().max(1) as u64)?;
        if n != want as isize {
            bail!("reading {} failed or came back short", path.display());
        }
    }
    let mean_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(ITERATIONS);
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok((mean_us, q(0.5), q(0.99)))
}

/// Makes the secret and the task, and waits until both mounts show it.
async fn set_up(ch: Channel, files: &[PathBuf], first: &[u8]) -> Result<()> {
    SecretsClient::new(ch.clone())
        .create(CreateRequest {
            name: "bench_pw".into(),
            labels: Default::default(),
            data: first.to_vec(),
            ..Default::default()
        })
        .await
        .context("secret create")?;
    TasksClient::new(ch)
        .create(Task {
            id: "bench.1".into(),
            node: "n1".into(),
            secrets: vec![Mount {
                source: "bench_pw".into(),
                target: "password".into(),
                mode: 0o444,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .context("task create")?;
    for f in files {
        wait_visible(f.clone(), first.to_vec(), Instant::now()).await?;
    }
    Ok(())
}

/// Polls `file` until it holds `want`; the time since `from`.
async fn wait_visible(file: PathBuf, want: Vec<u8>, from: Instant) -> Result<Duration> {
    let deadline = from + Duration::from_millis(VISIBLE_TIMEOUT_MS);
    loop {
        if std::fs::read(&file).ok() == Some(want.clone()) {
            return Ok(from.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not show the new value within {VISIBLE_TIMEOUT_MS} ms",
                file.display()
            );
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A 200-byte value unique to `i`.
fn value(i: usize) -> Vec<u8> {
    let mut v = format!("v{i:08}-").into_bytes();
    v.resize(SECRET_BYTES, b'x');
    v
}

/// `ROTATIONS` rotations; per mount, the time from the rotate call's
/// answer to the new bytes showing (p50, p99, max in ms).
async fn rotation_delays(ch: Channel, files: &[PathBuf]) -> Result<Vec<(f64, f64, f64)>> {
    let mut secrets = SecretsClient::new(ch);
    let mut delays = vec![Vec::new(); files.len()];
    for i in 1..=ROTATIONS {
        let v = value(i);
        secrets
            .rotate(RotateRequest {
                name_or_id: "bench_pw".into(),
                data: v.clone(),
            })
            .await
            .context("secret rotate")?;
        let answered = Instant::now();
        let waits = files
            .iter()
            .map(|f| wait_visible(f.clone(), v.clone(), answered));
        for (k, d) in futures_join(waits).await?.into_iter().enumerate() {
            delays[k].push(d.as_secs_f64() * 1000.0);
        }
    }
    Ok(delays
        .into_iter()
        .map(|mut d| {
            d.sort_by(f64::total_cmp);
            let at = |p: f64| d[((d.len() as f64 * p).ceil() as usize).clamp(1, d.len()) - 1];
            (at(0.5), at(0.99), d[d.len() - 1])
        })
        .collect())
}

/// Runs the waits side by side, so one mount's delay does not count
/// against the other's.
async fn futures_join<F, T>(futs: impl Iterator<Item = F>) -> Result<Vec<T>>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

pub async fn run() -> Result<()> {
    check_root_and_fuse()?;
    let secretd = compare::ensure_secretd()?;
    let cluster = compare::start(System::Secretd, compare::base_port(), 1)?;
    compare::ready(&cluster).await?;
    let endpoint = cluster.endpoints[0].clone();
    let dir = tempfile::tempdir()?;
    let agents = [
        start_agent(&secretd, &endpoint, "fuse", dir.path())?,
        start_agent(&secretd, &endpoint, "tmpfs", dir.path())?,
    ];
    let files: Vec<PathBuf> = agents
        .iter()
        .map(|a| a.mount.join("bench.1/password"))
        .collect();
    let ch = Channel::from_shared(format!("http://{endpoint}"))?.connect_lazy();
    set_up(ch.clone(), &files, &value(0)).await?;

    // Alternate the two, several rounds; the median round of each counts.
    let mut lat = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (k, f) in files.iter().enumerate() {
            let r = read_latency(f, SECRET_BYTES)?;
            eprintln!(
                "round {} {:<5}: open+read+close mean {:.2} us, p50 {:.2} us, p99 {:.2} us",
                round + 1,
                ["fuse", "tmpfs"][k],
                r.0,
                r.1,
                r.2
            );
            lat[k].push(r);
        }
    }
    let rot = rotation_delays(ch, &files).await?;
    print_report(&mut lat, &rot);
    Ok(())
}

fn print_report(lat: &mut [Vec<(f64, f64, f64)>; 2], rot: &[(f64, f64, f64)]) {
    let med: Vec<(f64, f64, f64)> = lat
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v[v.len() / 2]
        })
        .collect();
    println!();
    println!(
        "{:<8} {:>12} {:>10} {:>10} {:>16} {:>16} {:>16}",
        "mount", "mean us", "p50 us", "p99 us", "rotate p50 ms", "rotate p99 ms", "rotate max ms"
    );
    for (k, name) in ["fuse", "tmpfs"].iter().enumerate() {
        println!(
            "{name:<8} {:>12.2} {:>10.2} {:>10.2} {:>16.2} {:>16.2} {:>16.2}",
            med[k].0, med[k].1, med[k].2, rot[k].0, rot[k].1, rot[k].2
        );
    }
    let ratio = med[0].0 / med[1].0.max(1e-9);
    println!(
        "({ROUNDS} rounds of {ITERATIONS} open+read+close of a {SECRET_BYTES}-byte secret after {WARMUP} warm-up, median round;"
    );
    println!(" rotate: {ROTATIONS} rotations, from the rotate call's answer to the new bytes in the mount)");
    println!(
        "RESULT agent fuse_vs_tmpfs={ratio:.2} fuse_us={:.2} tmpfs_us={:.2} rotate_p50_ms={:.2} rotate_p99_ms={:.2}",
        med[0].0, med[1].0, rot[0].0, rot[0].1
    );
}
