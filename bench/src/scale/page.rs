//! `bench scale`'s HTML report (`--html`, default `bench-scale.html`): one
//! self-contained page in the look of `bench compare`'s (inline SVG, no
//! scripts): a cost-vs-size curve per measure with both systems on it
//! (keys on a log axis), the latency curves at the largest size, the
//! secret, watcher and agent rows, the `RESULT` and `TARGET` lines, and
//! the machine, commit and date.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::keys::{Curve, Point};
use super::{label, result_lines, rss_per_key, target_lines, ScaleData};
use crate::compare::{Sample, System};
use crate::html::{cdf, esc, number, COLORS};
use crate::markdown::Provenance;

const W: f64 = 330.0;
const H: f64 = 220.0;

/// The colour `bench compare` gives `system`.
fn color_index(system: System) -> usize {
    match system {
        System::Etcd34 => 0,
        System::Etcd35 => 1,
        System::Secretd => 2,
        System::Floor => 3,
    }
}

/// The curves' measures: title, unit, and how to read one from a point.
type Measure = (&'static str, &'static str, fn(&Curve, &Point) -> f64);

const MEASURES: [Measure; 11] = [
    ("put: members' CPU per op", "µs", |_, p| {
        p.put.server_cpu_us_per_op
    }),
    ("get: members' CPU per op", "µs", |_, p| {
        p.get.server_cpu_us_per_op
    }),
    ("put p99", "ms", |_, p| p.put.p99_ms),
    ("get p99", "ms", |_, p| p.get.p99_ms),
    ("put throughput", "ops/s", |_, p| p.put.ops_per_sec),
    ("RSS per member", "MiB", |_, p| p.rss_mib),
    ("RSS per key (above idle)", "B", rss_per_key),
    ("disk per member", "MiB", |_, p| p.disk_mib),
    ("restart to serving", "s", |_, p| p.restart_s),
    ("new member caught up", "s", |_, p| p.catchup_s),
    ("compact + defrag", "s", |_, p| p.compact_s + p.defrag_s),
];

pub fn write(path: &Path, d: &ScaleData, prov: &Provenance) -> Result<()> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>secretd bench scale {} {}</title>\
         <style>body{{font-family:sans-serif;margin:20px;max-width:1060px}}td,th{{padding:2px 8px;text-align:right}}th:first-child,td:first-child{{text-align:left}}pre{{white-space:pre-wrap;margin:0}}svg{{margin:4px 8px 4px 0}}</style></head><body>\
         <h1>How cost grows · commit {} · {} UTC</h1><p>{} · 3 members each on loopback, fsync on, 256 B values, the same client for both. \
         Puts @64 and serializable gets @256 over the whole key space; restart and catch-up are a member's start to its first linearizable read.</p>",
        esc(&prov.commit()),
        esc(&prov.date_utc),
        esc(&prov.commit()),
        esc(&prov.date_utc),
        esc(&prov.machine()),
    );
    h.push_str("<p>");
    for c in &d.curves {
        let _ = write!(
            h,
            "<span style=\"color:{}\">■</span> {} &nbsp; ",
            COLORS[color_index(c.system)],
            c.system.name()
        );
    }
    h.push_str("</p>");
    if d.curves.iter().any(|c| !c.points.is_empty()) {
        h.push_str("<h2>Cost against size</h2><div>");
        for m in MEASURES {
            h.push_str(&chart(&d.curves, m));
        }
        h.push_str("</div><h2>Latency at the largest size</h2>");
        for (what, pick) in [
            ("put @64", (|p: &Point| &p.put) as fn(&Point) -> &Sample),
            ("serializable get @256", |p: &Point| &p.get),
        ] {
            let series: Vec<(usize, &Sample)> = d
                .curves
                .iter()
                .filter_map(|c| c.points.last().map(|p| (color_index(c.system), pick(p))))
                .collect();
            let n = d.curves[0].points.last().map_or(0, |p| p.keys);
            h.push_str(&cdf(&format!("{what}, {} keys", label(n)), &series));
        }
    }
    rows(&mut h, d);
    h.push_str("<h2>RESULT and TARGET lines</h2><pre>");
    for l in result_lines(d).into_iter().chain(target_lines(d)) {
        let _ = writeln!(h, "{}", esc(&l));
    }
    h.push_str("</pre><p>Ratios are secretd / etcd 3.5.1 (lower is better); growth is the largest size's value over the smallest's.</p></body></html>\n");
    std::fs::write(path, h).with_context(|| format!("cannot write {}", path.display()))
}

