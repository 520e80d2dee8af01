//! `secretd`'s server: startup in order (flags checked, the process
//! hardened, ports bound, the member started, listeners served: `start`),
//! then the wait for a signal or a fatal error (`run`, the binary's), or a
//! graceful stop (`Running::shutdown`, an embedding program's: `embed`).
//! `flags.rs` has the flags, `member.rs` the member's start, `listen.rs`
//! the listeners.

mod flags;
mod listen;
mod member;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use flags::{ClusterState, ServerFlags};
pub use listen::GRPC_OVERHEAD_BYTES;
use listen::{bind_all, listener_tls, Door, Listeners};

use crate::tls;
use crate::urls;

/// `secretd snapshot restore`: a new member's data directory from a backup.
pub fn restore(flags: ServerFlags, backup: &std::path::Path) -> Result<()> {
    let (cfg, _, _) = flags.node_config()?;
    crate::datadir::private_umask();
    let what = secretd_store::node::restore(&cfg, backup)
        .with_context(|| format!("restore {}", backup.display()))?;
    crate::datadir::secure(&cfg.data_dir)?;
    println!(
        "restored {} into {} as member {:?}: {what}",
        backup.display(),
        cfg.data_dir.display(),
        cfg.name
    );
    Ok(())
}

/// Everything the flags decide, checked before anything is bound or
/// written, so a bad flag is reported as itself, never as a busy port.
struct Plan {
    cfg: secretd_store::node::NodeConfig,
    client_urls: Vec<String>,
    peer_urls: Vec<String>,
    metrics_urls: Vec<String>,
    peer_tls: Option<Arc<rustls::ServerConfig>>,
    client_tls: Option<Arc<rustls::ServerConfig>>,
    retention: Option<crate::compactor::Retention>,
}

impl Plan {
    fn check(flags: &ServerFlags, listeners_optional: bool) -> Result<Plan> {
        let (cfg, client_urls, peer_urls) = flags.node_config_with(listeners_optional)?;
        let metrics_urls = if flags.listen_metrics_urls.is_empty() {
            Vec::new()
        } else {
            let list = urls::parse_list("--listen-metrics-urls", &flags.listen_metrics_urls)?;
            if let Some(u) = list.iter().find(|u| !u.starts_with("http://")) {
                bail!("--listen-metrics-urls: {u}: metrics are served over http:// only");
            }
            list
        };
        let peer_tls = listener_tls(
            "peer",
            "peer-",
            peer_urls.iter().any(|u| u.starts_with("https://")),
            (
                &flags.peer_cert_file,
                &flags.peer_key_file,
                &flags.peer_trusted_ca_file,
                flags.peer_client_cert_auth,
            ),
        )?;
        let client_tls = listener_tls(
            "client",
            "",
            client_urls.iter().any(|u| u.starts_with("https://")),
            (
                &flags.cert_file,
                &flags.key_file,
                &flags.trusted_ca_file,
                flags.client_cert_auth,
            ),
        )?;
        let retention = match flags.auto_compaction_retention.as_str() {
            "0" => None,
            r => Some(
                crate::compactor::parse_retention(flags.auto_compaction_mode, r)
                    .map_err(anyhow::Error::msg)?,
            ),
        };
        Ok(Plan {
            cfg,
            client_urls,
            peer_urls,
            metrics_urls,
            peer_tls,
            client_tls,
            retention,
        })
    }
}

/// No core dumps, a private umask and data directory, the open-file limit
/// raised, the audit log open, and this member's TLS identity towards its
/// peers. `process`: the process-wide parts (core dumps, umask, the
/// open-file limit) too; without them the current limit is split.
fn harden(
    flags: &ServerFlags,
    cfg: &secretd_store::node::NodeConfig,
    process: bool,
) -> Result<usize> {
    if process {
        // No core dumps: the process holds the KEK and, briefly, plaintexts.
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot disable core dumps");
        }
        // Everything this member writes is for its own eyes: the keyspace
        // holds configs and KV values in plaintext.
        crate::datadir::private_umask();
    }
    crate::datadir::secure(&cfg.data_dir)?;
    let fds = match process {
        true => crate::conn::raise_fd_limit(),
        false => crate::conn::fd_limit(),
    };
    if let Some(p) = &flags.audit_log {
        crate::audit::open(p, flags.audit_log_max_bytes)?;
    }
    // How this member connects to others over https peer URLs.
    if let Some(ca) = &flags.peer_trusted_ca_file {
        tls::set_peer_client(Some(tls::ClientTls::load(
            ca,
            flags.peer_cert_file.as_deref(),
            flags.peer_key_file.as_deref(),
        )?));
        tls::set_peer_raw_client(
            ca,
            flags.peer_cert_file.as_deref(),
            flags.peer_key_file.as_deref(),
        )?;
    }
    Ok(fds)
}

