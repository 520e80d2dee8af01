//! `secretd-bench`: a thin CLI over the load generator in `lib.rs`.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use secretd_bench::{run, LoadSpec, Workload};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Op {
    Put,
    Get,
    /// secretstore.v1 secret create (secretd only).
    SecretCreate,
    /// etcd 3.4 and etcd 3.5.1 against secretd, every workload, in one run.
    Compare,
    /// Reading a secret through the agent's FUSE mount against tmpfs.
    Agent,
    /// How cost grows with the data: etcd 3.5.1 and secretd at each of
    /// --sizes keys, then secrets, 10k watchers and a 1,000-task agent.
    Scale,
}

#[derive(Parser, Debug)]
#[command(name = "secretd-bench", about = "etcd v3 load generator")]
struct Cli {
    #[arg(value_enum)]
    op: Op,
    /// Comma-separated client endpoints (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// gRPC connections, spread over the endpoints.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Operations to run in total.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Stop after this many seconds even if `total` is not reached.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    /// Value size in bytes (puts).
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Read consistency for gets: l (linearizable) or s (serializable).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Gets: the key space is already there (an earlier run loaded it),
    /// so load nothing and read from all of it.
    #[arg(long)]
    preloaded: bool,
    /// Rounds of `compare` (the table shows the median).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `compare`: run just the rows whose names or tags contain one of
    /// these comma-separated words (e.g. `watchers,serializable`; `rss`
    /// for the memory line; `checkperf` for `etcdctl check perf`).
    /// `scale`: the sections to run, of keys, watchers, secrets, agent.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// `compare` and `scale`: also write the tables into this file's
    /// generated section for the command (the repository's BENCHMARKS.md),
    /// keeping its notes and the other command's section.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// `compare` and `scale`: write the HTML report (charts, latency
    /// curves, the machine and commit) here [default: bench-report.html,
    /// or bench-scale.html for `scale`].
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// `scale` only: the key counts to measure at, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<u64>,
}

/// `compare`, `scale` and `agent`: the runs that start their own systems.
async fn run_command(cli: Cli) -> anyhow::Result<()> {
    match cli.op {
        Op::Compare => {
            let html = cli.html.unwrap_or_else(|| "bench-report.html".into());
            let o = secretd_bench::report::Options {
                rounds: cli.rounds.max(1),
                only: &cli.rows,
                markdown: cli.markdown.as_deref(),
                html: &html,
            };
            secretd_bench::report::run(&o).await
        }
        Op::Scale => {
            let html = cli.html.unwrap_or_else(|| "bench-scale.html".into());
            let o = secretd_bench::scale::Options {
                sizes: cli.sizes.clone(),
                only: &cli.rows,
                markdown: cli.markdown.as_deref(),
                html: &html,
            };
            secretd_bench::scale::run(&o).await
        }
        _ => secretd_bench::agent::run().await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Op::Compare | Op::Agent | Op::Scale = cli.op {
        return match run_command(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let workload = match (cli.op, cli.consistency.as_str()) {
        (Op::Put, _) => Workload::Put,
        (Op::SecretCreate, _) => Workload::SecretCreate,
        (Op::Get, "l") => Workload::GetLinearizable,
        (Op::Get, "s") => Workload::GetSerializable,
        (Op::Compare | Op::Agent | Op::Scale, _) => unreachable!("handled above"),
        (Op::Get, other) => {
            eprintln!("secretd-bench: --consistency must be l or s, not {other:?}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let spec = LoadSpec {
        endpoints: cli
            .endpoints
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        connections: cli.connections.max(1).min(cli.in_flight.max(1)),
        in_flight: cli.in_flight,
        total_ops: cli.total,
        time_limit: Duration::from_secs(cli.seconds),
        key_space: cli.key_space,
        value_bytes: cli.value_bytes,
        workload,
        preloaded: cli.preloaded,
    };
    match run(&spec).await {
        Ok(r) => {
            println!(
                "{:?} in-flight={} value={}B: {}",
                workload,
                spec.in_flight,
                spec.value_bytes,
                r.summary()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secretd-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
