//! `secretd`: a cluster member. All logic lives in `secretd_api::server`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "secretd",
    version,
    about = "A replicated, encrypted secrets and configuration store"
)]
struct Cli {
    #[command(flatten)]
    server: secretd_api::server::ServerFlags,
    /// Log filter (tracing's EnvFilter syntax), e.g. info or secretd_store=debug.
    #[arg(long, default_value = "info", env = "SECRETD_LOG")]
    log_level: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    match rt.block_on(secretd_api::server::run(cli.server)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
