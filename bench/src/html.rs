//! The HTML report of `bench compare` (`--html`, default
//! `bench-report.html`): one self-contained page in the look of the fault
//! suite's `report.html` (inline SVG, no scripts, nothing fetched) with
//! bars per row for every system (throughput, and CPU per operation with
//! the gRPC floor beside `get-ser`), each row's latency curve from the load
//! generator's histograms, `etcdctl check perf`, the `RESULT` lines, and
//! the machine, commit and date the numbers came from. It is made from the
//! same `RunData` as the text tables and BENCHMARKS.md's section.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::compare::{Sample, CDF_QUANTILES};
use crate::markdown::Provenance;
use crate::results::{anchor_names, result_lines, RunData, FLOOR_ROW, SYSTEMS};

/// Bar colours: etcd 3.4, etcd 3.5.1, secretd, the gRPC floor.
pub(crate) const COLORS: [&str; 5] = ["#999", "#e90", "#2a7", "#69c", "#a6c"];
const FLOOR_NAME: &str = "gRPC floor (no-op server)";
const FLOOR3_NAME: &str = "gRPC floor, 3 processes";
/// The bar charts' geometry, in SVG units.
const LABEL_W: f64 = 250.0;
const BAR_AREA_W: f64 = 500.0;
const BAR_H: f64 = 14.0;
/// A latency plot's size and the top of its percentile axis (99.99%).
const CDF_W: f64 = 490.0;
const CDF_H: f64 = 260.0;
const NINES_MAX: f64 = 4.0;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn system_name(k: usize) -> &'static str {
    match SYSTEMS.get(k) {
        Some(s) => s.name(),
        None if k == SYSTEMS.len() => FLOOR_NAME,
        None => FLOOR3_NAME,
    }
}

/// Writes the page for `d` to `path`.
pub fn write(path: &Path, d: &RunData, prov: &Provenance) -> Result<()> {
    let mut h = String::new();
    heading(&mut h, d, prov);
    h.push_str("<h2>Throughput</h2><p>Operations per second (watch: delivered events per second), median round; longer is better.</p>");
    h.push_str(&bars(d, false));
    h.push_str("<h2>CPU per operation</h2><p>CPU time (user + system) the three members used per operation, in µs (watch: per delivered event); shorter is better. The gRPC floor is one no-op server process driven like <code>get-ser</code>: what tonic, h2 and loopback TCP cost per read; the second floor is three such processes, the client spread over them as over three members.</p>");
    h.push_str(&bars(d, true));
    h.push_str("<h2>Latency</h2><p>Each row's latency distribution (median round) from the load generator's histograms: latency across (log scale), percentile up (90%, 99%, 99.9%, 99.99%, then the maximum). Further left is faster; watch rows measure put-to-delivery delay.</p>");
    for r in &d.rows {
        let series: Vec<(usize, &Sample)> = r.medians.iter().enumerate().collect();
        h.push_str(&cdf(r.name, &series));
    }
    checkperf(&mut h, d);
    rss(&mut h, d);
    h.push_str("<h2>RESULT lines</h2><pre>");
    for anchor in 0..2 {
        let (_, tag) = anchor_names(anchor);
        for l in result_lines(d, anchor, tag) {
            let _ = writeln!(h, "{}", esc(&l));
        }
    }
    h.push_str("</pre><p>ratio: secretd / etcd (higher is better); p99_ratio, cpu_ratio, slowest_ratio: secretd / etcd (lower is better); floor_ratio: secretd's CPU per serializable read / the gRPC floor's (floor3_ratio: / the three-process floor's).</p></body></html>\n");
    std::fs::write(path, h).with_context(|| format!("cannot write {}", path.display()))
}

