//! `report.html`: one self-contained page (inline SVG, no scripts, nothing
//! fetched) with the verdicts, a latency-over-time plot with the fault
//! windows shaded, and the nemesis timeline.

use std::fmt::Write;
use std::path::Path;

use super::history::{pair, End, Event, Type};
use super::RunResult;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 40.0;
/// Points plotted at most (every k-th operation beyond it).
const POINTS_MAX: usize = 20_000;
/// Latency axis, log scale: 0.1 ms to 10 s.
const LAT_MIN_MS: f64 = 0.1;
const LAT_MAX_MS: f64 = 10_000.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Point {
    t_s: f64,
    lat_ms: f64,
    kind: Type,
}

fn points(events: &[Event]) -> Vec<Point> {
    pair(events)
        .into_iter()
        .filter_map(|(inv, end)| {
            let (e, kind) = match end {
                End::Ok(e) => (e, Type::Ok),
                End::Fail(e) => (e, Type::Fail),
                End::Unknown(Some(e)) => (e, Type::Info),
                End::Unknown(None) => return None,
            };
            Some(Point {
                t_s: inv.time_ns as f64 / 1e9,
                lat_ms: e.time_ns.saturating_sub(inv.time_ns) as f64 / 1e6,
                kind,
            })
        })
        .collect()
}

/// (start s, end s, label) of each fault.
fn windows(events: &[Event], end_s: f64) -> Vec<(f64, f64, String)> {
    let mut out = Vec::new();
    let mut open: Option<(f64, String)> = None;
    for e in events.iter().filter(|e| e.process < 0) {
        let t = e.time_ns as f64 / 1e9;
        match e.f.as_str() {
            "start-fault" => {
                let mut label = e.value["fault"].as_str().unwrap_or("fault").to_string();
                if let Some(shape) = e.value["shape"].as_str() {
                    label = format!("{label} {}", shape.split(' ').next().unwrap_or(""));
                }
                let node = e.value["node"]
                    .as_u64()
                    .map(|n| format!(" n{n}"))
                    .unwrap_or_default();
                open = Some((t, format!("{label}{node}")));
            }
            "heal" | "final-heal" => {
                if let Some((s, l)) = open.take() {
                    out.push((s, t, l));
                }
            }
            _ => {}
        }
    }
    if let Some((s, l)) = open {
        out.push((s, end_s, l));
    }
    out
}

/// The plot's frame: seconds since the start across, latency up (log
/// scale).
struct Frame {
    end_s: f64,
    plot_w: f64,
    plot_h: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        MARGIN_LEFT + t_s / self.end_s * self.plot_w
    }

    fn y(&self, ms: f64) -> f64 {
        let v = ms.clamp(LAT_MIN_MS, LAT_MAX_MS);
        10.0 + (1.0 - (v / LAT_MIN_MS).log10() / (LAT_MAX_MS / LAT_MIN_MS).log10()) * self.plot_h
    }
}

fn plot(events: &[Event]) -> String {
    let pts = points(events);
    let end_s = events
        .last()
        .map(|e| e.time_ns as f64 / 1e9)
        .unwrap_or(1.0)
        .max(1.0);
    let f = Frame {
        end_s,
        plot_w: WIDTH - MARGIN_LEFT - 10.0,
        plot_h: HEIGHT - MARGIN_BOTTOM - 10.0,
    };
    let (plot_w, plot_h) = (f.plot_w, f.plot_h);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r##"<rect x="{MARGIN_LEFT}" y="10" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>"##
    );
    fault_windows(&mut s, &f, events);
    axes(&mut s, &f);
    let every = pts.len().div_ceil(POINTS_MAX).max(1);
    for p in pts.iter().step_by(every) {
        let color = match p.kind {
            Type::Ok => "#2a7",
            Type::Fail => "#c33",
            _ => "#e90",
        };
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}"/>"#,
            f.x(p.t_s),
            f.y(p.lat_ms)
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start</text><text x="{MARGIN_LEFT}" y="{:.1}"><tspan fill="#2a7">● ok</tspan> <tspan fill="#c33">● fail</tspan> <tspan fill="#e90">● unknown</tspan> <tspan fill="#a33">▮ fault</tspan></text></svg>"##,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        HEIGHT - 6.0
    );
    s
}

