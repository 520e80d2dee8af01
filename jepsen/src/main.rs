//! `jepsen`: the fault suite's command line. `jepsen check` runs the
//! history checkers on files, `jepsen test` one run against real secretd
//! processes, `jepsen campaign` many; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use secretd_jepsen::check::{self, model, parse, Verdict};
use secretd_jepsen::harness;

#[derive(Parser)]
#[command(
    name = "jepsen",
    about = "secretd's fault-injection suite and history checkers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelName {
    /// One integer register per file (Jepsen's etcd register log).
    Register,
    /// String keys with get/put/append (EDN maps), checked key by key.
    Kv,
}

#[derive(Subcommand)]
enum Command {
    /// Checks histories for linearizability. Exit status: 0 all
    /// linearizable, 1 any not linearizable, 2 unknown or unreadable.
    Check {
        #[arg(long, value_enum)]
        model: ModelName,
        /// Search time allowed per file, in seconds; past it the verdict is
        /// `unknown`.
        #[arg(long, default_value_t = 10.0)]
        time_limit: f64,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// One run: N secretd members in network namespaces, clients, faults,
    /// checks. Exit status: 0 valid, 1 anomaly, 2 unknown or error.
    Test(TestArgs),
    /// Runs many seeds (seed, seed+1, ...) spread over the nemeses (each
    /// alone, then all together) and the workloads, and prints a summary
    /// table. Exit status as for `test`, for the worst run.
    Campaign {
        #[command(flatten)]
        args: TestArgs,
        #[arg(long, default_value_t = 50)]
        runs: u64,
    },
    /// Writes a synthetic history to stdout (linearizable by construction,
    /// or with one planted stale read), for measuring `check`.
    Synth {
        #[arg(long, value_enum)]
        model: ModelName,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        clients: u64,
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        ops: u64,
        /// Keys of a key-value history.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        keys: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Plant one stale read (the history is then not linearizable).
        #[arg(long)]
        bad: bool,
        /// Operations that time out (unknown outcome), in percent.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
        timeouts: u32,
    },
}

#[derive(clap::Args, Clone)]
struct TestArgs {
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of workload and faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Comma-separated, in any order: partition, kill, pause, clock,
    /// member, disk, keys, corrupt, or all (campaign: the set to spread its runs
    /// over: each nemesis alone, then all of them together).
    #[arg(long, default_value = "partition,kill")]
    nemesis: String,
    /// register, append, watch or secrets (campaign: all of them unless given).
    #[arg(long)]
    workload: Option<String>,
    /// The seed (default: from the clock); printed, and reproduces the
    /// fault schedule. A campaign uses seed, seed+1, ...
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Where runs are written: a folder per run,
    /// <workload>-<nemeses joined by + in the order above>-<seed>, with .2,
    /// .3, ... added when that folder holds an earlier run.
    #[arg(long, default_value = "jepsen-runs")]
    out: PathBuf,
    /// The secretd binary (default: `secretd` next to this binary).
    #[arg(long)]
    secretd: Option<PathBuf>,
    /// Linearizability search time per run, in seconds.
    #[arg(long, default_value_t = 60)]
    check_time_limit: u64,
    /// `test` only: drive a running cluster at these client URLs
    /// (comma-separated, e.g. http://127.0.0.1:12379,...) instead of
    /// starting one; no namespaces and no nemesis (`--nemesis none`): the
    /// faults are whatever its operator does meanwhile, such as an upgrade
    /// member by member (scripts/upgrade-test.sh). Needs no root.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// With --endpoints: end the workload when this file appears (or at
    /// the time limit, whichever comes first).
    #[arg(long)]
    until_file: Option<PathBuf>,
}

fn workload(name: &str) -> Result<harness::Workload, String> {
    harness::Workload::ALL
        .into_iter()
        .find(|w| w.name() == name)
        .ok_or_else(|| {
            format!("unknown workload {name:?}: choose register, append, watch or secrets")
        })
}

fn config(
    a: &TestArgs,
    seed: u64,
    w: harness::Workload,
    nemesis: Vec<harness::nemesis::Kind>,
) -> harness::Config {
    let secretd = a.secretd.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("secretd")))
            .unwrap_or_else(|| PathBuf::from("secretd"))
    });
    harness::Config {
        nodes: if a.endpoints.is_empty() {
            a.nodes
        } else {
            a.endpoints.len()
        },
        time_limit_ms: a.time_limit * 1000,
        out: run_dir(&a.out, w, &nemesis, seed),
        nemesis,
        workload: w,
        seed,
        concurrency: a.concurrency.max(1),
        secretd,
        check_budget_ms: a.check_time_limit * 1000,
        recovery_bound_ms: 30_000,
        quiet: false,
        endpoints: a.endpoints.clone(),
        until_file: a.until_file.clone(),
    }
}