/// The page's head and its title line: what, when, from which commit, on
/// which machine.
fn heading(h: &mut String, d: &RunData, prov: &Provenance) {
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>secretd bench compare {} {}</title>\
         <style>body{{font-family:sans-serif;margin:20px;max-width:1040px}}td,th{{padding:2px 8px;text-align:left;vertical-align:top}}pre{{white-space:pre-wrap;margin:0}}svg{{margin:4px 8px 4px 0}}</style></head><body>",
        esc(&prov.commit()),
        esc(&prov.date_utc)
    );
    let _ = write!(
        h,
        "<h1>secretd against etcd · commit {} · {} UTC</h1>\
         <p>{} · {} rounds, median shown · 3 members each on loopback, fsync on, the same client for every system. \
         The machine is shared and every system is CPU-bound on it: the CPU charts vary less than throughput.</p>",
        esc(&prov.commit()),
        esc(&prov.date_utc),
        esc(&prov.machine()),
        d.rounds
    );
    h.push_str("<p>");
    for (k, c) in COLORS.iter().enumerate() {
        let _ = write!(
            h,
            "<span style=\"color:{c}\">■</span> {} &nbsp; ",
            system_name(k)
        );
    }
    h.push_str("</p>");
}

/// One horizontal bar chart: per row, a bar per system scaled to the
/// row's largest value, the value written after it.
fn bars(d: &RunData, cpu: bool) -> String {
    let value = |s: &Sample| {
        if cpu {
            s.server_cpu_us_per_op
        } else {
            s.ops_per_sec
        }
    };
    let groups: Vec<(&str, Vec<(usize, f64)>)> = d
        .rows
        .iter()
        .map(|r| {
            let mut v: Vec<(usize, f64)> = (0..3).map(|k| (k, value(&r.medians[k]))).collect();
            if cpu && r.tag == FLOOR_ROW {
                v.extend(
                    d.floors
                        .iter()
                        .enumerate()
                        .map(|(i, f)| (3 + i, f.server_cpu_us_per_op)),
                );
            }
            (r.name, v)
        })
        .collect();
    let height: f64 = groups
        .iter()
        .map(|(_, v)| v.len() as f64 * (BAR_H + 2.0) + 12.0)
        .sum::<f64>()
        + 10.0;
    let width = LABEL_W + BAR_AREA_W + 200.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0}" viewBox="0 0 {width} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let mut y = 10.0;
    for (name, v) in &groups {
        let max = v.iter().map(|x| x.1).fold(0.0, f64::max).max(1e-9);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + v.len() as f64 * (BAR_H + 2.0) / 2.0 + 4.0,
            esc(name)
        );
        for (k, x) in v {
            let w = (x / max * BAR_AREA_W).max(1.0);
            let _ = write!(
                s,
                r##"<rect x="{LABEL_W}" y="{y:.1}" width="{w:.1}" height="{BAR_H}" fill="{}"><title>{name}: {x:.1}</title></rect><text x="{:.1}" y="{:.1}">{} <tspan fill="#777">{name}</tspan></text>"##,
                COLORS[*k],
                LABEL_W + w + 4.0,
                y + BAR_H - 3.0,
                number(*x),
                name = system_name(*k)
            );
            y += BAR_H + 2.0;
        }
        y += 12.0;
    }
    s.push_str("</svg>");
    s
}

/// A number as the charts print it: whole above 100, else 3 digits.
pub(crate) fn number(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// The percentile axis: q as its "nines" (90% → 1, 99% → 2, …), the
/// maximum half a step above 99.99%.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        NINES_MAX + 0.5
    } else {
        (-(1.0 - q).log10()).min(NINES_MAX)
    }
}

/// One row's latency curves, one per system, latency across on a log
/// scale spanning the row's decades.
pub(crate) fn cdf(name: &str, series: &[(usize, &Sample)]) -> String {
    let all = series.iter().flat_map(|(_, s)| s.cdf_ms.iter().copied());
    let lo_ms = all.clone().fold(f64::MAX, f64::min).max(0.001);
    let hi_ms = all.fold(0.0, f64::max).max(lo_ms * 10.0);
    let (lo_dec, hi_dec) = (lo_ms.log10().floor(), hi_ms.log10().ceil());
    let (left, bottom, top) = (50.0, 30.0, 24.0);
    let (plot_w, plot_h) = (CDF_W - left - 30.0, CDF_H - bottom - top);
    let x =
        |ms: f64| left + (ms.max(1e-6).log10().max(lo_dec) - lo_dec) / (hi_dec - lo_dec) * plot_w;
    let y = |q: f64| top + (1.0 - nines(q) / (NINES_MAX + 0.5)) * plot_h;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{CDF_W}" height="{CDF_H}" viewBox="0 0 {CDF_W} {CDF_H}" font-family="sans-serif" font-size="11"><text x="{left}" y="14" font-weight="bold">{}</text><rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>"##,
        esc(name)
    );
    for (q, label) in [
        (0.0, "0%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (1.0, "max"),
    ] {
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + plot_w,
            left - 4.0,
            y(q) + 4.0,
            y = y(q)
        );
    }
    let mut dec = lo_dec;
    while dec <= hi_dec {
        let ms = 10f64.powf(dec);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{} ms</text>"##,
            top + plot_h,
            CDF_H - 12.0,
            number(ms),
            x = x(ms)
        );
        dec += 1.0;
    }
    for &(k, m) in series {
        let pts: Vec<String> = CDF_QUANTILES
            .iter()
            .zip(m.cdf_ms)
            .map(|(q, ms)| format!("{:.1},{:.1}", x(ms), y(*q)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>"#,
            pts.join(" "),
            COLORS[k],
            system_name(k)
        );
    }
    s.push_str("</svg>");
    s
}