/// The client, peer and metrics listeners' budgets (`conn`), which split
/// the open-file limit `fds` between them and storage.
struct Admissions {
    client: Arc<crate::conn::Admission>,
    peer: Arc<crate::conn::Admission>,
    metrics: Arc<crate::conn::Admission>,
}

fn admissions(flags: &ServerFlags, fds: usize) -> Admissions {
    use crate::conn::{Admission, Limits};
    let idle_ms = flags.idle_connection_timeout.as_millis() as u64;
    let client = Limits::clients(
        flags.max_client_connections,
        flags.max_connections_per_identity,
        idle_ms,
        fds,
    );
    let (peer, metrics) = (Limits::peers(idle_ms), Limits::metrics(idle_ms));
    tracing::info!(
        open_files = fds,
        reserved = crate::conn::FDS_RESERVED,
        client = client.total_max,
        client_per_identity = client.per_identity_max,
        client_handshakes = client.handshakes_max,
        client_handshakes_per_source = client.handshakes_per_source_max,
        peer = peer.total_max,
        metrics = metrics.total_max,
        idle_ms,
        metrics_idle_ms = metrics.idle_ms,
        "connection budgets"
    );
    Admissions {
        client: Admission::new("client", client),
        peer: Admission::new("peer", peer),
        metrics: Admission::new("metrics", metrics),
    }
}

/// How a member is started: by the `secretd` binary, or inside another
/// program (`embed`). Everything else comes from the flags.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// The client and peer listener lists may be empty: an embedded member
    /// may serve no socket at all (its program calls it in process).
    pub listeners_optional: bool,
    /// Process-wide hardening: no core dumps and umask 077. The binary
    /// always; an embedding program may decline (it owns its process).
    pub harden_process: bool,
}

impl StartOptions {
    /// The `secretd` binary's.
    pub const BINARY: StartOptions = StartOptions {
        listeners_optional: false,
        harden_process: true,
    };
}

