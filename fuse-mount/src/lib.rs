//! The node agent (`secretd agent`): serves the secrets and configs of the
//! tasks assigned to its node at `/run/secretd/<task>/<target>`, through
//! FUSE (`fusefs`) or a tmpfs (`tmpfs`), kept live by `sync`. Plaintext
//! lives only in this process's memory (locked, zeroized on drop, out of
//! core dumps) or, with the tmpfs backend, in RAM-backed files.
//! `exec` runs a command with a task's files at `/run/secrets`, in a mount
//! namespace of its own.

pub mod at;
pub mod exec;
pub mod fusefs;
pub mod health;
pub mod image;
pub mod mountpoint;
pub mod render;
pub mod state;
pub mod sync;
pub mod tmpfs;

/// The generated `secretstore.v1` client (from `secretd-client`).
pub use secretd_client::pb::secretstore as pb;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::image::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Fuse,
    Tmpfs,
}

/// The agent's flags are global, so they go before or after `exec`, as
/// Docker's do.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The node whose tasks this agent serves.
    #[arg(long, global = true)]
    pub node: Option<String>,
    /// Where the tasks' directories appear.
    #[arg(long, global = true, default_value = "/run/secretd")]
    pub mount: PathBuf,
    /// Comma-separated member client endpoints (host:port).
    #[arg(
        long,
        global = true,
        env = "SECRETD_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: String,
    /// The cluster's CA (turns on TLS).
    #[arg(long, global = true, env = "SECRETD_CACERT")]
    pub cacert: Option<PathBuf>,
    /// This node's certificate (role spiffe://secretd/node/NAME).
    #[arg(long, global = true, env = "SECRETD_CERT")]
    pub cert: Option<PathBuf>,
    /// Key for --cert.
    #[arg(long, global = true, env = "SECRETD_KEY")]
    pub key: Option<PathBuf>,
    /// fuse (default) or tmpfs, for hosts without FUSE.
    #[arg(long, global = true, value_enum, default_value = "fuse")]
    pub backend: BackendKind,
    /// Comma-separated http://host:port URLs serving the agent's /health
    /// (503 while a task cannot be served) and /metrics.
    #[arg(long, global = true, default_value = "")]
    pub listen_metrics_urls: String,
    #[command(subcommand)]
    pub command: Option<AgentCmd>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AgentCmd {
    /// Run CMD with a task's secrets at /run/secrets (read-only) and its
    /// configs at their targets, in a new mount namespace.
    Exec(exec::ExecArgs),
}

pub use secretd_client::endpoints;

/// Keeps plaintext out of core dumps and swap, as far as the OS allows.
fn harden() {
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot disable core dumps");
    }
    use nix::sys::mman::{mlockall, MlockAllFlags};
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        tracing::warn!(error = %e, "cannot lock the agent's memory; plaintext may be swapped out");
    }
}

/// `secretd agent ...`: runs until SIGTERM or SIGINT, then unmounts.
pub async fn run(args: AgentArgs) -> Result<()> {
    if let Some(AgentCmd::Exec(e)) = &args.command {
        return exec::run(&args, e).await;
    }
    let Some(node) = args.node.clone() else {
        bail!("--node is required: the node whose tasks this agent serves");
    };
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "secretd agent must run as root (it mounts {})",
            args.mount.display()
        );
    }
    let eps = endpoints(&args.endpoints)?;
    let tls = secretd_client::ClientTls::from_flags(
        args.cacert.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
    )?;
    if tls.is_none() {
        tracing::warn!("no --cacert: talking to the cluster in plaintext, unauthenticated");
    }
    let health_listeners = bind_health(&args.listen_metrics_urls).await?;
    harden();
    let lock = mountpoint::prepare(&args.mount)?;
    let backend: Arc<dyn Backend> = match args.backend {
        BackendKind::Fuse => {
            if !std::path::Path::new("/dev/fuse").exists() {
                bail!("/dev/fuse does not exist: load the fuse module, or use --backend tmpfs");
            }
            Arc::new(fusefs::FuseBackend::mount(&args.mount)?)
        }
        BackendKind::Tmpfs => Arc::new(tmpfs::TmpfsBackend::mount(&args.mount)?),
    };
    tracing::info!(node = %node, mount = %args.mount.display(), backend = ?args.backend, "agent serving");
    let health = health::Health::default();
    health.spawn(health_listeners);
    let sync = tokio::spawn(sync::Sync::new(eps, tls, node, backend.clone(), health).run());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: unmounting"),
        _ = term.recv() => tracing::info!("SIGTERM: unmounting"),
    }
    sync.abort();
    let _ = sync.await;
    backend.shutdown();
    drop(lock);
    tracing::info!(mount = %args.mount.display(), "unmounted");
    Ok(())
}

/// Binds `--listen-metrics-urls` (plain http, host:port) before anything
/// is mounted, so a bad URL or a busy port fails first.
async fn bind_health(urls: &str) -> Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let Some(hostport) = u.strip_prefix("http://") else {
            bail!("--listen-metrics-urls: {u}: must be an http://host:port URL");
        };
        let hostport = hostport.trim_end_matches('/');
        let l = tokio::net::TcpListener::bind(hostport).await.map_err(|e| {
            anyhow::anyhow!("--listen-metrics-urls: cannot listen on {hostport}: {e}")
        })?;
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: super::AgentArgs,
    }

    /// `secretd agent exec --task t --mount M -- cmd` works as well as
    /// `secretd agent --mount M exec --task t -- cmd`.
    #[test]
    fn agent_flags_go_before_or_after_exec() {
        for argv in [
            &[
                "agent",
                "--mount",
                "/m",
                "--endpoints",
                "e:1",
                "exec",
                "--task",
                "t",
                "--",
                "cmd",
            ][..],
            &[
                "agent",
                "exec",
                "--task",
                "t",
                "--mount",
                "/m",
                "--endpoints",
                "e:1",
                "--",
                "cmd",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.agent.mount, std::path::PathBuf::from("/m"));
            assert_eq!(cli.agent.endpoints, "e:1");
            assert!(
                matches!(cli.agent.command, Some(super::AgentCmd::Exec(ref e)) if e.task == "t")
            );
        }
    }
}