/// One measure against size: a line per system, keys on a log axis.
fn chart(curves: &[Curve], (title, unit, value): Measure) -> String {
    let pts: Vec<(usize, Vec<(u64, f64)>)> = curves
        .iter()
        .map(|c| {
            let v = c.points.iter().map(|p| (p.keys, value(c, p))).collect();
            (color_index(c.system), v)
        })
        .collect();
    let keys = pts.iter().flat_map(|(_, v)| v.iter().map(|p| p.0));
    let (lo, hi) = (
        keys.clone().min().unwrap_or(1).max(1) as f64,
        keys.max().unwrap_or(10).max(2) as f64,
    );
    let y_max = pts
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let (left, right, top, bottom) = (48.0, 14.0, 24.0, 28.0);
    let (pw, ph) = (W - left - right, H - top - bottom);
    let span = (hi.log10() - lo.log10()).max(1e-9);
    let x = |k: u64| left + ((k as f64).log10() - lo.log10()) / span * pw;
    let y = |v: f64| top + (1.0 - v / y_max) * ph;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><text x="{left}" y="14" font-weight="bold">{} ({})</text><rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##,
        esc(title),
        esc(unit)
    );
    axes(&mut s, &pts, y_max, &x, &y, (left, pw));
    for (c, v) in &pts {
        let line: Vec<String> = v
            .iter()
            .map(|(k, val)| format!("{:.1},{:.1}", x(*k), y(*val)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            line.join(" "),
            COLORS[*c]
        );
        for (k, val) in v {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {} {}</title></circle>"#,
                x(*k),
                y(*val),
                COLORS[*c],
                label(*k),
                number(*val),
                esc(unit)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A chart's value gridlines (0, half, top) and its key labels.
fn axes(
    s: &mut String,
    pts: &[(usize, Vec<(u64, f64)>)],
    y_max: f64,
    x: &dyn Fn(u64) -> f64,
    y: &dyn Fn(f64) -> f64,
    (left, pw): (f64, f64),
) {
    for f in [0.0, 0.5, 1.0] {
        let v = y_max / 1.1 * f;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 4.0,
            y(v) + 4.0,
            number(v),
            y = y(v)
        );
    }
    let mut sizes: Vec<u64> = pts
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for k in sizes {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            x(k),
            H - 10.0,
            label(k)
        );
    }
}

/// The secret, watcher and agent rows as tables.
fn rows(h: &mut String, d: &ScaleData) {
    if d.curves.iter().any(|c| c.watchers.is_some()) {
        h.push_str("<h2>10,000 watchers</h2><table><tr><th>system</th><th>events/s</th><th>delay p50 ms</th><th>delay p99 ms</th><th>CPU µs/event</th><th>RSS MiB/member</th></tr>");
        for c in &d.curves {
            if let Some((w, rss)) = &c.watchers {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.0}</td></tr>",
                    c.system.name(),
                    w.ops_per_sec,
                    w.p50_ms,
                    w.p99_ms,
                    w.server_cpu_us_per_op,
                    rss
                );
            }
        }
        h.push_str("</table>");
    }
    if !d.secrets.is_empty() {
        h.push_str("<h2>Secrets (secretd)</h2><table><tr><th>secrets</th><th>create p50 ms</th><th>create p99 ms</th><th>ls: List call ms</th><th>ls: secretctl ms</th><th>inspect p50 ms</th><th>inspect p99 ms</th></tr>");
        for p in &d.secrets {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                label(p.secrets),
                p.cells().join("</td><td>")
            );
        }
        h.push_str("</table>");
    }
    if let Some(r) = &d.rotation {
        let _ = write!(
            h,
            "<h2>Node agent, {} tasks</h2><p>From a rotation's answer to all {} files showing the new bytes (one reader pass included).</p><table><tr><th>backend</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>\
             <tr><td>FUSE</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr><tr><td>tmpfs</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr></table>",
            super::tasks::TASKS,
            super::tasks::TASKS,
            r.fuse[0], r.fuse[1], r.fuse[2], r.tmpfs[0], r.tmpfs[1], r.tmpfs[2]
        );
    }
    for s in &d.skipped {
        let _ = write!(h, "<p><b>Not run:</b> {}</p>", esc(s));
    }
}
