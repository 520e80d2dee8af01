//! An etcd v3 load generator. It speaks only the public etcd API, so the
//! same run can measure secretd and etcd. It prints numbers; it asserts
//! nothing (benchmarks on a shared 2-core machine are not tests).

pub mod compare;
pub mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use secretd_api::pb::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use secretd_api::pb::secretstore::{secrets_client::SecretsClient, CreateRequest};
use tonic::transport::Channel;

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub endpoints: Vec<String>,
    /// gRPC connections, spread over the endpoints round-robin.
    pub connections: usize,
    pub in_flight: usize,
    pub total_ops: u64,
    pub time_limit: Duration,
    pub key_space: u64,
    pub value_bytes: usize,
    pub workload: Workload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    GetLinearizable,
    GetSerializable,
    /// `secretstore.v1` Secrets.Create with fresh names: sealing, the
    /// name-uniqueness txn and its reads, against a plain put.
    SecretCreate,
}

#[derive(Debug)]
pub struct Report {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Report {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn summary(&self) -> String {
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        format!(
            "{} ops in {:.2}s: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, {} errors{}",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.errors,
            self.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    }
}

fn channel(endpoint: &str) -> Result<Channel> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Channel::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

/// Runs one workload to completion and reports.
pub async fn run(spec: &LoadSpec) -> Result<Report> {
    if spec.endpoints.is_empty()
        || spec.connections == 0
        || spec.in_flight == 0
        || spec.key_space == 0
    {
        bail!("endpoints, connections, in-flight and key space must all be non-empty");
    }
    let clients: Vec<KvClient<Channel>> = (0..spec.connections)
        .map(|i| {
            channel(&spec.endpoints[i % spec.endpoints.len()])
                .map(|c| KvClient::new(c).max_decoding_message_size(64 << 20))
        })
        .collect::<Result<_>>()?;
    let reads = matches!(
        spec.workload,
        Workload::GetLinearizable | Workload::GetSerializable
    );
    if reads {
        // Reads need keys to find: load the key space first (not measured).
        let value = vec![b'v'; spec.value_bytes];
        let mut c = clients[0].clone();
        for k in 0..spec.key_space.min(10_000) {
            c.put(PutRequest {
                key: key(k),
                value: value.clone(),
                ..Default::default()
            })
            .await?;
        }
    }
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(spec.in_flight);
    for w in 0..spec.in_flight {
        let mut client = clients[w % clients.len()].clone();
        let mut secrets = SecretsClient::new(channel(&spec.endpoints[w % spec.endpoints.len()])?);
        let run_id: u32 = rand::random();
        let issued = issued.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
            let value = vec![b'x'; spec.value_bytes];
            let mut rng = rand::rngs::StdRng::from_entropy();
            while issued.fetch_add(1, Ordering::Relaxed) < spec.total_ops
                && started.elapsed() < spec.time_limit
            {
                let k = key(
                    rng.gen_range(0..spec.key_space.min(if reads { 10_000 } else { u64::MAX }))
                );
                let t = Instant::now();
                let res = match spec.workload {
                    Workload::Put => client
                        .put(PutRequest {
                            key: k,
                            value: value.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Workload::GetLinearizable | Workload::GetSerializable => client
                        .range(RangeRequest {
                            key: k,
                            serializable: spec.workload == Workload::GetSerializable,
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    Workload::SecretCreate => secrets
                        .create(CreateRequest {
                            name: format!("bench-{run_id:08x}-{w}-{ops}-{errors}"),
                            labels: Default::default(),
                            data: value.clone(),
                        })
                        .await
                        .map(|_| ()),
                };
                match res {
                    Ok(()) => {
                        ops += 1;
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.message().to_string());
                    }
                }
            }
            (hist, ops, errors, first_error)
        }));
    }
    let mut report = Report {
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        first_error: None,
    };
    for t in tasks {
        let (h, ops, errors, fe) = t.await?;
        report.latency_us.add(&h)?;
        report.ops += ops;
        report.errors += errors;
        if report.first_error.is_none() {
            report.first_error = fe;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn key(k: u64) -> Vec<u8> {
    format!("bench/{k:012}").into_bytes()
}