/// Each fault's window, shaded and labelled.
fn fault_windows(s: &mut String, f: &Frame, events: &[Event]) {
    let plot_h = f.plot_h;
    for (a, b, label) in windows(events, f.end_s) {
        let _ = write!(
            s,
            r##"<rect class="fault" x="{:.1}" y="10" width="{:.1}" height="{plot_h}" fill="#f4b4b4" fill-opacity="0.45"><title>{}</title></rect><text x="{:.1}" y="22" fill="#a33">{}</text>"##,
            f.x(a),
            (f.x(b) - f.x(a)).max(1.0),
            esc(&label),
            f.x(a) + 2.0,
            esc(&label)
        );
    }
}

/// The latency grid lines and the time ticks.
fn axes(s: &mut String, f: &Frame) {
    for ms in [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = write!(
            s,
            r##"<line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms} ms</text>"##,
            MARGIN_LEFT + f.plot_w,
            MARGIN_LEFT - 4.0,
            f.y(ms) + 4.0,
            y = f.y(ms)
        );
    }
    let step = (f.end_s / 10.0).max(1.0).ceil();
    let mut t = 0.0;
    while t <= f.end_s {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            f.x(t),
            HEIGHT - MARGIN_BOTTOM + 16.0
        );
        t += step;
    }
}

pub fn write(path: &Path, r: &RunResult, events: &[Event]) -> anyhow::Result<()> {
    let mut h = String::new();
    heading(&mut h, r);
    checks(&mut h, r);
    h.push_str("<h2>Latency over time</h2>");
    h.push_str(&plot(events));
    h.push_str("<h2>Timeline</h2><table><tr><th>time</th><th>event</th><th>detail</th></tr>");
    for e in events.iter().filter(|e| e.process < 0) {
        let _ = write!(
            h,
            "<tr><td>{:.2} s</td><td>{}</td><td>{}</td></tr>",
            e.time_ns as f64 / 1e9,
            esc(&e.f),
            esc(&e.value.to_string())
        );
    }
    h.push_str("</table><p>Files: history.jsonl (every event), results.json (verdicts), n*.log (members).</p></body></html>");
    std::fs::write(path, h)?;
    Ok(())
}

/// The page's head, its title line with the verdict, and the counts.
fn heading(h: &mut String, r: &RunResult) {
    let verdict = match r.valid() {
        Some(true) => ("VALID", "#2a7"),
        Some(false) => ("ANOMALY", "#c33"),
        None => ("UNKNOWN", "#e90"),
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>jepsen {} {} seed {}</title>\
         <style>body{{font-family:sans-serif;margin:20px;max-width:1040px}}td,th{{padding:2px 8px;text-align:left;vertical-align:top}}pre{{white-space:pre-wrap;margin:0}}</style></head><body>",
        r.workload.name(),
        r.nemesis.join(","),
        r.seed
    );
    let _ = write!(
        h,
        "<h1>{} · {} · seed {} · <span style=\"color:{}\">{}</span></h1>",
        r.workload.name(),
        esc(&r.nemesis.join(",")),
        r.seed,
        verdict.1,
        verdict.0
    );
    let _ = write!(
        h,
        "<p>{} nodes · {} ok, {} failed, {} unknown · recovery after the final heal: {}</p>",
        r.nodes,
        r.ok,
        r.fail,
        r.info,
        r.recovery_ms
            .map(|m| format!("{m} ms"))
            .unwrap_or_else(|| "none within the bound".into())
    );
}

/// The checks table: each check, each crash, each fault the final heal
/// left.
fn checks(h: &mut String, r: &RunResult) {
    h.push_str("<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>detail</th></tr>");
    for c in &r.checks {
        let v = match c.valid {
            Some(true) => "valid",
            Some(false) => "INVALID",
            None => "unknown",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{v}</td><td><pre>{}</pre></td></tr>",
            esc(&c.name),
            esc(&c.detail)
        );
    }
    for crash in &r.crashes {
        let _ = write!(
            h,
            "<tr><td>crash</td><td>INVALID</td><td>{}</td></tr>",
            esc(crash)
        );
    }
    for u in &r.unhealed {
        let _ = write!(
            h,
            "<tr><td>final heal</td><td>unknown</td><td>not undone: {}</td></tr>",
            esc(u)
        );
    }
    h.push_str("</table>");
}
