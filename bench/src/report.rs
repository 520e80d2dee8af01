//! The comparison run and its tables: every workload against etcd 3.4,
//! etcd 3.5.1 and secretd, rotating which goes first, for several rounds;
//! the median round goes in the tables (one per etcd, the anchor), and
//! each table ends in its `RESULT` lines. The same numbers (`RunData`)
//! make BENCHMARKS.md's generated section and the HTML report.

use std::path::Path;

use anyhow::{bail, Result};

use crate::checkperf::{self, CheckPerf};
use crate::compare::{self, ClusterProc, Sample, System};
use crate::results::{
    anchor_names, ratio, result_lines, CheckPerfRow, RowMedians, RunData, FLOOR_ROW, SYSTEMS,
};
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

/// Each row: its name in the tables, its tag in `RESULT` lines, what it
/// measures.
const ROWS: &[(&str, &str, Row)] = &[
    (
        "put 256B @1",
        "put256@1",
        Row::Put {
            in_flight: 1,
            value: 256,
            total: 2_000,
        },
    ),
    (
        "put 256B @64",
        "put256@64",
        Row::Put {
            in_flight: 64,
            value: 256,
            total: 20_000,
        },
    ),
    (
        "put 256B @256",
        "put256",
        Row::Put {
            in_flight: 256,
            value: 256,
            total: 50_000,
        },
    ),
    (
        "put 4KiB @256",
        "put4k",
        Row::Put {
            in_flight: 256,
            value: 4096,
            total: 20_000,
        },
    ),
    (
        "get linearizable @256",
        "get-lin",
        Row::Get { linearizable: true },
    ),
    (
        "get serializable @256",
        "get-ser",
        Row::Get {
            linearizable: false,
        },
    ),
    ("1000 watchers, 1 writer (events/s)", "watch", Row::Watchers),
    (
        "secret create @64 (etcd: put)",
        "secret-create",
        Row::SecretCreate,
    ),
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
                System::Secretd | System::Floor => Workload::SecretCreate,
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

/// Per row, per system (in `SYSTEMS` order): one sample per round.
type Samples = Vec<[Vec<Sample>; 3]>;

/// What `compare` was asked for (the CLI's flags).
pub struct Options<'a> {
    pub rounds: usize,
    /// Run just the rows whose names or tags contain one of these words
    /// (`rss` names the RSS line, `checkperf` the `etcdctl check perf`
    /// rows); empty runs every row.
    pub only: &'a [String],
    /// Also write the tables into this file's generated section
    /// (BENCHMARKS.md), keeping the rest of it.
    pub markdown: Option<&'a Path>,
    /// Where the HTML report goes.
    pub html: &'a Path,
}

/// The rows, the RSS line and the check perf loads `only` picks.
struct Picked {
    rows: Vec<usize>,
    rss: bool,
    checkperf: Vec<usize>,
}

fn pick(only: &[String]) -> Result<Picked> {
    let hit = |name: &str, tag: &str| {
        only.is_empty()
            || only
                .iter()
                .any(|w| name.contains(w.as_str()) || tag.contains(w.as_str()))
    };
    let p = Picked {
        rows: (0..ROWS.len())
            .filter(|&i| hit(ROWS[i].0, ROWS[i].1))
            .collect(),
        rss: hit("rss", "rss"),
        checkperf: (0..checkperf::LOADS.len())
            .filter(|&i| hit("etcdctl check perf", checkperf::LOADS[i].1))
            .collect(),
    };
    if p.rows.is_empty() && !p.rss && p.checkperf.is_empty() {
        let names: Vec<String> = ROWS.iter().map(|r| format!("{} ({})", r.0, r.1)).collect();
        bail!(
            "--rows {:?} names no row; rows are: {}; rss; checkperf-m, checkperf-l",
            only.join(","),
            names.join("; ")
        );
    }
    Ok(p)
}

