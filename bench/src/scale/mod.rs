//! `bench scale`: how cost grows with the data, secretd and etcd 3.5.1
//! side by side in one run (issue 32, section 2). The key curve (`keys`)
//! runs each system's 3-member cluster through every size in turn; the
//! secret rows (`objects`) and the 1,000-task agent (`tasks`) are
//! secretd's own. One `ScaleData` makes the text tables, the `RESULT` and
//! `TARGET` lines, BENCHMARKS.md's scale section and the HTML report
//! (`page`). Nothing here asserts: it prints numbers and says which of the
//! issue's targets they meet.

pub mod keys;
pub mod objects;
pub mod page;
pub mod tasks;

use std::fmt::Write;
use std::path::Path;

use anyhow::{bail, Result};

use crate::compare::{self, System};
use crate::results::ratio;

/// What `bench scale` runs (`--rows` picks sections by these names).
pub const SECTIONS: [&str; 4] = ["keys", "watchers", "secrets", "agent"];
/// The secret counts.
const SECRET_SIZES: [u64; 3] = [1_000, 10_000, 100_000];
/// The targets (issue 32, section 2).
const CPU_GROWTH_MAX: f64 = 1.2;
const RSS_PER_KEY_RATIO_MAX: f64 = 0.5;
const ROTATION_P99_MS_MAX: f64 = 100.0;

pub struct Options<'a> {
    /// Key counts, ascending.
    pub sizes: Vec<u64>,
    /// Sections to run (empty: all).
    pub only: &'a [String],
    pub markdown: Option<&'a Path>,
    pub html: &'a Path,
}

/// Everything one run measured.
#[derive(Default)]
pub struct ScaleData {
    /// etcd 3.5.1's curve, then secretd's (empty without `keys`).
    pub curves: Vec<keys::Curve>,
    pub secrets: Vec<objects::SecretsPoint>,
    pub rotation: Option<tasks::RotationRow>,
    /// Sections that could not run here, and why.
    pub skipped: Vec<String>,
}

/// 10000 → "10k", 1000000 → "1M".
pub fn label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

