//! `sim`: runs seeds of the deterministic simulation and reports what
//! they found. A thin shell over the library: see `lib.rs`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use secretd_sim::{Options, Report};
use secretd_store::planted::{self, Bug};

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Deterministic simulation of a secretd cluster: one seed decides everything. \
             Exit status: 0 no seed failed, 1 a seed failed, 2 bad usage. Seeds whose \
             history the checker could not decide in time are counted as unknown."
)]
struct Args {
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many seeds, from --seed on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    seeds: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=7))]
    nodes: u64,
    /// Virtual milliseconds of workload and faults per seed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1_000..=600_000))]
    duration_ms: u64,
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    clients: u64,
    /// Threads running seeds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    jobs: u64,
    /// Plant a bug (needs a build with --features planted-bugs):
    /// ack-before-fsync, follower-applies-uncommitted, follower-expires-leases.
    #[arg(long)]
    plant: Option<String>,
    /// Only these faults of the plan: `none`, or indexes, comma-separated
    /// (what a shrunk reproduction prints). Default: all of them.
    #[arg(long, value_parser = parse_faults)]
    faults: Option<FaultList>,
    /// Print every event of the (single) seed.
    #[arg(long)]
    trace: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    stop_at_failure: bool,
    /// Replays a failing seed may use to shrink its fault plan.
    #[arg(long, default_value_t = 40)]
    shrink_replays: usize,
}

#[derive(Clone, Debug)]
struct FaultList(Vec<usize>);

fn parse_faults(s: &str) -> Result<FaultList, String> {
    if s == "none" {
        return Ok(FaultList(Vec::new()));
    }
    s.split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("{p:?} is not a fault index (give `none` or e.g. 0,3,5)"))
        })
        .collect::<Result<_, _>>()
        .map(FaultList)
}

fn main() -> ExitCode {
    let args = Args::parse();
    secretd_sim::quiet_panics();
    let bug = match args.plant.as_deref().map(|n| Bug::parse(n).ok_or(n)) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(n)) => {
            eprintln!(
                "sim: unknown bug {n:?}: choose {}",
                Bug::ALL.map(Bug::name).join(", ")
            );
            return ExitCode::from(2);
        }
    };
    if let Err(e) = planted::plant(bug) {
        eprintln!("sim: {e}");
        return ExitCode::from(2);
    }
    if args.trace && args.seeds != 1 {
        eprintln!("sim: --trace prints one seed's events; give --seeds 1");
        return ExitCode::from(2);
    }
    let opts = Options {
        nodes: args.nodes as usize,
        duration_ms: args.duration_ms,
        clients: args.clients as usize,
        keep_faults: args.faults.clone().map(|f| f.0),
        record: args.trace,
        ..Options::default()
    };
    let t0 = Instant::now();
    let (ran, unknown, failures) = run_all(&args, &opts);
    let wall = t0.elapsed();
    let failed = failures.lock().expect("results lock");
    println!(
        "sim: {ran} seeds from {}: {} failed, {unknown} unknown; {:.1} s wall, {:.1} seeds/s",
        args.seed,
        failed.len(),
        wall.as_secs_f64(),
        ran as f64 / wall.as_secs_f64().max(1e-9)
    );
    for r in failed.iter() {
        report_failure(&args, &opts, r);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs the seeds on `--jobs` threads; returns how many ran, how many the
/// checker could not decide (they passed nothing: the summary says so),
/// and the failing ones.
fn run_all(args: &Args, opts: &Options) -> (u64, u64, Mutex<Vec<Report>>) {
    let next = AtomicU64::new(0);
    let ran = AtomicU64::new(0);
    let unknown = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..args.jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.seeds || stop.load(Ordering::Relaxed) {
                    return;
                }
                let r = secretd_sim::run(args.seed + i, opts);
                ran.fetch_add(1, Ordering::Relaxed);
                print_line(&r, args.seeds == 1);
                if undecided(&r) {
                    unknown.fetch_add(1, Ordering::Relaxed);
                }
                if r.failed() {
                    if args.stop_at_failure {
                        stop.store(true, Ordering::Relaxed);
                    }
                    failures.lock().expect("results lock").push(r);
                }
            });
        }
    });
    (ran.into_inner(), unknown.into_inner(), failures)
}

/// Passed every invariant, but the linearizability search ran out of time.
fn undecided(r: &Report) -> bool {
    !r.failed() && matches!(r.verdict, secretd_jepsen::check::Verdict::Unknown)
}

fn print_line(r: &Report, full: bool) {
    let status = if r.failed() {
        "FAILED"
    } else if undecided(r) {
        "unknown"
    } else {
        "ok"
    };
    // An undecided seed gets its line too: a batch otherwise hides it.
    if full || r.failed() || undecided(r) {
        println!(
            "seed {}: {status}: trace {:016x}, {} events, {} ops, {} faults, {:.2} s",
            r.seed,
            r.trace_hash,
            r.events,
            r.ops,
            r.faults.len(),
            r.wall.as_secs_f64()
        );
    }
    if full {
        if let Some(all) = &r.all_events {
            for l in all {
                println!("  {l}");
            }
        }
    }
}

fn report_failure(args: &Args, opts: &Options, r: &Report) {
    println!("\n== seed {} failed", r.seed);
    for v in &r.violations {
        println!("  violation: {v}");
    }
    if let secretd_jepsen::check::Verdict::NotLinearizable { explanation } = &r.verdict {
        println!("  not linearizable: {explanation}");
    }
    let t0 = Instant::now();
    let (keep, shrunk) = secretd_sim::shrink(r.seed, opts, args.shrink_replays);
    let keep_s = if keep.is_empty() {
        "none".to_string()
    } else {
        keep.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "  shrunk to {} of {} faults in {:.1} s; it still fails with:",
        keep.len(),
        secretd_sim::plan(r.seed, opts).len(),
        t0.elapsed().as_secs_f64()
    );
    for v in &shrunk.violations {
        println!("    {v}");
    }
    if let secretd_jepsen::check::Verdict::NotLinearizable { explanation } = &shrunk.verdict {
        println!("    not linearizable: {explanation}");
    }
    println!("  the events that led there:");
    let tail = shrunk.notes.len().saturating_sub(40);
    for n in &shrunk.notes[tail..] {
        println!("    {n}");
    }
    let plant = args
        .plant
        .as_ref()
        .map(|p| format!(" --features planted-bugs -- --plant {p}"))
        .unwrap_or_else(|| " --".into());
    println!(
        "  reproduce: cargo run --release -p secretd-sim{plant} --seed {} --nodes {} --duration-ms {} --clients {} --faults {} --trace",
        r.seed,
        args.nodes,
        args.duration_ms,
        args.clients,
        keep_s
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretd_jepsen::check::Verdict;

    fn report(violations: Vec<String>, verdict: Verdict) -> Report {
        Report {
            seed: 1,
            trace_hash: 0,
            events: 0,
            ops: 0,
            faults: Vec::new(),
            violations,
            verdict,
            notes: Vec::new(),
            all_events: None,
            wall: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_seed_the_checker_could_not_decide_is_counted_as_unknown() {
        assert!(undecided(&report(Vec::new(), Verdict::Unknown)));
        assert!(!undecided(&report(Vec::new(), Verdict::Linearizable)));
        // A violation is a failure (its verdict is not searched).
        assert!(!undecided(&report(vec!["x".into()], Verdict::Unknown)));
    }
}
