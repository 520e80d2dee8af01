//! `jepsen test`: real secretd binaries in network namespaces, concurrent
//! clients recording a history, a seeded nemesis, a final heal, and the
//! checkers. Everything a run makes (namespaces, processes, mounts) is torn
//! down by `Drop` when it ends, fails or is interrupted (SIGINT/SIGTERM end
//! the run early and clean up); namespaces of a run that was `kill -9`ed
//! are removed by the next run.
//!
//! - `net`: namespaces, bridge, iptables partitions.
//! - `nodes`: the secretd processes.
//! - `client`: the etcd v3 client.
//! - `nemesis`: the seeded fault schedule, the faults, the damage record
//!   and the heals; `keys`: the keys nemesis (KEK rotation, autolock)
//!   through `secretctl`.
//! - `register`, `append`, `watch`, `secrets`: workloads and their checks.
//! - `history`: the JSON-lines recorder.
//! - `report`: `report.html`.

pub mod append;
pub mod client;
pub mod history;
pub mod keys;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod register;
pub mod report;
pub mod secrets;
pub mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::json;

use crate::check::Verdict;
use client::Clients;
use history::{Recorder, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Register,
    Append,
    Watch,
    Secrets,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::Register,
        Workload::Append,
        Workload::Watch,
        Workload::Secrets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Append => "append",
            Workload::Watch => "watch",
            Workload::Secrets => "secrets",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: usize,
    pub time_limit_ms: u64,
    pub nemesis: Vec<nemesis::Kind>,
    pub workload: Workload,
    pub seed: u64,
    pub concurrency: usize,
    pub out: PathBuf,
    pub secretd: PathBuf,
    /// Search time for the linearizability checker.
    pub check_budget_ms: u64,
    /// How long the cluster has after the final heal to make progress.
    pub recovery_bound_ms: u64,
    pub quiet: bool,
    /// Client URLs of a cluster started by someone else (`--endpoints`):
    /// no namespaces, no members started, no nemesis; the faults are the
    /// operator's (an upgrade, member by member). Empty: the harness runs
    /// its own cluster.
    pub endpoints: Vec<String>,
    /// With `endpoints`: the run also ends when this file appears (the
    /// operator's script says it is done), whatever the time limit.
    pub until_file: Option<PathBuf>,
}

/// One checker's verdict: `valid` is None when it could not decide.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub valid: Option<bool>,
    pub ops: usize,
    pub detail: String,
}

