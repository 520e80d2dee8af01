//! The comparison run and its tables: every workload against etcd 3.4,
//! etcd 3.5.1 and secretd, rotating which goes first, for several rounds;
//! the median round goes in the tables (one per etcd, the anchor), and
//! each table ends in its headline `RESULT` lines.

use anyhow::{bail, Result};

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
                System::Etcd34 | System::Etcd35 => Workload::Put,
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

/// `writeln!` into a String, which cannot fail.
macro_rules! out {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($fmt:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($fmt)*);
    }};
}

/// The systems in a run, in `Samples` order; the first two are anchors.
const SYSTEMS: [System; 3] = [System::Etcd34, System::Etcd35, System::Secretd];

/// Per row, per system (in `SYSTEMS` order): one sample per round.
type Samples = Vec<[Vec<Sample>; 3]>;

/// Runs `compare`. `only`: run just the rows whose names contain one of
/// these words (`rss` names the RSS line); empty runs every row.
/// `markdown`: also write the tables into that file's generated section
/// (BENCHMARKS.md), keeping the rest of it.
pub async fn run(rounds: usize, only: &[String], markdown: Option<&std::path::Path>) -> Result<()> {
    let picked: Vec<usize> = (0..ROWS.len())
        .filter(|&i| only.is_empty() || only.iter().any(|w| ROWS[i].0.contains(w.as_str())))
        .collect();
    let with_rss = only.is_empty() || only.iter().any(|w| w == "rss");
    if picked.is_empty() && !with_rss {
        let names: Vec<&str> = ROWS.iter().map(|r| r.0).collect();
        bail!(
            "--rows {:?} names no row; rows are: {}, and rss",
            only.join(","),
            names.join("; ")
        );
    }
    let base = compare::base_port();
    let mut clusters = Vec::new();
    for (i, sys) in SYSTEMS.iter().enumerate() {
        clusters.push(compare::start(*sys, base + 100 * i as u16, 3)?);
    }
    for c in &clusters {
        compare::ready(c).await?;
    }
    let results = run_rounds(rounds, &clusters, &picked).await?;
    let mut rss = Vec::new();
    if with_rss {
        for c in &clusters {
            rss.push(measure(c, Row::Rss).await?);
        }
    }
    let tables: Vec<String> = (0..2).map(|a| table(rounds, &results, a, &rss)).collect();
    for t in &tables {
        print!("{t}");
    }
    if let Some(path) = markdown {
        crate::markdown::write(path, rounds, &tables)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Every row against every system, `rounds` times, rotating which goes
/// first so none always meets a warm (or tired) machine.
async fn run_rounds(rounds: usize, clusters: &[ClusterProc], picked: &[usize]) -> Result<Samples> {
    let mut results: Samples = vec![Default::default(); ROWS.len()];
    for round in 0..rounds {
        for &i in picked {
            let (name, row) = &ROWS[i];
            for k in 0..clusters.len() {
                let which = (round + i + k) % clusters.len();
                let c = &clusters[which];
                let s = measure(c, *row).await?;
                eprintln!(
                    "round {} {name:<36} {:<10}: {:>9.0}/s p99 {:>7.2} ms cpu/op server {:>6.1} us client {:>5.1} us",
                    round + 1,
                    c.system.name(),
                    s.ops_per_sec,
                    s.p99_ms,
                    s.server_cpu_us_per_op,
                    s.client_cpu_us_per_op
                );
                results[i][which].push(s);
            }
        }
    }
    Ok(results)
}

/// The RSS row and what the table's columns mean.
fn write_footer(out: &mut String, rounds: usize, anchor: usize, a_name: &str, rss: &[Sample]) {
    if let [e34, e35, s] = rss {
        let (re, rs) = ([e34, e35][anchor].ops_per_sec, s.ops_per_sec);
        out!(
            out,
            "{:<36} {:>9.0} MiB {:>10} {:>8.0} MiB {:>10} {:>8.2}",
            "RSS after 100k keys (3 members)",
            re,
            "",
            rs,
            "",
            rs / re.max(1e-9)
        );
    }
    out!(out, "({rounds} rounds, median shown; {a_name} and the release secretd, 3 members each on loopback, fsync on;");
    out!(out, " cpu us: CPU time the three members used per operation (watchers: per delivered event), user + system;");
    out!(out, " put256@1 p50_ms/p99_ms: secretd/{a_name})");
}

/// secretd against one anchor, as text: the table of medians, the RSS line, the
/// put @1 latency line and the headline RESULT lines, tagged with the
/// anchor.
fn table(rounds: usize, results: &Samples, anchor: usize, rss: &[Sample]) -> String {
    let mut out = String::new();
    let (a_name, tag) = match SYSTEMS[anchor] {
        System::Etcd34 => ("etcd 3.4", "etcd-3.4"),
        _ => ("etcd 3.5.1", "etcd-3.5.1"),
    };
    out!(out);
    out!(out, "secretd against {a_name}");
    out!(
        out,
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
    let mut lines = Vec::new();
    for (i, (name, _)) in ROWS.iter().enumerate() {
        if results[i][2].is_empty() {
            continue; // not picked by --rows
        }
        let e = median(results[i][anchor].clone());
        let s = median(results[i][2].clone());
        let ratio = s.ops_per_sec / e.ops_per_sec.max(1e-9);
        let p99_ratio = s.p99_ms / e.p99_ms.max(1e-9);
        out!(
            out,
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
        match *name {
            "put 256B @256" => lines.push(format!(
                "RESULT put256 anchor={tag} ratio={ratio:.2} p99_ratio={p99_ratio:.2}"
            )),
            "put 256B @1" => lines.push(format!(
                "RESULT put256@1 anchor={tag} ratio={ratio:.2} p50_ms={:.2}/{:.2} p99_ms={:.2}/{:.2}",
                s.p50_ms, e.p50_ms, s.p99_ms, e.p99_ms
            )),
            _ => {}
        }
    }
    write_footer(&mut out, rounds, anchor, a_name, rss);
    for l in lines {
        out!(out, "{l}");
    }
    out
}
