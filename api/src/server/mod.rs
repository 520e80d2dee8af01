//! `secretd`'s server: startup in order (flags checked, the process
//! hardened, ports bound, the member started, listeners served), then the
//! wait for a signal or a fatal error. `flags.rs` has the flags,
//! `member.rs` the member's start, `listen.rs` the listeners.

mod flags;
mod listen;
mod member;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub use flags::{ClusterState, ServerFlags};
use listen::{bind_all, listener_tls, Door, Listeners, GRPC_OVERHEAD_BYTES};

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
    fn check(flags: &ServerFlags) -> Result<Plan> {
        let (cfg, client_urls, peer_urls) = flags.node_config()?;
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
/// peers.
fn harden(flags: &ServerFlags, cfg: &secretd_store::node::NodeConfig) -> Result<usize> {
    // No core dumps: the process holds the KEK and, briefly, plaintexts.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot disable core dumps");
    }
    // Everything this member writes is for its own eyes: the keyspace holds
    // configs and KV values in plaintext.
    crate::datadir::private_umask();
    crate::datadir::secure(&cfg.data_dir)?;
    let fds = crate::conn::raise_fd_limit();
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

/// Runs a member until SIGINT/SIGTERM or a fatal storage error.
pub async fn run(flags: ServerFlags) -> Result<()> {
    let plan = Plan::check(&flags)?;
    let mut cfg = plan.cfg.clone();
    // Before anything creates the data directory.
    if cfg.force_new_cluster && !cfg.data_dir.join("db").exists() {
        return Err(secretd_store::node::nothing_to_force(&cfg).into());
    }
    let fds = harden(&flags, &cfg)?;
    let adm = admissions(&flags, fds);
    settle_identity(&flags, &mut cfg).await?;
    // Bind before starting raft, so a busy port fails fast and clearly.
    let peer_listeners = bind_all("--listen-peer-urls", &plan.peer_urls).await?;
    let client_listeners = bind_all("--listen-client-urls", &plan.client_urls).await?;
    let metrics_listeners = bind_all("--listen-metrics-urls", &plan.metrics_urls).await?;
    let m = member::start(&cfg, flags.secret_history as usize, flags.autolock)?;
    let node = m.node.clone();
    tracing::info!(
        name = %cfg.name,
        member = format_args!("{:x}", node.id()),
        cluster = format_args!("{:x}", node.cluster_id()),
        data_dir = %cfg.data_dir.display(),
        client_urls = %plan.client_urls.join(","),
        peer_urls = %plan.peer_urls.join(","),
        "secretd member started"
    );
    if let Some(r) = plan.retention {
        crate::compactor::start(node.clone(), r);
    }
    let (peer_door, client_door) = doors(&flags, &plan, &adm);
    crate::metrics::spawn(
        metrics_listeners.into_iter().map(|(l, _)| l).collect(),
        node.clone(),
        &adm.metrics,
    );
    let mut tasks = Listeners::new();
    listen::serve_peers(&mut tasks, peer_listeners, &node, &m.keys, &peer_door);
    // Peers can ask us now; we ask them before serving any client.
    if flags.initial_corrupt_check {
        if let Err(e) = crate::peer::corruption::initial_check(&node).await {
            node.stop();
            return Err(e);
        }
    }
    crate::peer::corruption::start_periodic(node.clone(), flags.corrupt_check_time);
    let auth = Arc::new(crate::etcd::auth::AuthService::new(
        node.clone(),
        flags.bcrypt_cost,
    ));
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    listen::serve_clients(
        &mut tasks,
        client_listeners,
        &node,
        &m.objects,
        &auth,
        max_recv,
        &client_door,
    );
    let result = wait_for_stop(&node, &mut tasks).await;
    node.stop();
    result
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
