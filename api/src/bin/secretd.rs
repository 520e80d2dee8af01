//! `secretd`: a cluster member (`secretd_api::server`), the node agent
//! (`secretd agent`, `secretd_fuse`), or Docker Swarm's secret provider
//! plugin (`secretd docker-plugin`, `secretd_swarm`). All logic lives in
//! those crates.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// jemalloc, exported as `malloc`/`free` so that RocksDB's C++ allocations use
/// it too: under put load a member spends ~12% of its CPU in allocation, and
/// glibc's malloc cost ~15% more CPU per put than jemalloc in an A/B of four
/// rounds (see the benchmark note).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Docker Swarm's secret provider plugin: serves `docker secret create
    /// --driver secretd` secrets to Swarm's tasks, by a policy.
    DockerPlugin(secretd_swarm::PluginArgs),
    /// A development PKI.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Fault injection for the fault suite's `corrupt` nemesis.
    #[command(subcommand, hide = true)]
    Debug(DebugCmd),
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Flips one bit of the newest record of KEY (of any key without it)
    /// in a STOPPED member's keyspace, RocksDB's checksums intact, as a
    /// lying disk would: only the corruption checks can find it.
    DamageRecord {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Creates a CA and certificates for members, node agents and an admin
    /// in DIR (roles as SAN URIs spiffe://secretd/member/NAME, node/NAME,
    /// admin). For one machine's development cluster, not production.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A member: NAME, or NAME=HOST,HOST for extra server names.
        #[arg(long = "member", default_value = "default")]
        members: Vec<String>,
        /// A node agent's node name.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// A secret driver's name (`secretd docker-plugin`'s certificate,
        /// role spiffe://secretd/driver/NAME).
        #[arg(long = "driver")]
        drivers: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Creates a new member's data directory from a backup: run it once per
    /// member of the new cluster, with that member's flags.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        server: Box<secretd_api::server::ServerFlags>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Commands on files, run before logging and without a runtime.
    if let Some(Command::Snapshot(SnapshotCmd::Restore { file, server })) = cli.command {
        return restore(*server, &file);
    }
    if let Some(Command::Debug(DebugCmd::DamageRecord { data_dir, key })) = &cli.command {
        return damage_record(data_dir, key.as_deref());
    }
    if let Some(Command::Certs(CertsCmd::Init {
        dir,
        members,
        nodes,
        drivers,
    })) = &cli.command
    {
        return certs_init(dir, members, nodes, drivers);
    }
    if let Err(code) = init_logging(&cli.log_level) {
        return code;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secretd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Agent(args)) => {
            // The agent's listeners and its stream need it; `agent exec`
            // (a wrapper, whose stderr is its command's) does not. A
            // member raises it in `server::run`, where it splits it
            // between its listeners and storage.
            if args.command.is_none() {
                secretd_api::conn::raise_fd_limit();
            }
            rt.block_on(secretd_fuse::run(args))
        }
        Some(Command::DockerPlugin(args)) => rt.block_on(secretd_swarm::run(args)),
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

/// `secretd snapshot restore`.
fn restore(server: secretd_api::server::ServerFlags, file: &Path) -> std::process::ExitCode {
    match secretd_api::server::restore(server, file) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `secretd debug damage-record`.
fn damage_record(data_dir: &Path, key: Option<&str>) -> std::process::ExitCode {
    let key = key.map(str::as_bytes);
    match secretd_store::damage::flip_value_bit(data_dir, key) {
        Ok((k, rev)) => {
            println!("damaged {} at revision {rev}", String::from_utf8_lossy(&k));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secretd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `secretd certs init`.
fn certs_init(
    dir: &Path,
    members: &[String],
    nodes: &[String],
    drivers: &[String],
) -> std::process::ExitCode {
    match secretd_api::tls::pki::init(dir, members, nodes, drivers) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secretd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `--log-level`; a level that does not parse is a
/// usage error (exit 2), said before anything starts.
fn init_logging(log_level: &str) -> Result<(), std::process::ExitCode> {
    let filter = match EnvFilter::try_new(log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("secretd: --log-level {log_level:?}: {e}");
            return Err(std::process::ExitCode::from(2));
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