/// The `etcdctl check perf` table, when it ran.
fn checkperf(h: &mut String, d: &RunData) {
    if d.checkperf.is_empty() {
        return;
    }
    h.push_str("<h2>etcdctl check perf</h2><p>etcd 3.5.1's <code>etcdctl check perf</code> against the three members of each system, once per run (60 s per load; m: 1,000 writes/s from 200 clients, l: 8,000 writes/s from 500 clients, 1 KiB values).</p>\
        <table><tr><th>load</th><th>system</th><th>writes/s</th><th>slowest request</th><th>stddev</th><th>verdict</th></tr>");
    for r in &d.checkperf {
        for (k, x) in [(1, &r.etcd), (2, &r.secretd)] {
            let cells = match x {
                Ok(p) => format!(
                    "<td>{:.0}</td><td>{:.3} s</td><td>{:.3} s</td><td style=\"color:{}\">{}</td>",
                    p.writes_per_sec,
                    p.slowest_s,
                    p.stddev_s,
                    if p.pass { "#2a7" } else { "#c33" },
                    p.verdict()
                ),
                Err(e) => format!("<td colspan=\"4\">did not run: <pre>{}</pre></td>", esc(e)),
            };
            let _ = write!(
                h,
                "<tr><td>--load={}</td><td><span style=\"color:{}\">■</span> {}</td>{cells}</tr>",
                r.load,
                COLORS[k],
                system_name(k)
            );
        }
    }
    h.push_str("</table>");
}

/// The memory line, when it ran.
fn rss(h: &mut String, d: &RunData) {
    if d.rss.len() != 3 {
        return;
    }
    h.push_str("<h2>Memory</h2><table><tr><th>system</th><th>RSS after 100k keys of 256 B, 3 members</th></tr>");
    for (k, s) in d.rss.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td><span style=\"color:{}\">■</span> {}</td><td>{:.0} MiB</td></tr>",
            COLORS[k],
            system_name(k),
            s.ops_per_sec
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::RowMedians;

    #[test]
    fn a_page_holds_every_row_and_no_script() {
        let s = Sample {
            ops_per_sec: 1000.0,
            p99_ms: 2.0,
            server_cpu_us_per_op: 50.0,
            cdf_ms: CDF_QUANTILES.map(|q| 0.1 + q * 5.0),
            ..Default::default()
        };
        let d = RunData {
            rounds: 1,
            rows: vec![RowMedians {
                name: "get serializable @256",
                tag: FLOOR_ROW,
                medians: [s; 3],
            }],
            floors: vec![s, s],
            rss: Vec::new(),
            checkperf: Vec::new(),
        };
        let prov = Provenance {
            date_utc: "2026-12-07 01:00".into(),
            commit: "abc1234".into(),
            dirty: true,
            cpu_model: "Some <CPU>".into(),
            cores: 2,
            kernel: "6.1".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.html");
        write(&path, &d, &prov).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(page.contains("abc1234-dirty"));
        assert!(page.contains("Some &lt;CPU&gt;"));
        assert!(page.contains("RESULT get-ser anchor=etcd-3.5.1 ratio=1.00 p99_ratio=1.00 cpu_ratio=1.00 floor_ratio=1.00 floor3_ratio=1.00"));
        assert!(page.contains(FLOOR_NAME));
        assert!(page.contains(FLOOR3_NAME));
        assert!(page.contains("<polyline"));
        assert!(!page.contains("<script"));
    }
}
