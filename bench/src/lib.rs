//! An etcd v3 load generator. It speaks only the public etcd API, so the
//! same run can measure secretd and etcd. It prints numbers; it asserts
//! nothing (benchmarks on a shared 2-core machine are not tests).

pub mod agent;
pub mod checkperf;
pub mod compare;
pub mod floor;
pub mod html;
pub mod markdown;
pub mod report;
pub mod results;
pub mod scale;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use secretd_client::pb::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use secretd_client::pb::secretstore::{secrets_client::SecretsClient, CreateRequest};
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
    /// Reads only: the whole key space is already there (`bench scale`
    /// fills it), so reads draw from all of it and nothing is preloaded.
    pub preloaded: bool,
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

impl Workload {
    fn reads(self) -> bool {
        matches!(self, Workload::GetLinearizable | Workload::GetSerializable)
    }
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
    channel_within(endpoint, Duration::from_secs(10))
}

/// A lazily connected channel to `endpoint` (`host:port` means plaintext
/// HTTP), each call bounded by `timeout`.
pub(crate) fn channel_within(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Ok(Channel::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .connect_lazy())
}

/// Keys a read workload draws from (loaded first, not measured).
const READ_KEYS_MAX: u64 = 10_000;

/// Runs one workload to completion and reports.
pub async fn run(spec: &LoadSpec) -> Result<Report> {
    Prepared::new(spec).await?.drive().await
}

/// A workload ready to run: its channels made and, for reads, its key
/// space loaded. Splitting the two lets `compare::measure` count the
/// members' CPU for the workload alone: a read row's CPU per read must not
/// carry the puts that gave it keys to read.
pub struct Prepared {
    spec: LoadSpec,
    /// One channel per connection: KV and Secrets calls share them, so a
    /// secret create row opens as many connections as a put row.
    channels: Vec<Channel>,
}

impl Prepared {
    pub async fn new(spec: &LoadSpec) -> Result<Prepared> {
        if spec.endpoints.is_empty()
            || spec.connections == 0
            || spec.in_flight == 0
            || spec.key_space == 0
        {
            bail!("endpoints, connections, in-flight and key space must all be non-empty");
        }
        let channels: Vec<Channel> = (0..spec.connections)
            .map(|i| channel(&spec.endpoints[i % spec.endpoints.len()]))
            .collect::<Result<_>>()?;
        if spec.workload.reads() && !spec.preloaded {
            preload(kv(&channels[0]), spec).await?;
        }
        if spec.workload == Workload::SecretCreate {
            warm_keyring(&channels[0]).await?;
        }
        Ok(Prepared {
            spec: spec.clone(),
            channels,
        })
    }

    /// Issues the workload's requests until its count or time runs out.
    pub async fn drive(self) -> Result<Report> {
        let Prepared { spec, channels } = self;
        let issued = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(spec.in_flight);
        for w in 0..spec.in_flight {
            let worker = Worker {
                w,
                kv: kv(&channels[w % channels.len()]),
                secrets: SecretsClient::new(channels[w % channels.len()].clone()),
                run_id: rand::random(),
                spec: spec.clone(),
            };
            tasks.push(tokio::spawn(worker.run(issued.clone(), started)));
        }
        let mut report = Report {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            first_error: None,
        };
        for t in tasks {
            let part = t.await?;
            report.latency_us.add(&part.latency_us)?;
            report.ops += part.ops;
            report.errors += part.errors;
            if report.first_error.is_none() {
                report.first_error = part.first_error;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

fn kv(c: &Channel) -> KvClient<Channel> {
    KvClient::new(c.clone()).max_decoding_message_size(64 << 20)
}

/// Reads need keys to find: loads the key space first.
async fn preload(mut c: KvClient<Channel>, spec: &LoadSpec) -> Result<()> {
    let value = vec![b'v'; spec.value_bytes];
    for k in 0..spec.key_space.min(READ_KEYS_MAX) {
        c.put(PutRequest {
            key: key(k),
            value: value.clone(),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// A cluster's first secret creates its key-encryption key (a KEK made,
/// registered and fetched by every member: ~20 ms for the requests in
/// flight then): once per cluster, not per create, so it is done before
/// the measured window, as a read row's keys are loaded before it.
async fn warm_keyring(c: &Channel) -> Result<()> {
    SecretsClient::new(c.clone())
        .create(CreateRequest {
            name: format!("bench-warm-{:08x}", rand::random::<u32>()),
            data: b"warm".to_vec(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// One request in flight: issues requests back to back until the shared
/// count or the time limit runs out.
struct Worker {
    w: usize,
    kv: KvClient<Channel>,
    secrets: SecretsClient<Channel>,
    run_id: u32,
    spec: LoadSpec,
}

impl Worker {
    async fn run(mut self, issued: Arc<AtomicU64>, started: Instant) -> Report {
        let mut part = Report {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("histogram bounds"),
            first_error: None,
        };
        let value = vec![b'x'; self.spec.value_bytes];
        let mut rng = rand::rngs::StdRng::from_entropy();
        let keys = if self.spec.workload.reads() && !self.spec.preloaded {
            self.spec.key_space.min(READ_KEYS_MAX)
        } else {
            self.spec.key_space
        };
        while issued.fetch_add(1, Ordering::Relaxed) < self.spec.total_ops
            && started.elapsed() < self.spec.time_limit
        {
            let k = key(rng.gen_range(0..keys));
            let t = Instant::now();
            match self.one(k, &value, (part.ops, part.errors)).await {
                Ok(()) => {
                    part.ops += 1;
                    let _ = part
                        .latency_us
                        .record(t.elapsed().as_micros().max(1) as u64);
                }
                Err(e) => {
                    part.errors += 1;
                    part.first_error
                        .get_or_insert_with(|| e.message().to_string());
                }
            }
        }
        part
    }

    /// One request; `(ops, errors)` so far make a secret's name unique.
    async fn one(
        &mut self,
        k: Vec<u8>,
        value: &[u8],
        (ops, errors): (u64, u64),
    ) -> Result<(), tonic::Status> {
        match self.spec.workload {
            Workload::Put => self
                .kv
                .put(PutRequest {
                    key: k,
                    value: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::GetLinearizable | Workload::GetSerializable => self
                .kv
                .range(RangeRequest {
                    key: k,
                    serializable: self.spec.workload == Workload::GetSerializable,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::SecretCreate => self
                .secrets
                .create(CreateRequest {
                    name: format!("bench-{:08x}-{}-{ops}-{errors}", self.run_id, self.w),
                    labels: Default::default(),
                    data: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        }
    }
}

/// The `k`th key of every workload (`bench scale` fills them in order).
pub(crate) fn key(k: u64) -> Vec<u8> {
    format!("bench/{k:012}").into_bytes()
}
