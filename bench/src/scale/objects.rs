//! `bench scale`'s secret rows (secretd only: etcd has no secrets): a
//! 3-member cluster filled to 1k, 10k and 100k secrets of 256 B, and at
//! each size what an operator waits for: `secret create` (p50/p99 of the
//! creates that grew the store to that size, 64 in flight), `secret ls`
//! (the List calls, paged as secretctl pages them, and the real `secretctl secret ls` with its output
//! rendered), and `secret inspect` (one at a time, names drawn at random).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rand::Rng;
use secretd_client::pb::secretstore::{
    secrets_client::SecretsClient, CreateRequest, InspectRequest, ListRequest,
};
use tonic::transport::Channel;

use crate::channel_within;

use crate::compare::{ensure_release, ClusterProc};

const CREATE_IN_FLIGHT: usize = 64;
const CREATE_CONNECTIONS: usize = 16;
const VALUE_BYTES: usize = 256;
const INSPECTS: usize = 1_000;
/// `secret ls` runs per size (the median counts).
const LISTS: usize = 3;
/// Listing 100k secrets moves tens of MiB: the client takes up to this.
const LIST_BYTES_MAX: usize = 256 << 20;

/// One size's numbers.
#[derive(Clone, Debug, Default)]
pub struct SecretsPoint {
    pub secrets: u64,
    /// The cluster's first create (which makes the KEK), ms.
    pub first_create_ms: f64,
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    /// Median of `LISTS` List calls, ms.
    pub list_rpc_ms: f64,
    /// Median of `LISTS` runs of `secretctl secret ls`, ms (the process's
    /// whole life: connect, list, render).
    pub list_cli_ms: f64,
    pub inspect_p50_ms: f64,
    pub inspect_p99_ms: f64,
}

impl SecretsPoint {
    /// The row as both reports print it, after the size: create p50 and
    /// p99, ls (calls) and ls (CLI), inspect p50 and p99, in ms.
    pub fn cells(&self) -> [String; 6] {
        [
            format!("{:.2}", self.create_p50_ms),
            format!("{:.2}", self.create_p99_ms),
            format!("{:.1}", self.list_rpc_ms),
            format!("{:.1}", self.list_cli_ms),
            format!("{:.2}", self.inspect_p50_ms),
            format!("{:.2}", self.inspect_p99_ms),
        ]
    }
}

fn name(i: u64) -> String {
    format!("scale_{i:07}")
}

fn secrets_client(endpoint: &str) -> Result<SecretsClient<Channel>> {
    Ok(
        SecretsClient::new(channel_within(endpoint, Duration::from_secs(120))?)
            .max_decoding_message_size(LIST_BYTES_MAX),
    )
}

/// Measures `c` (a secretd cluster) at each of `sizes`.
pub async fn rows(c: &ClusterProc, sizes: &[u64]) -> Result<Vec<SecretsPoint>> {
    let secretctl = ensure_release("secretctl", "secretctl")?;
    let mut out = Vec::new();
    // The cluster's first secret also makes its key-encryption key: a
    // one-time cost, timed alone so it does not stand in for a create's p99.
    let t = Instant::now();
    create(c, 0, 1).await?;
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut have = 1;
    for &n in sizes {
        let created = create(c, have, n).await?;
        have = n;
        let mut p = SecretsPoint {
            secrets: n,
            first_create_ms: first_ms,
            create_p50_ms: created.value_at_quantile(0.5) as f64 / 1000.0,
            create_p99_ms: created.value_at_quantile(0.99) as f64 / 1000.0,
            ..Default::default()
        };
        (p.list_rpc_ms, p.list_cli_ms) = list(c, &secretctl, n).await?;
        (p.inspect_p50_ms, p.inspect_p99_ms) = inspect(c, n).await?;
        eprintln!("bench scale: {p:?}");
        out.push(p);
    }
    Ok(out)
}

/// Creates secrets `from..to`; their latencies (µs).
async fn create(c: &ClusterProc, from: u64, to: u64) -> Result<Histogram<u64>> {
    let next = Arc::new(AtomicU64::new(from));
    let clients: Vec<_> = (0..CREATE_CONNECTIONS)
        .map(|i| secrets_client(&c.endpoints[i % c.endpoints.len()]))
        .collect::<Result<_>>()?;
    let tasks: Vec<_> = (0..CREATE_IN_FLIGHT)
        .map(|w| {
            let mut s = clients[w % clients.len()].clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= to {
                        return Ok::<_, anyhow::Error>(h);
                    }
                    let t = Instant::now();
                    s.create(CreateRequest {
                        name: name(i),
                        data: vec![b's'; VALUE_BYTES],
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("secret create {}", name(i)))?;
                    h.record(t.elapsed().as_micros().max(1) as u64)?;
                }
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(all)
}

/// `secret ls` of all `n`: the List call and the CLI (median ms of each).
async fn list(c: &ClusterProc, secretctl: &std::path::Path, n: u64) -> Result<(f64, f64)> {
    let mut s = secrets_client(&c.endpoints[0])?;
    let (mut rpc, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..LISTS {
        let t = Instant::now();
        let mut req = ListRequest {
            page_size: 10_000,
            ..Default::default()
        };
        let mut got = 0;
        loop {
            let page = s.list(req.clone()).await?.into_inner();
            got += page.objects.len();
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
        }
        rpc.push(t.elapsed().as_secs_f64() * 1000.0);
        if got as u64 != n {
            bail!("secret ls listed {got} secrets, not {n}");
        }
        let t = Instant::now();
        let out = Command::new(secretctl)
            .args(["--endpoints", &c.endpoints[0], "secret", "ls"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", secretctl.display()))?;
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
        let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
        if !out.status.success() || lines as u64 != n + 1 {
            bail!(
                "secretctl secret ls printed {lines} lines for {n} secrets: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok((median(rpc), median(cli)))
}

/// `INSPECTS` inspects of random names, one at a time: (p50, p99) ms.
async fn inspect(c: &ClusterProc, n: u64) -> Result<(f64, f64)> {
    let mut s = secrets_client(&c.endpoints[0])?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut rng = rand::thread_rng();
    for _ in 0..INSPECTS {
        let i = rng.gen_range(0..n);
        let t = Instant::now();
        s.inspect(InspectRequest {
            name_or_id: name(i),
        })
        .await
        .with_context(|| format!("secret inspect {}", name(i)))?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok((q(0.5), q(0.99)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
