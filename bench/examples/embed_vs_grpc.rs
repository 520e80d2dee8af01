//! What embedding saves: one embedded member (`secretd_api::embed`) with a
//! plaintext loopback client listener, and the same puts and gets made N
//! times through the in-process client and N times over loopback gRPC
//! (`secretd-client`'s stubs), one request in flight. Prints per-op
//! latency (p50, p99) and this process's CPU per op (user + sys from
//! getrusage; the member runs in this process, so both sides count).
//! Evidence for the benchmark note, not a test:
//!   cargo run --release -p bench --example embed_vs_grpc -- [N]

use std::time::{Duration, Instant};

use secretd_api::embed::{Client, Config, Member, Role};
use secretd_client::pb::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use tonic::transport::Channel;

/// This process's user + system CPU so far, in microseconds.
fn cpu_us() -> u64 {
    // SAFETY: getrusage with a valid pointer to a local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Latencies (µs, sorted) and CPU µs per op of `n` runs of `op`.
struct Run {
    lat: Vec<u64>,
    cpu_per_op: f64,
}

impl Run {
    fn pct(&self, p: f64) -> u64 {
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat.get(i).copied().unwrap_or(0)
    }
}

async fn measure<F, Fut>(n: usize, mut op: F) -> anyhow::Result<Run>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut lat = Vec::with_capacity(n);
    let cpu0 = cpu_us();
    for i in 0..n {
        let t = Instant::now();
        op(i).await?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    let cpu_per_op = (cpu_us() - cpu0) as f64 / n as f64;
    lat.sort_unstable();
    Ok(Run { lat, cpu_per_op })
}

fn key(i: usize) -> Vec<u8> {
    format!("bench/{:06}", i % 1000).into_bytes()
}

fn report(name: &str, inproc: &Run, grpc: &Run) {
    println!(
        "RESULT {name} inproc_p50_us={} inproc_p99_us={} grpc_p50_us={} grpc_p99_us={} inproc_cpu_us={:.1} grpc_cpu_us={:.1}",
        inproc.pct(0.5),
        inproc.pct(0.99),
        grpc.pct(0.5),
        grpc.pct(0.99),
        inproc.cpu_per_op,
        grpc.cpu_per_op
    );
}

async fn puts(n: usize, c: &Client, kv: &KvClient<Channel>) -> anyhow::Result<(Run, Run)> {
    let value = vec![b'v'; 64];
    let inproc = measure(n, |i| {
        let (c, v) = (c.clone(), value.clone());
        async move { Ok(c.put(&key(i), &v).await.map(drop)?) }
    })
    .await?;
    let grpc = measure(n, |i| {
        let (mut kv, value) = (kv.clone(), value.clone());
        let req = PutRequest {
            key: key(i),
            value,
            ..Default::default()
        };
        async move { Ok(kv.put(req).await.map(drop)?) }
    })
    .await?;
    Ok((inproc, grpc))
}

async fn gets(n: usize, c: &Client, kv: &KvClient<Channel>) -> anyhow::Result<(Run, Run)> {
    let inproc = measure(n, |i| {
        let c = c.clone();
        async move { Ok(c.get(&key(i)).await.map(drop)?) }
    })
    .await?;
    let grpc = measure(n, |i| {
        let mut kv = kv.clone();
        let req = RangeRequest {
            key: key(i),
            ..Default::default()
        };
        async move { Ok(kv.range(req).await.map(drop)?) }
    })
    .await?;
    Ok((inproc, grpc))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // On a worker thread, as a program's requests would run (not the
    // main thread's `block_on`).
    tokio::spawn(run()).await?
}

async fn run() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5000);
    let dir = tempfile::tempdir()?;
    let config =
        Config::new("bench", dir.path().join("member")).client_urls(&["http://127.0.0.1:0"]);
    let member = Member::start(config).await?;
    member.ready(Duration::from_secs(30)).await?;
    let addr = member.client_addrs()[0];
    let c = member.client(Role::Admin);
    let kv = KvClient::new(secretd_client::channel(&addr.to_string(), None, None)?);
    // Warm both paths (connection, first keys) before measuring.
    puts(200, &c, &kv).await?;
    // Two rounds: the second is steady state (segments, memtables, caches
    // warmed by the first); a difference between them is noise to say.
    for round in 1..=2 {
        let (inproc, grpc) = puts(n, &c, &kv).await?;
        report(&format!("embed-put round={round}"), &inproc, &grpc);
        let (inproc, grpc) = gets(n, &c, &kv).await?;
        report(&format!("embed-get round={round}"), &inproc, &grpc);
    }
    drop(kv);
    member.stop().await?;
    Ok(())
}
