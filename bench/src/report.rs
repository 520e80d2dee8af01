//! The comparison run and its table: every workload against etcd and
//! secretd, alternating which goes first, for several rounds; the median
//! round goes in the table, and the last line is the headline result.

use anyhow::Result;

use crate::compare::{self, ClusterProc, Sample, System};
use crate::Workload;

#[derive(Clone, Copy)]
enum Row {
    Put {
        in_flight: usize,
        value: usize,
        total: u64,
    },
    Get {
        linearizable: bool,
    },
    Watchers,
    SecretCreate,
    Rss,
}

const ROWS: &[(&str, Row)] = &[
    (
        "put 256B @1",
        Row::Put {
            in_flight: 1,
            value: 256,
            total: 2_000,
        },
    ),
    (
        "put 256B @64",
        Row::Put {
            in_flight: 64,
            value: 256,
            total: 20_000,
        },
    ),
    (
        "put 256B @256",
        Row::Put {
            in_flight: 256,
            value: 256,
            total: 50_000,
        },
    ),
    (
        "put 4KiB @256",
        Row::Put {
            in_flight: 256,
            value: 4096,
            total: 20_000,
        },
    ),
    ("get linearizable @256", Row::Get { linearizable: true }),
    (
        "get serializable @256",
        Row::Get {
            linearizable: false,
        },
    ),
    ("1000 watchers, 1 writer (events/s)", Row::Watchers),
    ("secret create @64 (etcd: put)", Row::SecretCreate),
];

async fn measure(c: &ClusterProc, row: Row) -> Result<Sample> {
    match row {
        Row::Put {
            in_flight,
            value,
            total,
        } => compare::load(c, Workload::Put, in_flight, value, total, 1_000_000).await,
        Row::Get { linearizable } => {
            let w = if linearizable {
                Workload::GetLinearizable
            } else {
                Workload::GetSerializable
            };
            compare::load(c, w, 256, 256, 50_000, 1_000).await
        }
        Row::Watchers => compare::watchers(c, 1000, 200).await,
        Row::SecretCreate => {
            let w = match c.system {
                System::Etcd => Workload::Put,
                System::Secretd => Workload::SecretCreate,
            };
            compare::load(c, w, 64, 256, 10_000, 1_000_000).await
        }
        Row::Rss => compare::rss_after_load(c).await,
    }
}

fn median(mut v: Vec<Sample>) -> Sample {
    v.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
    v[v.len() / 2]
}

/// Per row: etcd's samples and secretd's, one per round.
type Samples = Vec<(Vec<Sample>, Vec<Sample>)>;

pub async fn run(rounds: usize) -> Result<()> {
    let base = compare::base_port();
    let etcd = compare::start(System::Etcd, base)?;
    let secretd = compare::start(System::Secretd, base + 100)?;
    compare::ready(&etcd).await?;
    compare::ready(&secretd).await?;
    let results = run_rounds(rounds, &etcd, &secretd).await?;
    let rss_e = measure(&etcd, Row::Rss).await?;
    let rss_s = measure(&secretd, Row::Rss).await?;
    print_table(rounds, &results, rss_e, rss_s);
    Ok(())
}

/// Every row against both systems, `rounds` times, alternating which goes
/// first so neither always meets a warm (or tired) machine.
async fn run_rounds(rounds: usize, etcd: &ClusterProc, secretd: &ClusterProc) -> Result<Samples> {
    let mut results: Samples = vec![(Vec::new(), Vec::new()); ROWS.len()];
    for round in 0..rounds {
        for (i, (name, row)) in ROWS.iter().enumerate() {
            let order: [&ClusterProc; 2] = if (round + i) % 2 == 0 {
                [etcd, secretd]
            } else {
                [secretd, etcd]
            };
            for c in order {
                let s = measure(c, *row).await?;
                eprintln!(
                    "round {} {name:<36} {:?}: {:>9.0}/s p99 {:>7.2} ms cpu/op server {:>6.1} us client {:>5.1} us",
                    round + 1,
                    c.system,
                    s.ops_per_sec,
                    s.p99_ms,
                    s.server_cpu_us_per_op,
                    s.client_cpu_us_per_op
                );
                match c.system {
                    System::Etcd => results[i].0.push(s),
                    System::Secretd => results[i].1.push(s),
                }
            }
        }
    }
    Ok(results)
}

/// The table of medians, the RSS line, and the headline RESULT line.
fn print_table(rounds: usize, results: &Samples, rss_e: Sample, rss_s: Sample) {
    println!();
    println!(
        "{:<36} {:>12} {:>10} {:>12} {:>10} {:>8} {:>9} {:>13} {:>13}",
        "workload",
        "etcd ops/s",
        "p99 ms",
        "secretd",
        "p99 ms",
        "ratio",
        "p99 ratio",
        "etcd cpu us",
        "secretd cpu us"
    );
    let cpu = |x: &Sample| {
        if x.server_cpu_us_per_op > 0.0 {
            format!("{:.0}", x.server_cpu_us_per_op)
        } else {
            "-".into()
        }
    };
    let mut headline = None;
    for (i, (name, _)) in ROWS.iter().enumerate() {
        let e = median(results[i].0.clone());
        let s = median(results[i].1.clone());
        let ratio = s.ops_per_sec / e.ops_per_sec.max(1e-9);
        let p99_ratio = s.p99_ms / e.p99_ms.max(1e-9);
        println!(
            "{name:<36} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>8.2} {:>9.2} {:>13} {:>13}",
            e.ops_per_sec,
            e.p99_ms,
            s.ops_per_sec,
            s.p99_ms,
            ratio,
            p99_ratio,
            cpu(&e),
            cpu(&s)
        );
        if *name == "put 256B @256" {
            headline = Some((ratio, p99_ratio));
        }
    }
    println!(
        "{:<36} {:>9.0} MiB {:>10} {:>8.0} MiB {:>10} {:>8.2}",
        "RSS after 100k keys (3 members)",
        rss_e.ops_per_sec,
        "",
        rss_s.ops_per_sec,
        "",
        rss_s.ops_per_sec / rss_e.ops_per_sec.max(1e-9)
    );
    println!("({rounds} rounds, median shown; etcd 3.4 (Debian) and the release secretd, 3 members each on loopback, fsync on;");
    println!(" cpu us: CPU time the three members used per operation, user + system)");
    if let Some((r, p)) = headline {
        println!("RESULT put256 ratio={r:.2} p99_ratio={p:.2}");
    }
}