/// `<workload>-<nemeses>-<seed>` under `out`: the nemeses in their fixed
/// order (as `parse_list` gives them), so one set has one name. An earlier
/// run of the same seed is kept (its data may be what a bug report needs)
/// and this one gets the first free `.2`, `.3`, ...
fn run_dir(
    out: &std::path::Path,
    w: harness::Workload,
    nemesis: &[harness::nemesis::Kind],
    seed: u64,
) -> PathBuf {
    let names: Vec<&str> = nemesis.iter().map(|k| k.name()).collect();
    let base = format!("{}-{}-{seed}", w.name(), names.join("+"));
    let mut dir = out.join(&base);
    let mut copy = 1;
    while dir.exists() {
        copy += 1;
        dir = out.join(format!("{base}.{copy}"));
    }
    dir
}

/// Run `i` of a campaign over `combos` and `workloads`: the nemesis
/// combination turns fastest (each nemesis alone comes first, so a
/// campaign of as many runs as nemeses meets every one), and each block of
/// combinations shifts the workloads by one, so every (combination,
/// workload) pair comes once in `combos * workloads` runs.
fn campaign_slot(i: usize, combos: usize, workloads: usize) -> (usize, usize) {
    let k = i % (combos * workloads);
    let combo = k % combos;
    let workload = (combo + k / combos) % workloads;
    (combo, workload)
}

fn status_of(r: &harness::RunResult) -> &'static str {
    match r.valid() {
        Some(true) => "valid",
        Some(false) => "ANOMALY",
        None => "unknown",
    }
}

fn print_result(r: &harness::RunResult) {
    println!(
        "seed {} {} {}: {}",
        r.seed,
        r.workload.name(),
        r.nemesis.join(","),
        status_of(r)
    );
    for c in &r.checks {
        let v = match c.valid {
            Some(true) => "valid",
            Some(false) => "INVALID",
            None => "unknown",
        };
        println!("  {}: {v}", c.name);
        if c.valid != Some(true) {
            for line in c.detail.lines().take(20) {
                println!("    {line}");
            }
        }
    }
    for c in &r.crashes {
        println!("  crash: {c}");
    }
    for u in &r.unhealed {
        println!("  NOT HEALED (the verdict is unknown at best): {u}");
    }
    match r.recovery_ms {
        Some(ms) => println!("  recovered {ms} ms after the final heal"),
        None => println!("  NO PROGRESS after the final heal"),
    }
    println!(
        "  ok {} fail {} unknown {} · {}",
        r.ok,
        r.fail,
        r.info,
        r.dir.join("report.html").display()
    );
}

fn exit_for(v: Option<bool>) -> u8 {
    match v {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    }
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(1)
}

fn test(a: &TestArgs) -> Result<u8, String> {
    let nemesis = if !a.endpoints.is_empty() {
        if a.nemesis != "none" {
            return Err(
                "--endpoints drives a cluster the harness does not own: give --nemesis none".into(),
            );
        }
        Vec::new()
    } else {
        harness::nemesis::Kind::parse_list(&a.nemesis).map_err(|e| e.to_string())?
    };
    let w = workload(a.workload.as_deref().unwrap_or("register"))?;
    let seed = a.seed.unwrap_or_else(seed_from_clock);
    println!("seed {seed}");
    let r = harness::run_on_thread(config(a, seed, w, nemesis)).map_err(|e| format!("{e:#}"))?;
    print_result(&r);
    Ok(exit_for(r.valid()))
}