/// A started member: what it serves from, where it listens, and the tasks
/// that serve it, stopped together by [`Running::shutdown`].
pub struct Running {
    pub node: Arc<secretd_store::node::Node>,
    pub keys: Arc<secretd_secrets::keys::Keys>,
    pub objects: crate::objects::service::ObjectService,
    pub auth: Arc<crate::etcd::auth::AuthService>,
    /// The client listeners' bound addresses (a port 0 resolved).
    pub client_addrs: Vec<std::net::SocketAddr>,
    /// The peer listeners' bound addresses.
    pub peer_addrs: Vec<std::net::SocketAddr>,
    tasks: Listeners,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// `true` asks every listener to stop accepting and close gracefully.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Runs a member until SIGINT/SIGTERM or a fatal storage error.
pub async fn run(flags: ServerFlags) -> Result<()> {
    let mut running = start(&flags, StartOptions::BINARY).await?;
    let result = wait_for_stop(&running.node, &mut running.tasks).await;
    running.node.stop();
    result
}

/// Starts a member as the flags say: checked, hardened, bound, started,
/// served. The binary's `run` and `embed::Member::start` both come here.
pub async fn start(flags: &ServerFlags, opts: StartOptions) -> Result<Running> {
    let plan = Plan::check(flags, opts.listeners_optional)?;
    let mut cfg = plan.cfg.clone();
    // Before anything creates the data directory.
    if cfg.force_new_cluster && !cfg.data_dir.join("db").exists() {
        return Err(secretd_store::node::nothing_to_force(&cfg).into());
    }
    let fds = harden(flags, &cfg, opts.harden_process)?;
    let adm = admissions(flags, fds);
    settle_identity(flags, &mut cfg).await?;
    // Bind before starting raft, so a busy port fails fast and clearly.
    let bound = Bound {
        peer: bind_all("--listen-peer-urls", &plan.peer_urls).await?,
        client: bind_all("--listen-client-urls", &plan.client_urls).await?,
        metrics: bind_all("--listen-metrics-urls", &plan.metrics_urls).await?,
    };
    let m = member::start(&cfg, flags.secret_history as usize, flags.autolock)?;
    tracing::info!(
        name = %cfg.name,
        member = format_args!("{:x}", m.node.id()),
        cluster = format_args!("{:x}", m.node.cluster_id()),
        data_dir = %cfg.data_dir.display(),
        client_urls = %plan.client_urls.join(","),
        peer_urls = %plan.peer_urls.join(","),
        "secretd member started"
    );
    serve(flags, &plan, &adm, bound, m).await
}

/// The listeners a start bound, before anything serves them.
struct Bound {
    peer: Vec<(tokio::net::TcpListener, bool)>,
    client: Vec<(tokio::net::TcpListener, bool)>,
    metrics: Vec<(tokio::net::TcpListener, bool)>,
}

fn addrs(list: &[(tokio::net::TcpListener, bool)]) -> Vec<std::net::SocketAddr> {
    list.iter()
        .filter_map(|(l, _)| l.local_addr().ok())
        .collect()
}

/// Serves a started member: background work, metrics, peers, the initial
/// corruption check, then clients.
async fn serve(
    flags: &ServerFlags,
    plan: &Plan,
    adm: &Admissions,
    bound: Bound,
    m: member::Member,
) -> Result<Running> {
    let node = m.node.clone();
    let mut background = Vec::new();
    if let Some(r) = plan.retention {
        background.push(crate::compactor::start(node.clone(), r));
    }
    let (peer_door, client_door) = doors(flags, plan, adm);
    let metrics = bound.metrics.into_iter().map(|(l, _)| l).collect();
    background.extend(crate::metrics::spawn(metrics, node.clone(), &adm.metrics));
    let (closing, closed) = tokio::sync::watch::channel(false);
    let (client_addrs, peer_addrs) = (addrs(&bound.client), addrs(&bound.peer));
    let mut tasks = Listeners::new();
    listen::serve_peers(&mut tasks, bound.peer, &node, &m.keys, &peer_door, &closed);
    // Peers can ask us now; we ask them before serving any client.
    if flags.initial_corrupt_check {
        if let Err(e) = crate::peer::corruption::initial_check(&node).await {
            // An embedding program goes on: nothing may keep the node.
            tasks.abort_all();
            background.iter().for_each(|b| b.abort());
            node.stop();
            return Err(e);
        }
    }
    background.extend(crate::peer::corruption::start_periodic(
        node.clone(),
        flags.corrupt_check_time,
    ));
    let auth = Arc::new(crate::etcd::auth::AuthService::new(
        node.clone(),
        flags.bcrypt_cost,
    ));
    let max_recv = node.config().max_request_bytes + GRPC_OVERHEAD_BYTES;
    let client = listen::Clients {
        node: &node,
        objects: &m.objects,
        auth: &auth,
        max_recv,
    };
    listen::serve_clients(&mut tasks, bound.client, &client, &client_door, &closed);
    Ok(Running {
        node,
        keys: m.keys,
        objects: m.objects,
        auth,
        client_addrs,
        peer_addrs,
        tasks,
        background,
        closing,
    })
}

impl Running {
    /// Whether the member stopped by itself (a storage error), or a
    /// listener ended: what the binary waits for besides signals.
    pub fn fatal(&self) -> Option<String> {
        self.node.status().fatal
    }

    /// Stops the member gracefully: listeners stop accepting and close
    /// their connections (those still busy after `grace` are cut), the
    /// background tasks end, raft stops after its current round, and the
    /// RocksDB write-ahead log is synced. The storage closes once the
    /// last holder of the node lets go (the caller's own `Arc`s too).
    pub async fn shutdown(mut self, grace: Duration) -> Result<()> {
        let _ = self.closing.send(true);
        let drained = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(?grace, "listeners still busy after the grace period: cut");
            self.tasks.abort_all();
        }
        for b in &self.background {
            b.abort();
        }
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || node.stop())
            .await
            .context("stopping raft")?;
        self.node
            .db()
            .sync_wal()
            .context("syncing the write-ahead log")?;
        Ok(())
    }

    /// Stops at once, waiting for nothing but raft's current round:
    /// listeners and background tasks aborted (a dropped embedded member).
    pub fn abort(mut self) {
        let _ = self.closing.send(true);
        self.tasks.abort_all();
        for b in &self.background {
            b.abort();
        }
        self.node.stop();
    }
}