/// Runs `compare`: starts the three clusters (and the gRPC floor when the
/// `get-ser` row runs), measures, prints the tables and the `RESULT`
/// lines, writes the HTML report and, if asked, BENCHMARKS.md's section.
pub async fn run(o: &Options<'_>) -> Result<()> {
    let picked = pick(o.only)?;
    let base = compare::base_port();
    let mut clusters = Vec::new();
    for (i, sys) in SYSTEMS.iter().enumerate() {
        clusters.push(compare::start(*sys, base + 100 * i as u16, 3)?);
    }
    let mut floors = Vec::new();
    if picked.rows.iter().any(|&i| ROWS[i].1 == FLOOR_ROW) {
        for (i, n) in crate::floor::PROCESSES.iter().enumerate() {
            floors.push(crate::floor::start(base + 301 + 10 * i as u16, *n)?);
        }
    }
    for c in clusters.iter().chain(&floors) {
        compare::ready(c).await?;
    }
    let (results, floor_samples) = run_rounds(o.rounds, &clusters, &floors, &picked.rows).await?;
    drop(floors);
    let mut rss = Vec::new();
    if picked.rss {
        for c in &clusters {
            rss.push(measure(c, Row::Rss).await?);
        }
    }
    let checkperf = run_checkperf(&clusters, &picked.checkperf).await;
    let data = RunData {
        rounds: o.rounds,
        rows: medians(&results),
        floors: floor_samples
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(median)
            .collect(),
        rss,
        checkperf,
    };
    let tables: Vec<String> = (0..2).map(|a| table(&data, a)).collect();
    for t in &tables {
        print!("{t}");
    }
    let prov = crate::markdown::Provenance::gather();
    crate::html::write(o.html, &data, &prov)?;
    eprintln!("bench: wrote {}", o.html.display());
    if let Some(path) = o.markdown {
        crate::markdown::write(path, o.rounds, &tables, &prov)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Every row against every system, `rounds` times, rotating which goes
/// first so none always meets a warm (or tired) machine; the gRPC floors
/// (if given) after the systems in each round of the `get-ser` row.
async fn run_rounds(
    rounds: usize,
    clusters: &[ClusterProc],
    floors: &[ClusterProc],
    picked: &[usize],
) -> Result<(Samples, Vec<Vec<Sample>>)> {
    let mut results: Samples = vec![Default::default(); ROWS.len()];
    let mut floor_samples = vec![Vec::new(); floors.len()];
    for round in 0..rounds {
        for &i in picked {
            let (name, tag, row) = &ROWS[i];
            for k in 0..clusters.len() {
                let which = (round + i + k) % clusters.len();
                let s = measure(&clusters[which], *row).await?;
                log_sample(round, name, clusters[which].system, &s);
                results[i][which].push(s);
            }
            if *tag != FLOOR_ROW {
                continue;
            }
            for (f, samples) in floors.iter().zip(&mut floor_samples) {
                let s = measure(f, *row).await?;
                log_sample(round, name, f.system, &s);
                samples.push(s);
            }
        }
    }
    Ok((results, floor_samples))
}

fn log_sample(round: usize, name: &str, system: System, s: &Sample) {
    eprintln!(
        "round {} {name:<36} {:<10}: {:>9.0}/s p99 {:>7.2} ms cpu/op server {:>6.1} us client {:>5.1} us",
        round + 1,
        system.name(),
        s.ops_per_sec,
        s.p99_ms,
        s.server_cpu_us_per_op,
        s.client_cpu_us_per_op
    );
}

/// The picked `etcdctl check perf` loads against etcd 3.5.1 and secretd
/// (clusters in `SYSTEMS` order), once each: a run that fails is reported,
/// not fatal.
async fn run_checkperf(clusters: &[ClusterProc], picked: &[usize]) -> Vec<CheckPerfRow> {
    let mut out = Vec::new();
    for &i in picked {
        let (load, tag) = checkperf::LOADS[i];
        let one = |c: usize| {
            let c = &clusters[c];
            async move {
                let r = checkperf::run(c, load).await.map_err(|e| format!("{e:#}"));
                match &r {
                    Ok(p) => eprintln!(
                        "check perf --load={load} {:<10}: {:.0} writes/s slowest {:.3} s {}",
                        c.system.name(),
                        p.writes_per_sec,
                        p.slowest_s,
                        p.verdict()
                    ),
                    Err(e) => eprintln!("check perf --load={load} {}: {e}", c.system.name()),
                }
                r
            }
        };
        let etcd = one(1).await;
        let secretd = one(2).await;
        out.push(CheckPerfRow {
            load,
            tag,
            etcd,
            secretd,
        });
    }
    out
}

/// The median round of each row that ran.
fn medians(results: &Samples) -> Vec<RowMedians> {
    ROWS.iter()
        .zip(results)
        .filter(|(_, r)| r.iter().all(|v| !v.is_empty()))
        .map(|((name, tag, _), r)| RowMedians {
            name,
            tag,
            medians: [0, 1, 2].map(|k| median(r[k].clone())),
        })
        .collect()
}

/// The RSS row, the floor, check perf, and what the table's columns mean.
fn write_footer(out: &mut String, d: &RunData, anchor: usize, a_name: &str) {
    if let [e34, e35, s] = &d.rss[..] {
        let (re, rs) = ([e34, e35][anchor].ops_per_sec, s.ops_per_sec);
        out!(
            out,
            "{:<36} {:>9.0} MiB {:>10} {:>8.0} MiB {:>10} {:>8.2}",
            "RSS after 100k keys (3 members)",
            re,
            "",
            rs,
            "",
            ratio(rs, re)
        );
    }
    for (f, n) in d.floors.iter().zip(crate::floor::PROCESSES) {
        let name = match n {
            1 => "gRPC floor, get serializable @256".to_string(),
            n => format!("gRPC floor x{n} processes"),
        };
        out!(
            out,
            "{:<36} {:>12} {:>10} {:>12.0} {:>10.2} {:>8} {:>9} {:>13} {:>13.0}",
            name,
            "",
            "",
            f.ops_per_sec,
            f.p99_ms,
            "",
            "",
            "",
            f.server_cpu_us_per_op
        );
    }
    if anchor == 1 {
        for r in &d.checkperf {
            out!(out, "{}", checkperf_line(r));
        }
    }
    out!(out, "({} rounds, median shown; {a_name} and the release secretd, 3 members each on loopback, fsync on;", d.rounds);
    out!(out, " cpu us: CPU time the three members used per operation (watchers: per delivered event), user + system;");
    if !d.floors.is_empty() {
        out!(out, " gRPC floor: examples/grpc_floor, a no-op KV server (one process; x3: three, the client spread over them as over members), in the secretd columns;");
    }
    if anchor == 1 && !d.checkperf.is_empty() {
        out!(out, " check perf: etcd 3.5.1's etcdctl check perf, once per run, writes/s and slowest request;");
    }
    match d.rows.iter().any(|r| r.tag == "put256@1") {
        true => out!(out, " put256@1 p50_ms/p99_ms: secretd/{a_name})"),
        false => out!(out, " ratios: secretd/{a_name})"),
    }
}

/// One check perf load as a table line.
fn checkperf_line(r: &CheckPerfRow) -> String {
    let cell = |x: &Result<CheckPerf, String>| match x {
        Ok(p) => format!(
            "{:.0} w/s, slowest {:.3} s, {}",
            p.writes_per_sec,
            p.slowest_s,
            p.verdict()
        ),
        Err(_) => "did not run (see above)".into(),
    };
    format!(
        "{:<36} etcd: {} | secretd: {}",
        format!("etcdctl check perf --load={}", r.load),
        cell(&r.etcd),
        cell(&r.secretd)
    )
}

/// secretd against one anchor, as text: the table of medians, the RSS line,
/// the floor and check perf lines, and the `RESULT` lines, tagged with the
/// anchor.
fn table(d: &RunData, anchor: usize) -> String {
    let mut out = String::new();
    let (a_name, tag) = anchor_names(anchor);
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
    for r in &d.rows {
        let (e, s) = (&r.medians[anchor], &r.medians[2]);
        out!(
            out,
            "{:<36} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>8.2} {:>9.2} {:>13} {:>13}",
            r.name,
            e.ops_per_sec,
            e.p99_ms,
            s.ops_per_sec,
            s.p99_ms,
            ratio(s.ops_per_sec, e.ops_per_sec),
            ratio(s.p99_ms, e.p99_ms),
            cpu(e),
            cpu(s)
        );
    }
    write_footer(&mut out, d, anchor, a_name);
    for l in result_lines(d, anchor, tag) {
        out!(out, "{l}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_picked_by_name_or_tag() {
        let p = pick(&["serializable".into(), "checkperf".into()]).unwrap();
        assert_eq!(p.rows.len(), 1);
        assert_eq!(ROWS[p.rows[0]].1, FLOOR_ROW);
        assert_eq!(p.checkperf, [0, 1]);
        assert!(!p.rss);
        let all = pick(&[]).unwrap();
        assert_eq!(
            (all.rows.len(), all.rss, all.checkperf.len()),
            (ROWS.len(), true, 2)
        );
        assert!(pick(&["nothing".into()]).is_err());
    }
}
