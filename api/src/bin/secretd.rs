//! `secretd`: a cluster member (`secretd_api::server`), or the node agent
//! (`secretd agent`, `secretd_fuse`). All logic lives in those crates.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "secretd",
    version,
    about = "A replicated, encrypted secrets and configuration store",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    server: secretd_api::server::ServerFlags,
    /// Log filter (tracing's EnvFilter syntax), e.g. info or secretd_store=debug.
    #[arg(long, default_value = "info", env = "SECRETD_LOG")]
    log_level: String,
}

#[derive(Subcommand)]
enum Command {
    /// Backups (made with `etcdctl snapshot save`).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// The node agent: serves the secrets and configs of a node's tasks at
    /// /run/secretd/<task>/ (FUSE, or tmpfs), live.
    Agent(secretd_fuse::AgentArgs),
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Creates a new member's data directory from a backup: run it once per
    /// member of the new cluster, with that member's flags.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        server: secretd_api::server::ServerFlags,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Snapshot(SnapshotCmd::Restore { file, server })) = cli.command {
        return match secretd_api::server::restore(server, &file) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("secretd: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = match EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("secretd: --log-level {:?}: {e}", cli.log_level);
            return std::process::ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secretd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Agent(args)) => rt.block_on(secretd_fuse::run(args)),
        _ => rt.block_on(secretd_api::server::run(cli.server)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