pub async fn run(o: &Options<'_>) -> Result<()> {
    for w in o.only {
        if !SECTIONS.contains(&w.as_str()) {
            bail!(
                "--rows: no section {w:?} (sections: {})",
                SECTIONS.join(", ")
            );
        }
    }
    if o.sizes.is_empty() || o.sizes.windows(2).any(|w| w[0] >= w[1]) || o.sizes[0] == 0 {
        bail!("--sizes must be ascending key counts above 0");
    }
    let on = |s: &str| o.only.is_empty() || o.only.iter().any(|w| w == s);
    let base = compare::base_port();
    let mut d = ScaleData::default();
    if on("keys") || on("watchers") {
        let sizes: &[u64] = if on("keys") { &o.sizes } else { &[] };
        for (i, sys) in [System::Etcd35, System::Secretd].into_iter().enumerate() {
            let c = keys::curve(sys, base + 50 * i as u16, sizes, on("watchers")).await?;
            d.curves.push(c);
        }
    }
    if on("secrets") || on("agent") {
        let c = compare::start(System::Secretd, base + 100, 3)?;
        compare::ready(&c).await?;
        if on("secrets") {
            d.secrets = objects::rows(&c, &SECRET_SIZES).await?;
        }
        if on("agent") {
            match tasks::rotation(&c).await {
                Ok(r) => d.rotation = Some(r),
                Err(e) => {
                    eprintln!("bench scale: the agent row did not run: {e:#}");
                    d.skipped.push(format!("agent: {e:#}"));
                }
            }
        }
    }
    let tables = tables(&d);
    for t in &tables {
        print!("{t}");
    }
    let prov = crate::markdown::Provenance::gather();
    page::write(o.html, &d, &prov)?;
    eprintln!("bench: wrote {}", o.html.display());
    if let Some(path) = o.markdown {
        let markers = (crate::markdown::SCALE_BEGIN, crate::markdown::SCALE_END);
        let sizes: Vec<String> = o.sizes.iter().map(|&n| label(n)).collect();
        let what = format!("bench scale, keys {}", sizes.join("/"));
        crate::markdown::write_between(path, markers, &what, &tables, &prov)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// The text tables, each ending in its `RESULT` lines; the last holds
/// the `TARGET` lines.
pub fn tables(d: &ScaleData) -> Vec<String> {
    let mut out = Vec::new();
    if d.curves.iter().any(|c| !c.points.is_empty()) {
        out.push(keys_table(d));
    }
    if d.curves.iter().any(|c| c.watchers.is_some()) || !d.secrets.is_empty() {
        out.push(objects_table(d));
    }
    let mut t = String::new();
    if let Some(r) = &d.rotation {
        let _ = writeln!(
            t,
            "agent, {} tasks mounting one secret: rotate answered -> all files new, ms (p50 / p99 / max)\n  fuse  {:.1} / {:.1} / {:.1}\n  tmpfs {:.1} / {:.1} / {:.1}",
            tasks::TASKS, r.fuse[0], r.fuse[1], r.fuse[2], r.tmpfs[0], r.tmpfs[1], r.tmpfs[2]
        );
    }
    for s in &d.skipped {
        let _ = writeln!(t, "not run: {s}");
    }
    for l in result_lines(d) {
        let _ = writeln!(t, "{l}");
    }
    for l in target_lines(d) {
        let _ = writeln!(t, "{l}");
    }
    out.push(t);
    out
}

fn keys_table(d: &ScaleData) -> String {
    let mut t = String::from(
        "keys of 256 B, 3 members each; puts @64 and serializable gets @256 over the whole key space\n",
    );
    let _ = writeln!(
        t,
        "{:<6} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "keys",
        "system",
        "put p99",
        "put cpu",
        "get p99",
        "get cpu",
        "RSS MiB",
        "RSS B/key",
        "disk MiB",
        "restart",
        "catch-up",
        "compact",
        "defrag"
    );
    let _ = writeln!(
        t,
        "{:<6} {:<11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "", "ms", "us/op", "ms", "us/op", "/member", "/member", "/member", "s", "s", "s", "s"
    );
    let sizes: Vec<u64> = d.curves[0].points.iter().map(|p| p.keys).collect();
    for (k, &n) in sizes.iter().enumerate() {
        for c in &d.curves {
            let Some(p) = c.points.get(k) else { continue };
            let _ = writeln!(
                t,
                "{:<6} {:<11} {:>9.2} {:>9.1} {:>9.2} {:>9.1} {:>9.0} {:>10.0} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                label(n),
                c.system.name(),
                p.put.p99_ms,
                p.put.server_cpu_us_per_op,
                p.get.p99_ms,
                p.get.server_cpu_us_per_op,
                p.rss_mib,
                rss_per_key(c, p),
                p.disk_mib,
                p.restart_s,
                p.catchup_s,
                p.compact_s,
                p.defrag_s
            );
        }
    }
    t.push_str("(RSS B/key: a member's RSS above its idle RSS, per key; restart (a follower's, SIGTERM) and catch-up (a new member's): process start to its first linearizable read)\n");
    t
}

fn objects_table(d: &ScaleData) -> String {
    let mut t = String::new();
    for c in &d.curves {
        if let Some((w, rss)) = &c.watchers {
            let _ = writeln!(
                t,
                "10000 watchers, {:<11} {:>9.0} events/s, delay p99 {:>7.2} ms, {:>5.2} us/event, RSS {:>5.0} MiB/member",
                c.system.name(),
                w.ops_per_sec,
                w.p99_ms,
                w.server_cpu_us_per_op,
                rss
            );
        }
    }
    if !d.secrets.is_empty() {
        let _ = writeln!(
            t,
            "{:<9} {:>12} {:>12} {:>12} {:>12} {:>13} {:>13}",
            "secrets",
            "create p50",
            "create p99",
            "ls (calls)",
            "ls (CLI)",
            "inspect p50",
            "inspect p99"
        );
        for p in &d.secrets {
            let cells: Vec<String> = p.cells().iter().map(|c| format!("{c:>9} ms")).collect();
            let _ = writeln!(t, "{:<9} {}", label(p.secrets), cells.join(" "));
        }
        let _ = writeln!(
            t,
            "(creates @64; the cluster's first create, which makes its KEK, alone: {:.1} ms; ls (calls): List paged 10,000 at a time; ls (CLI): `secretctl secret ls`, the whole process)",
            d.secrets[0].first_create_ms
        );
    }
    t
}

/// A member's RSS above its idle RSS per key, in bytes.
pub fn rss_per_key(c: &keys::Curve, p: &keys::Point) -> f64 {
    (p.rss_mib - c.idle_rss_mib).max(0.0) * (1 << 20) as f64 / p.keys.max(1) as f64
}

/// The two curves as (etcd, secretd), if both ran.
fn pair(d: &ScaleData) -> Option<(&keys::Curve, &keys::Curve)> {
    match d.curves.as_slice() {
        [e, s] => Some((e, s)),
        _ => None,
    }
}

/// One `RESULT scale-<size>` line per size both systems reached.
fn size_lines(d: &ScaleData) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((e, s)) = pair(d) {
        for (pe, ps) in e.points.iter().zip(&s.points) {
            out.push(format!(
                "RESULT scale-{} anchor=etcd-3.5.1 put_cpu_ratio={:.2} get_cpu_ratio={:.2} put_p99_ratio={:.2} get_p99_ratio={:.2} rss_ratio={:.2} rss_per_key_ratio={:.2} disk_ratio={:.2} restart_ratio={:.2} catchup_ratio={:.2} compact_ratio={:.2} defrag_ratio={:.2}",
                label(ps.keys),
                ratio(ps.put.server_cpu_us_per_op, pe.put.server_cpu_us_per_op),
                ratio(ps.get.server_cpu_us_per_op, pe.get.server_cpu_us_per_op),
                ratio(ps.put.p99_ms, pe.put.p99_ms),
                ratio(ps.get.p99_ms, pe.get.p99_ms),
                ratio(ps.rss_mib, pe.rss_mib),
                ratio(rss_per_key(s, ps), rss_per_key(e, pe)),
                ratio(ps.disk_mib, pe.disk_mib),
                ratio(ps.restart_s, pe.restart_s),
                ratio(ps.catchup_s, pe.catchup_s),
                ratio(ps.compact_s, pe.compact_s),
                ratio(ps.defrag_s, pe.defrag_s),
            ));
        }
    }
    out
}

/// A system's growth from its smallest size to its largest.
fn growth_line(c: &keys::Curve) -> Option<String> {
    let (a, b) = (c.points.first()?, c.points.last()?);
    (a.keys != b.keys).then(|| {
        format!(
            "RESULT scale-growth system={} from={} to={} put_cpu={:.2} get_cpu={:.2} put_p99={:.2} get_p99={:.2} restart={:.2} catchup={:.2}",
            c.system.name().replace(' ', "-"),
            label(a.keys),
            label(b.keys),
            ratio(b.put.server_cpu_us_per_op, a.put.server_cpu_us_per_op),
            ratio(b.get.server_cpu_us_per_op, a.get.server_cpu_us_per_op),
            ratio(b.put.p99_ms, a.put.p99_ms),
            ratio(b.get.p99_ms, a.get.p99_ms),
            ratio(b.restart_s, a.restart_s),
            ratio(b.catchup_s, a.catchup_s),
        )
    })
}

/// `RESULT` lines: per size secretd over etcd 3.5.1 (lower is better for
/// every ratio here), each system's growth from the smallest size to the
/// largest, the secret rows, watchers and the agent.
pub fn result_lines(d: &ScaleData) -> Vec<String> {
    let mut out = size_lines(d);
    for c in &d.curves {
        if let Some(l) = growth_line(c) {
            out.push(l);
        }
    }
    if let Some((e, s)) = pair(d) {
        if let (Some((we, re)), Some((ws, rs))) = (&e.watchers, &s.watchers) {
            out.push(format!(
                "RESULT scale-watchers10k anchor=etcd-3.5.1 ratio={:.2} p99_ratio={:.2} cpu_ratio={:.2} rss_ratio={:.2}",
                ratio(ws.ops_per_sec, we.ops_per_sec),
                ratio(ws.p99_ms, we.p99_ms),
                ratio(ws.server_cpu_us_per_op, we.server_cpu_us_per_op),
                ratio(*rs, *re)
            ));
        }
    }
    for p in &d.secrets {
        out.push(format!(
            "RESULT scale-secrets-{} create_p99_ms={:.2} ls_ms={:.1} ls_cli_ms={:.1} inspect_p99_ms={:.2}",
            label(p.secrets),
            p.create_p99_ms,
            p.list_rpc_ms,
            p.list_cli_ms,
            p.inspect_p99_ms
        ));
    }
    if let Some(r) = &d.rotation {
        out.push(format!(
            "RESULT scale-agent tasks={} fuse_p50_ms={:.1} fuse_p99_ms={:.1} tmpfs_p50_ms={:.1} tmpfs_p99_ms={:.1}",
            tasks::TASKS,
            r.fuse[0],
            r.fuse[1],
            r.tmpfs[0],
            r.tmpfs[1]
        ));
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT MET"
    }
}

/// The targets, each with the numbers it was judged on.
pub fn target_lines(d: &ScaleData) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((e, s)) = pair(d) {
        if let (Some(a), Some(b)) = (s.points.first(), s.points.last()) {
            if a.keys != b.keys {
                for (what, x, y) in [
                    (
                        "put",
                        a.put.server_cpu_us_per_op,
                        b.put.server_cpu_us_per_op,
                    ),
                    (
                        "get",
                        a.get.server_cpu_us_per_op,
                        b.get.server_cpu_us_per_op,
                    ),
                ] {
                    let g = ratio(y, x);
                    out.push(format!(
                        "TARGET cpu-growth {what}: secretd {:.1} us/op at {} -> {:.1} at {} = {g:.2}x (<= {CPU_GROWTH_MAX}) {}",
                        x,
                        label(a.keys),
                        y,
                        label(b.keys),
                        verdict(g <= CPU_GROWTH_MAX)
                    ));
                }
            }
        }
        for (pe, ps) in e.points.iter().zip(&s.points) {
            let n = label(ps.keys);
            out.push(format!(
                "TARGET restart@{n}: secretd {:.2}s vs etcd {:.2}s {}",
                ps.restart_s,
                pe.restart_s,
                verdict(ps.restart_s < pe.restart_s)
            ));
            out.push(format!(
                "TARGET catch-up@{n}: secretd {:.2}s vs etcd {:.2}s {}",
                ps.catchup_s,
                pe.catchup_s,
                verdict(ps.catchup_s < pe.catchup_s)
            ));
            let r = ratio(rss_per_key(s, ps), rss_per_key(e, pe));
            out.push(format!(
                "TARGET rss-per-key@{n}: secretd {:.0} B vs etcd {:.0} B = {r:.2}x (<= {RSS_PER_KEY_RATIO_MAX}) {}",
                rss_per_key(s, ps),
                rss_per_key(e, pe),
                verdict(r <= RSS_PER_KEY_RATIO_MAX)
            ));
        }
    }
    if let Some(r) = &d.rotation {
        out.push(format!(
            "TARGET agent-rotation: {} tasks, p99 {:.1} ms (fuse) / {:.1} ms (tmpfs) (<= {ROTATION_P99_MS_MAX} ms) {}",
            tasks::TASKS,
            r.fuse[1],
            r.tmpfs[1],
            verdict(r.fuse[1].max(r.tmpfs[1]) <= ROTATION_P99_MS_MAX)
        ));
    }
    out
}
