//! What one `bench compare` run measured (`RunData`) and its `RESULT`
//! lines: the data the text tables, BENCHMARKS.md's section and the HTML
//! report are all made from, kept apart from the code that measures it
//! (`report.rs`) so the HTML report reads it without reaching back.

use crate::checkperf::CheckPerf;
use crate::compare::{Sample, System};

/// The systems in a run, in `Samples` order; the first two are anchors.
pub const SYSTEMS: [System; 3] = [System::Etcd34, System::Etcd35, System::Secretd];

/// The row the gRPC floor is measured beside.
pub const FLOOR_ROW: &str = "get-ser";

/// One row's medians, one per system in `SYSTEMS` order.
pub struct RowMedians {
    pub name: &'static str,
    pub tag: &'static str,
    pub medians: [Sample; 3],
}

/// One `etcdctl check perf` load against etcd 3.5.1 and secretd (an
/// error's text where it could not run or its output could not be read).
pub struct CheckPerfRow {
    pub load: &'static str,
    pub tag: &'static str,
    pub etcd: Result<CheckPerf, String>,
    pub secretd: Result<CheckPerf, String>,
}

/// Everything one run measured: the text tables, BENCHMARKS.md's section
/// and the HTML report are all made from it.
pub struct RunData {
    pub rounds: usize,
    pub rows: Vec<RowMedians>,
    /// The gRPC floors' medians next to `get-ser` (when that row ran), one
    /// per entry of `floor::PROCESSES`: one process, then three.
    pub floors: Vec<Sample>,
    /// RSS per system in `SYSTEMS` order (`ops_per_sec` holds MiB), or
    /// empty.
    pub rss: Vec<Sample>,
    pub checkperf: Vec<CheckPerfRow>,
}

/// `a / b`, 0 when `b` is (so a missing number never divides by zero).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The anchor's name in prose and its tag in `RESULT` lines.
pub fn anchor_names(anchor: usize) -> (&'static str, &'static str) {
    match SYSTEMS[anchor] {
        System::Etcd34 => ("etcd 3.4", "etcd-3.4"),
        _ => ("etcd 3.5.1", "etcd-3.5.1"),
    }
}

/// The `RESULT` lines against one anchor. The two older lines come first
/// and keep their exact format (other tools read them): `RESULT put256@1
/// … p50_ms=… p99_ms=…` and `RESULT put256 … ratio=… p99_ratio=…`. Then
/// one line per row, `RESULT <tag> anchor=… ratio=… p99_ratio=…
/// cpu_ratio=…` (`get-ser` adds `floor_ratio=`), whose `ratio` and
/// `p99_ratio` equal the older lines' where both exist, so a reader that
/// takes either line of a tag reads the same numbers; then check perf
/// (against etcd 3.5.1 only).
pub fn result_lines(d: &RunData, anchor: usize, tag: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let pair = |r: &RowMedians| (r.medians[anchor], r.medians[2]);
    for old in ["put256@1", "put256"] {
        let Some((e, s)) = d.rows.iter().find(|r| r.tag == old).map(pair) else {
            continue;
        };
        let r = ratio(s.ops_per_sec, e.ops_per_sec);
        lines.push(match old {
            "put256@1" => format!(
                "RESULT put256@1 anchor={tag} ratio={r:.2} p50_ms={:.2}/{:.2} p99_ms={:.2}/{:.2}",
                s.p50_ms, e.p50_ms, s.p99_ms, e.p99_ms
            ),
            _ => format!(
                "RESULT put256 anchor={tag} ratio={r:.2} p99_ratio={:.2}",
                ratio(s.p99_ms, e.p99_ms)
            ),
        });
    }
    for row in &d.rows {
        let (e, s) = pair(row);
        let mut l = format!(
            "RESULT {} anchor={tag} ratio={:.2} p99_ratio={:.2} cpu_ratio={:.2}",
            row.tag,
            ratio(s.ops_per_sec, e.ops_per_sec),
            ratio(s.p99_ms, e.p99_ms),
            ratio(s.server_cpu_us_per_op, e.server_cpu_us_per_op)
        );
        if let (FLOOR_ROW, Some(f)) = (row.tag, d.floors.first()) {
            let floor_ratio = ratio(s.server_cpu_us_per_op, f.server_cpu_us_per_op);
            l.push_str(&format!(" floor_ratio={floor_ratio:.2}"));
        }
        if let (FLOOR_ROW, Some(f)) = (row.tag, d.floors.get(1)) {
            let floor3_ratio = ratio(s.server_cpu_us_per_op, f.server_cpu_us_per_op);
            l.push_str(&format!(" floor3_ratio={floor3_ratio:.2}"));
        }
        lines.push(l);
    }
    if anchor == 1 {
        lines.extend(d.checkperf.iter().map(|c| checkperf_result(c, tag)));
    }
    lines
}