fn campaign(a: &TestArgs, runs: u64) -> Result<u8, String> {
    if !a.endpoints.is_empty() {
        return Err(
            "--endpoints is for `test` (one run against a cluster the harness does not own)".into(),
        );
    }
    let kinds = harness::nemesis::Kind::parse_list(&a.nemesis).map_err(|e| e.to_string())?;
    let workloads: Vec<harness::Workload> = match &a.workload {
        Some(w) => vec![workload(w)?],
        None => harness::Workload::ALL.to_vec(),
    };
    let combos = nemesis_combos(&kinds);
    let base = a.seed.unwrap_or_else(seed_from_clock);
    let mut rows = Vec::new();
    let mut worst = 0u8;
    for i in 0..runs {
        if harness::interrupted() {
            break;
        }
        let (c, wi) = campaign_slot(i as usize, combos.len(), workloads.len());
        let (w, combo) = (workloads[wi], combos[c].clone());
        let seed = base + i;
        let names: Vec<&str> = combo.iter().map(|k| k.name()).collect();
        println!(
            "== run {}/{runs}: seed {seed} {} {}",
            i + 1,
            w.name(),
            names.join(",")
        );
        let (code, status, detail) = campaign_run(a, seed, w, combo);
        worst = worst.max(code);
        rows.push((seed, w.name(), names.join(","), status, detail));
    }
    print_campaign(&rows);
    Ok(worst)
}

/// Each single nemesis, then all of them together.
fn nemesis_combos(kinds: &[harness::nemesis::Kind]) -> Vec<Vec<harness::nemesis::Kind>> {
    let mut combos: Vec<Vec<harness::nemesis::Kind>> = kinds.iter().map(|k| vec![*k]).collect();
    if kinds.len() > 1 {
        combos.push(kinds.to_vec());
    }
    combos
}

/// One run of a campaign: its exit code, and its row's result and detail.
fn campaign_run(
    a: &TestArgs,
    seed: u64,
    w: harness::Workload,
    combo: Vec<harness::nemesis::Kind>,
) -> (u8, String, String) {
    match harness::run_on_thread(config(a, seed, w, combo)) {
        Ok(r) => {
            print_result(&r);
            let mut detail = format!(
                "ok {} unknown {} recovery {}",
                r.ok,
                r.info,
                r.recovery_ms
                    .map(|m| format!("{m} ms"))
                    .unwrap_or_else(|| "none".into())
            );
            if !r.unhealed.is_empty() {
                detail += &format!(" · not healed: {}", r.unhealed.join("; "));
            }
            (exit_for(r.valid()), status_of(&r).to_string(), detail)
        }
        Err(e) => (2, "error".to_string(), format!("{e:#}")),
    }
}

/// A campaign's rows: (seed, workload, nemeses, result, detail).
type CampaignRow = (u64, &'static str, String, String, String);

/// The campaign's summary table and its totals.
fn print_campaign(rows: &[CampaignRow]) {
    println!();
    println!(
        "{:<10} {:<9} {:<40} {:<8} DETAIL",
        "SEED", "WORKLOAD", "NEMESIS", "RESULT"
    );
    for (seed, w, n, s, d) in rows {
        println!("{seed:<10} {w:<9} {n:<40} {s:<8} {d}");
    }
    let count = |s: &str| rows.iter().filter(|r| r.3 == s).count();
    println!(
        "{} runs: {} valid, {} anomalies, {} unknown, {} errors",
        rows.len(),
        count("valid"),
        count("ANOMALY"),
        count("unknown"),
        count("error")
    );
}

fn check_file(model: ModelName, path: &PathBuf, budget: Duration) -> Result<Verdict, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    match model {
        ModelName::Register => {
            let ops = parse::register_log(&text).map_err(|e| e.to_string())?;
            Ok(check::check_partitioned::<model::Register>(
                vec![ops],
                budget,
            ))
        }
        ModelName::Kv => {
            let by_key = parse::kv_edn(&text).map_err(|e| e.to_string())?;
            Ok(check::check_partitioned::<model::KvString>(
                by_key.into_values().collect(),
                budget,
            ))
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check {
            model,
            time_limit,
            files,
        } => check_files(model, time_limit, &files),
        Command::Test(a) => exit(test(&a)),
        Command::Synth {
            model,
            clients,
            ops,
            keys,
            seed,
            bad,
            timeouts,
        } => {
            let spec = check::synth::Spec {
                seed,
                clients: clients as usize,
                ops: ops as usize,
                keys: keys as usize,
                bad,
                timeout_percent: timeouts,
            };
            synth(model, spec)
        }
        Command::Campaign { args, runs } => exit(campaign(&args, runs)),
    }
}

/// A command's exit: its code, or 2 with the error on stderr.
fn exit(result: Result<u8, String>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("jepsen: {e}");
            ExitCode::from(2)
        }
    }
}