impl Check {
    pub fn from_verdict(name: &str, v: Verdict, ops: usize) -> Check {
        let (valid, detail) = match v {
            Verdict::Linearizable => (Some(true), format!("{ops} operations")),
            Verdict::NotLinearizable { explanation } => (Some(false), explanation),
            Verdict::Unknown => (None, "the search ran out of time".to_string()),
        };
        Check {
            name: name.into(),
            valid,
            ops,
            detail,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub seed: u64,
    pub workload: Workload,
    pub nemesis: Vec<&'static str>,
    pub nodes: usize,
    pub dir: PathBuf,
    pub checks: Vec<Check>,
    /// Nodes that died without being killed.
    pub crashes: Vec<String>,
    /// From the final heal to the first acknowledged write.
    pub recovery_ms: Option<u64>,
    /// Faults the final heal could not undo, with why. A run with any is
    /// never valid: what it checked ran against a cluster the nemesis had
    /// left broken.
    pub unhealed: Vec<String>,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

impl RunResult {
    /// Some(true) valid, Some(false) an anomaly, None undecided. A fault
    /// left in place makes the run undecided, and excuses a cluster that
    /// made no progress after it; the checks themselves hold anyway (a
    /// history's anomaly is one whatever the nemesis left behind).
    pub fn valid(&self) -> Option<bool> {
        let stuck = self.recovery_ms.is_none() && self.unhealed.is_empty();
        if self.checks.iter().any(|c| c.valid == Some(false)) || !self.crashes.is_empty() || stuck {
            return Some(false);
        }
        if self.checks.iter().any(|c| c.valid.is_none()) || !self.unhealed.is_empty() {
            return None;
        }
        Some(true)
    }
}

/// A client pauses this long after an error, so a dead node is not
/// hammered (and the history not flooded).
const ERROR_BACKOFF_MS: u64 = 50;

/// Set by SIGINT/SIGTERM: the run stops early and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Runs one test. The calling thread is moved into the clients' network
/// namespace for the duration, so run it on a thread of its own (the
/// binary does; tests use [`run_on_thread`]).
pub fn run(cfg: &Config) -> Result<RunResult> {
    if !cfg.endpoints.is_empty() {
        return run_external(cfg);
    }
    if cfg.nodes < 3 {
        bail!("--nodes must be at least 3");
    }
    net::Net::preflight()?;
    // Members started on an earlier run's data would resume its cluster.
    fresh_out(cfg)?;
    let disk_node = cfg
        .nemesis
        .contains(&nemesis::Kind::Disk)
        .then_some(cfg.seed as usize % cfg.nodes);
    let clock = cfg.nemesis.contains(&nemesis::Kind::Clock);
    // Checked before anything is set up: the keys nemesis needs secretctl.
    let keys = if cfg.nemesis.contains(&nemesis::Kind::Keys) {
        Some(keys::KeysState::new(&cfg.secretd)?)
    } else {
        None
    };
    let plan = nemesis::plan(
        cfg.seed,
        &cfg.nemesis,
        cfg.nodes,
        cfg.time_limit_ms,
        disk_node,
    );
    let net = Arc::new(net::Net::create(cfg.nodes)?);
    let mut nodes = nodes::Nodes::new(&net, &cfg.secretd, &cfg.out, cfg.nodes, clock, disk_node)?;
    for i in 0..cfg.nodes {
        nodes.start(i)?;
    }
    let urls: Vec<String> = nodes.nodes.iter().map(|n| n.client_url()).collect();
    let nodes = Arc::new(Mutex::new(nodes));
    net.enter_client_ns()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let fleet = Fleet {
        net: net.clone(),
        nodes: nodes.clone(),
        keys,
        plan,
    };
    let result = rt.block_on(run_async(cfg, Some(fleet), urls));
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut nodes = nodes.lock().unwrap_or_else(|e| e.into_inner());
    nodes.shutdown();
    // A valid run's member data is of no further use and large (a campaign
    // would fill the disk); an anomalous run keeps it for investigation.
    if matches!(&result, Ok(r) if r.valid() == Some(true)) {
        nodes.remove_data();
    }
    result
}

/// Makes the run's folder, refusing one that holds an earlier run.
fn fresh_out(cfg: &Config) -> Result<()> {
    if cfg.out.join("history.jsonl").exists() {
        bail!(
            "{} holds an earlier run: give this one another folder",
            cfg.out.display()
        );
    }
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))
}

/// A run against a cluster someone else started and changes (`--endpoints`):
/// the workload, its final reads and its checks, nothing else.
fn run_external(cfg: &Config) -> Result<RunResult> {
    if !cfg.nemesis.is_empty() {
        bail!("--endpoints drives a cluster the harness does not own: give no --nemesis");
    }
    fresh_out(cfg)?;
    // One node per endpoint, whatever `nodes` says: clients and final reads
    // address nodes by index.
    let cfg = &Config {
        nodes: cfg.endpoints.len(),
        ..cfg.clone()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(run_async(cfg, None, cfg.endpoints.clone()));
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The harness's own cluster and what it does to it.
struct Fleet {
    net: Arc<net::Net>,
    nodes: Arc<Mutex<nodes::Nodes>>,
    keys: Option<keys::KeysState>,
    plan: Vec<nemesis::Planned>,
}

/// [`run`] on a thread of its own (the namespace switch stays there).
pub fn run_on_thread(cfg: Config) -> Result<RunResult> {
    std::thread::spawn(move || run(&cfg))
        .join()
        .map_err(|_| anyhow::anyhow!("the run's thread panicked"))?
}

async fn wait_ready(clients: &Clients, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < bound {
        let r = clients
            .kv(i % clients.urls.len())
            .put(client::pb::etcdserverpb::PutRequest {
                key: b"jepsen/probe".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            return Some(start.elapsed());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The watch workload's watchers and what they share with the run.
struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    logs: watch::Logs,
    /// The revision every watcher must reach (set after the final write).
    target: Arc<AtomicI64>,
}

async fn run_async(cfg: &Config, fleet: Option<Fleet>, urls: Vec<String>) -> Result<RunResult> {
    spawn_interrupt_handler();
    let clients = Clients::new(urls)?;
    if wait_ready(&clients, Duration::from_secs(30))
        .await
        .is_none()
    {
        bail!(
            "the cluster did not accept a write within 30 s of starting; see {}/n*.log",
            cfg.out.display()
        );
    }
    let rec = Recorder::create(&cfg.out.join("history.jsonl"))?;
    announce(cfg, &rec);
    let stop = Arc::new(AtomicBool::new(false));
    let watchers = spawn_watchers(cfg, &clients, &stop);
    let known = secrets::Known::default();
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|c| spawn_worker(cfg, c, &clients, &rec, &stop, &known))
        .collect();
    let progress = spawn_progress(&rec, &stop, cfg.quiet);
    let (healed, mut nem) = faults(cfg, fleet, &clients, &rec).await;
    rec.nemesis("final-heal", healed.desc);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    progress.abort();
    let recovery = wait_ready(&clients, Duration::from_millis(cfg.recovery_bound_ms)).await;
    let recovery_ms = recovery.map(|d| d.as_millis() as u64);
    rec.nemesis("recovered", json!({"ms": recovery_ms}));
    let mut checks = final_checks(cfg, &clients, &rec, &known, watchers).await;
    let mut crashes = Vec::new();
    if let Some((n, nodes)) = &mut nem {
        if let Some(k) = &n.keys {
            checks.push(retired_keys(nodes, &k.retired, n.autolock_left()).await);
        }
        crashes = std::mem::take(&mut n.crashes);
    }
    rec.flush();
    let (ok, fail, info) = rec.counts();
    let result = RunResult {
        seed: cfg.seed,
        workload: cfg.workload,
        nemesis: cfg.nemesis.iter().map(|k| k.name()).collect(),
        nodes: cfg.nodes,
        dir: cfg.out.clone(),
        checks,
        crashes,
        recovery_ms,
        unhealed: healed.left,
        ok,
        fail,
        info,
    };
    write_result(cfg, &result, &rec)?;
    Ok(result)
}

/// The nemesis and the nodes it acted on, kept for the checks at the end.
type Acted = Option<(nemesis::Nemesis, Arc<Mutex<nodes::Nodes>>)>;

/// The run's faults: the fleet's plan and the final heal, or, on a
/// cluster someone else runs, the operator's time.
async fn faults(
    cfg: &Config,
    fleet: Option<Fleet>,
    clients: &Clients,
    rec: &Recorder,
) -> (nemesis::Healed, Acted) {
    match fleet {
        Some(f) => {
            let mut n = nemesis::Nemesis::new(
                f.net.clone(),
                f.nodes.clone(),
                clients.clone(),
                rec.clone(),
                f.keys,
            );
            run_plan(cfg, &f.plan, &mut n, rec).await;
            // Final heal, then the cluster must make progress within the bound.
            let healed = n.heal().await;
            (healed, Some((n, f.nodes)))
        }
        None => {
            wait_external(cfg).await;
            let healed = nemesis::Healed {
                desc: json!("no nemesis: the cluster is the operator's"),
                left: Vec::new(),
            };
            (healed, None)
        }
    }
}

/// `results.json` and `report.html` in the run's folder.
fn write_result(cfg: &Config, result: &RunResult, rec: &Recorder) -> Result<()> {
    std::fs::write(
        cfg.out.join("results.json"),
        serde_json::to_string_pretty(result)?,
    )?;
    report::write(&cfg.out.join("report.html"), result, &rec.events())
}

/// Ctrl-C or SIGTERM stop the run cleanly: faults healed, members stopped,
/// namespaces removed.
fn spawn_interrupt_handler() {
    tokio::spawn(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("jepsen: interrupted; stopping the run and cleaning up");
        INTERRUPTED.store(true, Ordering::Relaxed);
    });
}

/// The run's first history entry, and its line on stderr.
fn announce(cfg: &Config, rec: &Recorder) {
    let nemesis: Vec<_> = cfg.nemesis.iter().map(|k| k.name()).collect();
    rec.nemesis(
        "start",
        json!({"seed": cfg.seed, "nodes": cfg.nodes, "workload": cfg.workload.name(),
        "nemesis": nemesis}),
    );
    if !cfg.quiet {
        eprintln!(
            "jepsen: seed {} · {} nodes · workload {} · nemesis {} · {} s · {}",
            cfg.seed,
            cfg.nodes,
            cfg.workload.name(),
            nemesis.join(","),
            cfg.time_limit_ms / 1000,
            cfg.out.display()
        );
    }
}

/// One watcher per node, for the watch workload (none otherwise).
fn spawn_watchers(cfg: &Config, clients: &Clients, stop: &Arc<AtomicBool>) -> Watchers {
    let logs: watch::Logs = Arc::new(Mutex::new(Vec::new()));
    let target = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    if cfg.workload == Workload::Watch {
        for i in 0..cfg.nodes {
            tasks.push(tokio::spawn(watch::watcher(
                clients.clone(),
                i,
                format!("w{}", i + 1),
                logs.clone(),
                stop.clone(),
                target.clone(),
            )));
        }
    }
    Watchers {
        tasks,
        logs,
        target,
    }
}

/// Client `c`: process p starts on node p % n; after an unknown outcome it
/// is retired and a new process number takes over (Jepsen's rule: a
/// process with an operation in doubt never invokes another).
fn spawn_worker(
    cfg: &Config,
    c: usize,
    clients: &Clients,
    rec: &Recorder,
    stop: &Arc<AtomicBool>,
    known: &secrets::Known,
) -> tokio::task::JoinHandle<()> {
    let (known, clients, rec, stop) = (known.clone(), clients.clone(), rec.clone(), stop.clone());
    let (workload, n) = (cfg.workload, cfg.nodes);
    let concurrency = cfg.concurrency as i64;
    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1000).wrapping_add(c as u64));
    tokio::spawn(async move {
        let mut process = c as i64;
        let mut count = 0u64;
        while !stop.load(Ordering::Relaxed) && !interrupted() {
            let node = (process as usize) % n;
            let token = format!("{process}.{count}");
            count += 1;
            let (f, value) = match workload {
                Workload::Register => register::generate(&mut rng, rec.elapsed_ns() / 1_000_000),
                Workload::Append => append::generate(&mut rng, &token),
                Workload::Watch => watch::generate(&mut rng, &token),
                Workload::Secrets => secrets::generate(&mut rng, &token, &known),
            };
            rec.record(process, Type::Invoke, &f, value.clone(), None);
            let result = match workload {
                Workload::Register => register::execute(&clients, node, &f, &value).await,
                Workload::Append => append::execute(&clients, node, &value).await,
                Workload::Watch => watch::execute(&clients, node, &value).await,
                Workload::Secrets => secrets::execute(&clients, node, &f, &value, &known).await,
            };
            match result {
                Ok(v) => {
                    rec.record(process, Type::Ok, &f, v, None);
                }
                Err((Type::Fail, e)) => {
                    rec.record(process, Type::Fail, &f, value, Some(e));
                    tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                }
                Err((kind, e)) => {
                    rec.record(process, kind, &f, value, Some(e));
                    // Retired: the next process number, on the next node.
                    process += concurrency + 1;
                    tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MS)).await;
                }
            }
        }
    })
}