/// A member without an identity yet (an empty directory, or a joiner
/// stopped before it saved one) is new: it must be in `--initial-cluster`,
/// and with `--initial-cluster-state existing` it asks the cluster how to
/// join.
async fn settle_identity(
    flags: &ServerFlags,
    cfg: &mut secretd_store::node::NodeConfig,
) -> Result<()> {
    // No identity yet (an empty directory, or a joiner stopped before it
    // saved one): a new member, which joins or bootstraps as the flags say.
    let fresh = !secretd_store::node::holds_member(&cfg.data_dir)?;
    if fresh && !cfg.initial_members.iter().any(|m| m.name == cfg.name) {
        bail!(
            "--initial-cluster has no member named {:?} (--name)",
            cfg.name
        );
    }
    if flags.initial_cluster_state == ClusterState::Existing && fresh {
        cfg.join = Some(member::join_info(cfg).await?);
    }
    Ok(())
}

/// The peer and client listeners' doors (TLS, whether a certificate is
/// required, admission), with a loud warning for each door left open.
fn doors<'a>(flags: &ServerFlags, plan: &Plan, adm: &'a Admissions) -> (Door<'a>, Door<'a>) {
    use crate::conn::ClientCerts;
    use crate::identity::Role;
    let peer_certs =
        tls::requires_client_certs(flags.peer_client_cert_auth, &flags.peer_trusted_ca_file);
    let client_certs = tls::requires_client_certs(flags.client_cert_auth, &flags.trusted_ca_file);
    let peer_door = Door {
        tls: plan.peer_tls.clone(),
        certs: match peer_certs {
            true => ClientCerts::Required,
            false => ClientCerts::NotAsked(Role::Unauthenticated),
        },
        admission: &adm.peer,
        streams_per_connection_max: PEER_STREAMS_PER_CONNECTION_MAX,
    };
    let client_door = Door {
        tls: plan.client_tls.clone(),
        certs: match client_certs {
            true => ClientCerts::Required,
            false => ClientCerts::NotAsked(Role::Anonymous),
        },
        admission: &adm.client,
        streams_per_connection_max: flags.max_concurrent_streams,
    };
    if plan.client_tls.is_none() {
        tracing::warn!("CLIENT CONNECTIONS ARE NOT AUTHENTICATED: anyone who reaches the client port may do anything (use https client URLs with --cert-file, --key-file and --trusted-ca-file)");
    } else if !client_certs {
        tracing::warn!("CLIENTS NEED NO CERTIFICATE (--client-cert-auth=false): anyone who reaches the client port may use etcd's API as etcd's users and roles allow, anything in etcd's keyspace until `etcdctl auth enable`; secretd's own APIs are refused on it (without --trusted-ca-file no certificate can be verified)");
    }
    if plan.peer_tls.is_none() || !peer_certs {
        tracing::warn!("PEER CONNECTIONS ARE NOT AUTHENTICATED: anyone who reaches the peer port may speak raft and fetch the key-encryption key (use https peer URLs with --peer-cert-file, --peer-key-file and --peer-trusted-ca-file)");
    }
    (peer_door, client_door)
}

/// HTTP/2 streams a peer connection may hold: snapshots, cluster info,
/// promotions and KEK fetches are a handful at a time.
const PEER_STREAMS_PER_CONNECTION_MAX: u32 = 64;

/// Until SIGINT or SIGTERM (a clean stop), the member's loop failing, or
/// a listener ending.
async fn wait_for_stop(node: &Arc<secretd_store::node::Node>, tasks: &mut Listeners) -> Result<()> {
    let fatal = {
        let node = node.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(f) = node.status().fatal {
                    return f;
                }
            }
        }
    };
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        f = fatal => Err(anyhow::anyhow!("member stopped: {f}")),
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped")),
            Ok(Err(e)) => Err(anyhow::anyhow!("a listener failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("a listener task failed: {e}")),
        },
    }
}