/// `RESULT checkperf-m anchor=etcd-3.5.1 ratio=… slowest_ratio=…
/// pass=<secretd>/<etcd>` (`ERROR` for a side that did not run).
fn checkperf_result(c: &CheckPerfRow, tag: &str) -> String {
    let v = |x: &Result<CheckPerf, String>| x.as_ref().map_or("ERROR", |p| p.verdict());
    let (r, slowest) = match (&c.secretd, &c.etcd) {
        (Ok(s), Ok(e)) => (
            ratio(s.writes_per_sec, e.writes_per_sec),
            ratio(s.slowest_s, e.slowest_s),
        ),
        _ => (0.0, 0.0),
    };
    format!(
        "RESULT {} anchor={tag} ratio={r:.2} slowest_ratio={slowest:.2} pass={}/{}",
        c.tag,
        v(&c.secretd),
        v(&c.etcd)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ops_per_sec: f64, p99_ms: f64, cpu_us: f64) -> Sample {
        Sample {
            ops_per_sec,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            server_cpu_us_per_op: cpu_us,
            ..Default::default()
        }
    }

    #[test]
    fn the_older_result_lines_keep_their_format_and_every_row_gets_one() {
        let e = sample(1000.0, 4.0, 100.0);
        let s = sample(2000.0, 2.0, 50.0);
        let row = |tag: &'static str| RowMedians {
            name: tag,
            tag,
            medians: [e, e, s],
        };
        let ok = CheckPerf {
            writes_per_sec: 1000.0,
            slowest_s: 0.2,
            stddev_s: 0.01,
            pass: true,
        };
        let d = RunData {
            rounds: 1,
            rows: vec![row("put256@1"), row("put256"), row(FLOOR_ROW)],
            floors: vec![sample(5000.0, 1.0, 25.0), sample(4000.0, 1.0, 40.0)],
            rss: Vec::new(),
            checkperf: vec![CheckPerfRow {
                load: "m",
                tag: "checkperf-m",
                etcd: Ok(CheckPerf {
                    pass: false,
                    ..ok.clone()
                }),
                secretd: Ok(CheckPerf {
                    slowest_s: 0.1,
                    ..ok
                }),
            }],
        };
        let lines = result_lines(&d, 1, "etcd-3.5.1");
        assert_eq!(
            lines,
            [
                "RESULT put256@1 anchor=etcd-3.5.1 ratio=2.00 p50_ms=1.00/2.00 p99_ms=2.00/4.00",
                "RESULT put256 anchor=etcd-3.5.1 ratio=2.00 p99_ratio=0.50",
                "RESULT put256@1 anchor=etcd-3.5.1 ratio=2.00 p99_ratio=0.50 cpu_ratio=0.50",
                "RESULT put256 anchor=etcd-3.5.1 ratio=2.00 p99_ratio=0.50 cpu_ratio=0.50",
                "RESULT get-ser anchor=etcd-3.5.1 ratio=2.00 p99_ratio=0.50 cpu_ratio=0.50 floor_ratio=2.00 floor3_ratio=1.25",
                "RESULT checkperf-m anchor=etcd-3.5.1 ratio=1.00 slowest_ratio=0.50 pass=PASS/FAIL",
            ]
        );
        assert!(result_lines(&d, 0, "etcd-3.4")
            .iter()
            .all(|l| !l.contains("checkperf")));
    }
}