/// `jepsen synth`: the history to stdout.
fn synth(model: ModelName, spec: check::synth::Spec) -> ExitCode {
    let text = match model {
        ModelName::Register => check::synth::register(spec),
        ModelName::Kv => check::synth::kv(spec),
    };
    use std::io::Write;
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jepsen: cannot write the history: {e}");
            ExitCode::from(2)
        }
    }
}

/// `jepsen check`: each file's verdict; the exit status is the worst.
fn check_files(model: ModelName, time_limit: f64, files: &[PathBuf]) -> ExitCode {
    if !(time_limit > 0.0 && time_limit.is_finite()) {
        eprintln!("jepsen: --time-limit must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let budget = Duration::from_secs_f64(time_limit);
    let (mut bad, mut unsure) = (false, false);
    for f in files {
        match check_file(model, f, budget) {
            Ok(v) => {
                println!("{} {}", f.display(), v.word());
                match v {
                    Verdict::NotLinearizable { explanation } => {
                        bad = true;
                        for line in explanation.lines() {
                            println!("    {line}");
                        }
                    }
                    Verdict::Unknown => unsure = true,
                    Verdict::Linearizable => {}
                }
            }
            Err(e) => {
                println!("{} unknown", f.display());
                eprintln!("jepsen: {}: {e}", f.display());
                unsure = true;
            }
        }
    }
    ExitCode::from(if bad {
        1
    } else if unsure {
        2
    } else {
        0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use harness::nemesis::Kind;
    use std::collections::BTreeSet;

    fn help(sub: &str) -> String {
        let mut cmd = Cli::command();
        cmd.build();
        cmd.find_subcommand_mut(sub)
            .unwrap_or_else(|| panic!("no subcommand {sub}"))
            .render_long_help()
            .to_string()
    }

    #[test]
    fn help_names_every_nemesis() {
        for sub in ["test", "campaign"] {
            let text = help(sub);
            for k in Kind::ALL {
                assert!(
                    text.contains(k.name()),
                    "{sub} --help omits {}:\n{text}",
                    k.name()
                );
            }
        }
    }

    #[test]
    fn a_short_campaign_meets_every_nemesis_and_then_every_pairing() {
        let kinds = Kind::parse_list("all").unwrap();
        // Each nemesis alone, then all together.
        let combos = kinds.len() + 1;
        let workloads = harness::Workload::ALL.len();
        let first: BTreeSet<usize> = (0..kinds.len())
            .map(|i| campaign_slot(i, combos, workloads).0)
            .collect();
        assert_eq!(
            first,
            (0..kinds.len()).collect(),
            "the first runs are each nemesis alone"
        );
        let pairs: BTreeSet<(usize, usize)> = (0..combos * workloads)
            .map(|i| campaign_slot(i, combos, workloads))
            .collect();
        assert_eq!(pairs.len(), combos * workloads);
        // A single nemesis still meets every workload.
        let pairs: BTreeSet<(usize, usize)> = (0..workloads)
            .map(|i| campaign_slot(i, 1, workloads))
            .collect();
        assert_eq!(pairs.len(), workloads);
    }

    #[test]
    fn a_run_folder_names_the_nemesis_set_in_a_fixed_order_and_keeps_earlier_runs() {
        let dir = std::env::temp_dir().join(format!("jepsen-run-dir-{}", std::process::id()));
        let kinds = Kind::parse_list("keys,kill,partition").unwrap();
        assert_eq!(
            kinds,
            Kind::parse_list("partition, kill,keys,kill").unwrap()
        );
        let first = run_dir(&dir, harness::Workload::Secrets, &kinds, 88101);
        assert_eq!(first, dir.join("secrets-partition+kill+keys-88101"));
        std::fs::create_dir_all(&first).unwrap();
        let second = run_dir(&dir, harness::Workload::Secrets, &kinds, 88101);
        assert_eq!(second, dir.join("secrets-partition+kill+keys-88101.2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