/// A progress line every 5 s (unless quiet).
fn spawn_progress(
    rec: &Recorder,
    stop: &Arc<AtomicBool>,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    let (rec, stop) = (rec.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if !quiet {
                let (ok, fail, info) = rec.counts();
                eprintln!(
                    "jepsen: {:>4.0} s  ok {ok}  fail {fail}  unknown {info}",
                    rec.elapsed_ns() as f64 / 1e9
                );
            }
        }
    })
}

async fn start_fault(
    cfg: &Config,
    t0: Instant,
    nem: &mut nemesis::Nemesis,
    rec: &Recorder,
    f: &nemesis::Fault,
) {
    match nem.start(f).await {
        Ok(d) => {
            if !cfg.quiet {
                eprintln!("jepsen: {:>4.0} s  fault {d}", t0.elapsed().as_secs_f64());
            }
            rec.nemesis("start-fault", d);
        }
        Err(e) => rec.nemesis("fault-error", json!(e.to_string())),
    }
}

/// Destroyed KEK generations must be gone from every member's keyring
/// file. Members destroy them on their next keyring sync (every 2 s), so
/// the check looks again for a while before it reports one.
async fn retired_keys(
    nodes: &Arc<Mutex<nodes::Nodes>>,
    retired: &BTreeSet<u32>,
    autolock_left: bool,
) -> Check {
    const SETTLE_MS: u64 = 10_000;
    let dirs: Vec<PathBuf> = nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .nodes
        .iter()
        .map(|n| n.data_dir.clone())
        .collect();
    let deadline = Instant::now() + Duration::from_millis(SETTLE_MS);
    loop {
        let c = keys::retired_on_disk(&dirs, retired, autolock_left);
        if c.valid == Some(true) || Instant::now() >= deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// An external run's workload time: the time limit, or until the
/// operator's file appears.
async fn wait_external(cfg: &Config) {
    let t0 = Instant::now();
    let limit = Duration::from_millis(cfg.time_limit_ms);
    while t0.elapsed() < limit && !interrupted() {
        if cfg.until_file.as_ref().is_some_and(|f| f.exists()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sleeps until `t0 + at`, in short steps so an interrupt is seen.
async fn sleep_until(t0: Instant, at: Duration) {
    while t0.elapsed() < at && !interrupted() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nemesis on its schedule: each planned fault started at its time and
/// healed after its duration; then the rest of the time limit.
async fn run_plan(
    cfg: &Config,
    plan: &[nemesis::Planned],
    nem: &mut nemesis::Nemesis,
    rec: &Recorder,
) {
    let t0 = Instant::now();
    for p in plan {
        let at = Duration::from_millis(p.at_ms);
        sleep_until(t0, at).await;
        if interrupted() {
            break;
        }
        start_fault(cfg, t0, nem, rec, &p.fault).await;
        if let Some((offset_ms, second)) = &p.also {
            sleep_until(t0, at + Duration::from_millis(*offset_ms)).await;
            if !interrupted() {
                start_fault(cfg, t0, nem, rec, second).await;
            }
        }
        sleep_until(t0, at + Duration::from_millis(p.duration_ms)).await;
        // What this heal could not undo, the next one retries.
        let healed = nem.heal().await;
        if !cfg.quiet && !healed.left.is_empty() {
            eprintln!(
                "jepsen: {:>4.0} s  heal incomplete (retried at the next heal): {}",
                t0.elapsed().as_secs_f64(),
                healed.left.join("; ")
            );
        }
        rec.nemesis("heal", healed.desc);
    }
    sleep_until(t0, Duration::from_millis(cfg.time_limit_ms)).await;
}

/// The workload's final reads and its checks.
async fn final_checks(
    cfg: &Config,
    clients: &Clients,
    rec: &Recorder,
    known: &secrets::Known,
    watchers: Watchers,
) -> Vec<Check> {
    const FINAL_PROCESS: i64 = 1_000_000;
    let n = cfg.nodes;
    match cfg.workload {
        Workload::Register => {
            register::final_reads(clients, rec, FINAL_PROCESS, n).await;
            let budget = Duration::from_millis(cfg.check_budget_ms);
            vec![register::check(&rec.events(), budget)]
        }
        Workload::Append => {
            append::final_reads(clients, rec, FINAL_PROCESS, n).await;
            vec![append::check(&rec.events())]
        }
        Workload::Secrets => {
            secrets::final_reads(clients, rec, FINAL_PROCESS, n, known).await;
            vec![secrets::check(&rec.events())]
        }
        Workload::Watch => vec![watch_final(clients, rec, n, watchers).await],
    }
}

/// The watch workload's end: one last write whose revision every watcher
/// must reach, a bounded wait for them, then the check against the
/// committed history.
async fn watch_final(clients: &Clients, rec: &Recorder, n: usize, watchers: Watchers) -> Check {
    let mut target = -1;
    for i in 0..n * 4 {
        let put = client::pb::etcdserverpb::PutRequest {
            key: b"w/final".to_vec(),
            value: b"final".to_vec(),
            ..Default::default()
        };
        if let Ok(r) = clients.kv(i % n).put(put).await {
            target = r.into_inner().header.map(|h| h.revision).unwrap_or(-1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    watchers.target.store(target, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_millis(watch::CATCH_UP_MS);
    for w in watchers.tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        // A watcher still running did not catch up; the check says so.
        let _ = tokio::time::timeout(left, w).await;
    }
    let truth = if target > 0 {
        watch::committed(clients, target).await
    } else {
        None
    };
    let logs = watchers
        .logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    watch::check(&rec.events(), &logs, truth.as_deref(), target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(recovery_ms: Option<u64>, unhealed: &[&str], valid: Option<bool>) -> RunResult {
        RunResult {
            seed: 1,
            workload: Workload::Secrets,
            nemesis: vec!["keys"],
            nodes: 5,
            dir: PathBuf::new(),
            checks: vec![Check {
                name: "c".into(),
                valid,
                ops: 1,
                detail: String::new(),
            }],
            crashes: Vec::new(),
            recovery_ms,
            unhealed: unhealed.iter().map(|u| u.to_string()).collect(),
            ok: 1,
            fail: 0,
            info: 0,
        }
    }

    /// A fault the nemesis left in place makes the verdict unknown, never
    /// valid, and never turns the cluster's resulting stall into an
    /// anomaly; an anomaly the checks found stays one.
    #[test]
    fn a_fault_left_in_place_makes_the_run_unknown() {
        assert_eq!(result(Some(1), &[], Some(true)).valid(), Some(true));
        assert_eq!(result(None, &[], Some(true)).valid(), Some(false));
        let left = ["keys: could not unlock n2"];
        assert_eq!(result(Some(1), &left, Some(true)).valid(), None);
        assert_eq!(result(None, &left, Some(true)).valid(), None);
        assert_eq!(result(Some(1), &left, Some(false)).valid(), Some(false));
    }
}
