//! `jepsen`: the fault suite's command line. `jepsen check` runs the
//! history checkers on files; everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use secretd_jepsen::check::{self, model, parse, Verdict};

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
    let Command::Check {
        model,
        time_limit,
        files,
    } = Cli::parse().command;
    if !(time_limit > 0.0 && time_limit.is_finite()) {
        eprintln!("jepsen: --time-limit must be a positive number of seconds");
        return ExitCode::from(2);
    }
    let budget = Duration::from_secs_f64(time_limit);
    let (mut bad, mut unsure) = (false, false);
    for f in &files {
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
