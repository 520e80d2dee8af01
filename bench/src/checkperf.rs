//! `etcdctl check perf` as rows of `bench compare`: etcd 3.5.1's own
//! etcdctl (fetched with its server into `~/.cache/secretd-etcd-3.5.1`)
//! runs its fixed write load (`--load=m`: 1,000 writes/s from 200 clients;
//! `--load=l`: 8,000 writes/s from 500 clients; 60 s each, 1 KiB values
//! under `/etcdctl-check-perf/`) against the three members of a system.
//! It is etcd's yardstick, not ours, so secretd passing it says the same
//! thing an etcd operator's check would. We read what it prints: the
//! writes per second it achieved, its slowest request and its verdict.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::compare::ClusterProc;

/// The loads measured, with their row tags.
pub const LOADS: [(&str, &str); 2] = [("m", "checkperf-m"), ("l", "checkperf-l")];

/// How long one `check perf` may take: its 60 s, the 30 s it allows its
/// final delete, and slack for a busy machine.
const RUN_MAX: Duration = Duration::from_secs(180);

/// The prefix `check perf` writes under (it refuses to start unless it is
/// empty).
const PREFIX: &str = "/etcdctl-check-perf/";

/// What one `check perf` run printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckPerf {
    pub writes_per_sec: f64,
    pub slowest_s: f64,
    pub stddev_s: f64,
    /// Its final verdict (`PASS` or `FAIL`).
    pub pass: bool,
}

impl CheckPerf {
    pub fn verdict(&self) -> &'static str {
        if self.pass {
            "PASS"
        } else {
            "FAIL"
        }
    }
}

/// Reads `check perf`'s report out of its output (progress bar and all):
/// `PASS: Throughput is 151 writes/s` (or `FAIL: Throughput too low: …`),
/// `PASS: Slowest request took 0.087321s` (or `…too long: 1.2s`),
/// `PASS: Stddev is 0.006553s`, then `PASS` or `FAIL` alone.
pub fn parse(out: &str) -> Result<CheckPerf> {
    let lines: Vec<&str> = out.split(['\n', '\r']).map(str::trim).collect();
    let find = |word: &str| lines.iter().copied().find(|l| l.contains(word));
    let last_seconds =
        |l: &str| -> Option<f64> { l.split_whitespace().last()?.strip_suffix('s')?.parse().ok() };
    let throughput = find("Throughput").context("no Throughput line")?;
    let words: Vec<&str> = throughput.split_whitespace().collect();
    let writes_per_sec = words
        .iter()
        .position(|w| *w == "writes/s")
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| words[i].parse::<f64>().ok())
        .with_context(|| format!("cannot read the throughput in {throughput:?}"))?;
    let slowest = find("Slowest request").context("no Slowest request line")?;
    let slowest_s =
        last_seconds(slowest).with_context(|| format!("cannot read the time in {slowest:?}"))?;
    let stddev_s = find("Stddev").and_then(last_seconds).unwrap_or(0.0);
    let pass = match lines.iter().rev().find(|l| **l == "PASS" || **l == "FAIL") {
        Some(v) => *v == "PASS",
        None => bail!("no final PASS or FAIL"),
    };
    Ok(CheckPerf {
        writes_per_sec,
        slowest_s,
        stddev_s,
        pass,
    })
}

/// Runs `etcdctl check perf --load=LOAD` against `c`'s members and reads
/// its report. Empties the prefix first (an earlier run that was cut short
/// leaves keys there and `check perf` refuses to start).
pub async fn run(c: &ClusterProc, load: &str) -> Result<CheckPerf> {
    let etcdctl = crate::compare::ensure_etcd35()?.with_file_name("etcdctl");
    let endpoints = c.endpoints.join(",");
    let load = load.to_string();
    tokio::task::spawn_blocking(move || -> Result<CheckPerf> {
        let dir = tempfile::tempdir()?;
        let del = ["del", "--prefix", PREFIX];
        etcdctl_run(
            &etcdctl,
            &endpoints,
            &del,
            dir.path(),
            Duration::from_secs(60),
        )?;
        let args = ["check", "perf", &format!("--load={load}")];
        let out = etcdctl_run(&etcdctl, &endpoints, &args, dir.path(), RUN_MAX)?;
        parse(&out).with_context(|| {
            let tail: String = out.lines().rev().take(8).collect::<Vec<_>>().join(" | ");
            format!("etcdctl check perf --load={load}: {tail}")
        })
    })
    .await?
}

/// Runs etcdctl with `args`, output into a file in `dir` (the progress bar
/// is long), killed after `limit`; returns stdout and stderr together. A
/// failing exit is not an error: `check perf` exits 1 when it prints FAIL.
fn etcdctl_run(
    bin: &Path,
    endpoints: &str,
    args: &[&str],
    dir: &Path,
    limit: Duration,
) -> Result<String> {
    let out_path = dir.join("etcdctl.out");
    let out = std::fs::File::create(&out_path)?;
    let mut child = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("etcdctl {} took longer than {limit:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(std::fs::read_to_string(&out_path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_and_a_failing_report_are_read() {
        let pass = " 60 / 60 Boooo! 100.00% 1m0s\rPASS: Throughput is 151 writes/s\n\
                    PASS: Slowest request took 0.087321s\nPASS: Stddev is 0.006553s\nPASS\n";
        assert_eq!(
            parse(pass).unwrap(),
            CheckPerf {
                writes_per_sec: 151.0,
                slowest_s: 0.087321,
                stddev_s: 0.006553,
                pass: true
            }
        );
        let fail = "FAIL: Throughput too low: 4210 writes/s\n\
                    FAIL: Slowest request took too long: 1.538200s\n\
                    PASS: Stddev is 0.060000s\nFAIL\n";
        let r = parse(fail).unwrap();
        assert_eq!(
            (r.writes_per_sec, r.slowest_s, r.pass),
            (4210.0, 1.5382, false)
        );
        assert!(parse("Error: prefix /etcdctl-check-perf/ has keys").is_err());
    }
}
