//! `secretd docker-plugin`: Docker Swarm's secret provider plugin over
//! secretd. A Swarm secret created with `docker secret create --driver
//! secretd` holds no value; when a manager dispatches a task that uses it,
//! dockerd asks this plugin, which decides by its policy and fetches the
//! value from the cluster with a driver's certificate.
//!
//! - `protocol`: Docker's request and answer, and the decision;
//! - `policy`: which Swarm service may receive which secretd secret;
//! - `cluster`: the members' Driver API, asked in turn;
//! - `serve`: the socket dockerd finds, and the two routes.
//!
//! The plugin never writes to the cluster and never keeps a value: each
//! answer is fetched, sent and dropped.

pub mod cluster;
pub mod policy;
pub mod protocol;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use policy::Policy;

#[derive(Args, Debug, Clone)]
pub struct PluginArgs {
    /// The driver's name: `docker secret create --driver NAME`.
    #[arg(long, default_value = "secretd")]
    pub name: String,
    /// Where dockerd finds the plugin [default: /run/docker/plugins/NAME.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The delivery policy (JSON): which Swarm services may receive which
    /// secretd secrets. SIGHUP reads it again.
    #[arg(long)]
    pub policy: PathBuf,
    /// Comma-separated member client endpoints (host:port).
    #[arg(long, env = "SECRETD_ENDPOINTS", default_value = "127.0.0.1:2379")]
    pub endpoints: String,
    /// The cluster's CA (turns on TLS).
    #[arg(long, env = "SECRETD_CACERT")]
    pub cacert: Option<PathBuf>,
    /// The driver's certificate (role spiffe://secretd/driver/NAME;
    /// `secretd certs init --driver NAME` makes one for development).
    #[arg(long, env = "SECRETD_CERT")]
    pub cert: Option<PathBuf>,
    /// Key for --cert.
    #[arg(long, env = "SECRETD_KEY")]
    pub key: Option<PathBuf>,
}

impl PluginArgs {
    fn socket_path(&self) -> Result<PathBuf> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            bail!(
                "--name {:?}: a plugin name is 1 to 64 of a-z, A-Z, 0-9, '.', '_' and '-'",
                self.name
            );
        }
        Ok(self
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/docker/plugins/{}.sock", self.name))))
    }
}

/// Runs until SIGTERM or SIGINT, then removes its socket.
pub async fn run(args: PluginArgs) -> Result<()> {
    let socket_path = args.socket_path()?;
    let policy = Policy::load(&args.policy)?;
    if policy.rules() == 0 {
        tracing::warn!(policy = %args.policy.display(), "the policy has no rules: every request will be refused");
    }
    let endpoints = secretd_client::endpoints(&args.endpoints)?;
    let tls = secretd_client::ClientTls::from_flags(
        args.cacert.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
    )?;
    if tls.is_none() {
        // Said at start, not as an h2 protocol error in every answer.
        for ep in endpoints.iter().filter(|ep| !ep.starts_with("https://")) {
            let probe = ep.clone();
            let tls_only = tokio::task::spawn_blocking(move || secretd_client::speaks_tls(&probe))
                .await
                .unwrap_or(false);
            if tls_only {
                bail!("{ep} serves TLS: give the plugin --cacert, and the driver's certificate with --cert and --key");
            }
        }
        tracing::warn!("no --cacert: talking to the cluster in plaintext, unauthenticated");
    }
    let cluster = cluster::Cluster::new(&endpoints, tls.as_ref())?;
    let plugin = serve::Plugin::new(policy, cluster);
    let listener = serve::bind(&socket_path)?;
    let socket_guard = SocketFile(socket_path.clone());
    tracing::info!(name = %args.name, socket = %socket_path.display(), rules = plugin.policy.read().rules(), "secret provider plugin serving");
    let router = plugin.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    wait_for_end(&plugin, &args.policy).await?;
    server.abort();
    drop(socket_guard);
    tracing::info!("secret provider plugin stopped");
    Ok(())
}

/// Removes the socket file when the plugin ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// SIGHUP reloads the policy (a policy that does not load leaves the old
/// one in force, loudly); SIGTERM or SIGINT ends.
async fn wait_for_end<S: protocol::Source + 'static>(
    plugin: &Arc<serve::Plugin<S>>,
    path: &std::path::Path,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => match Policy::load(path) {
                Ok(p) => {
                    tracing::info!(rules = p.rules(), "policy reloaded");
                    *plugin.policy.write() = Arc::new(p);
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "the policy did not reload; the old one stays in force"),
            },
        }
    }
}
