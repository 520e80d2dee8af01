//! `secretd`'s server: flags (etcd's names), startup, listeners, shutdown.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use secretd_store::cluster;
use secretd_store::node::{Node, NodeConfig};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::cluster::ClusterService;
use crate::kv::KvService;
use crate::lease::LeaseService;
use crate::maintenance::MaintenanceService;
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::raftpb::raft_server::RaftServer;
use crate::pb::secretstore::{
    admin_server::AdminServer, agent_server::AgentServer, configs_server::ConfigsServer,
    secrets_server::SecretsServer, tasks_server::TasksServer,
};
use crate::peer::{GrpcTransport, RaftService, PEER_MESSAGE_BYTES_MAX};
use crate::tls;
use crate::urls;
use crate::watch::WatchService;

/// gRPC overhead etcd allows on top of `--max-request-bytes`, so that an
/// oversized request gets etcd's clear error instead of a transport one.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

/// Flags, named as etcd names them.
#[derive(Args, Clone, Debug)]
pub struct ServerFlags {
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(long, default_value = "https://localhost:2379")]
    pub listen_client_urls: String,
    /// This member's client URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "https://localhost:2379")]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(long, default_value = "https://localhost:2380")]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "https://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping
    /// [default: ${name}=${initial-advertise-peer-urls}].
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Initial cluster state.
    #[arg(long, value_enum, default_value = "new")]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, mixed into member and cluster ids.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Applied raft entries that trigger a log truncation; a follower that
    /// falls further behind catches up by snapshot.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_count: u64,
    /// Entries kept behind a log truncation for slow followers.
    #[arg(
        long = "experimental-snapshot-catchup-entries",
        default_value_t = 5_000
    )]
    pub snapshot_catchup_entries: u64,
    /// Auto-compaction mode: periodic or revision.
    #[arg(long, value_enum, default_value = "periodic")]
    pub auto_compaction_mode: crate::compactor::Mode,
    /// Auto-compaction retention: for periodic a duration (1h, 30m, or a
    /// number of hours), for revision a revision count; 0 disables it.
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// Backend size (bytes) past which writes that add data are refused
    /// and the NOSPACE alarm is raised; 0 means the default, 2 GiB.
    #[arg(long, default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Cost of the bcrypt hashes of etcd user passwords (etcd's flag):
    /// 4 to 31, each step doubling the work of a login and of a guess.
    #[arg(long, default_value_t = crate::auth::BCRYPT_COST_DEFAULT,
          value_parser = clap::value_parser!(u32).range(crate::auth::BCRYPT_COST_MIN as i64..=crate::auth::BCRYPT_COST_MAX as i64))]
    pub bcrypt_cost: u32,
    /// etcd's auth token kind: only `simple` (random tokens held in
    /// members' memory) is served.
    #[arg(long, default_value = "simple", value_parser = parse_auth_token)]
    pub auth_token: String,
    /// Seconds an unused simple token stays valid (etcd's flag).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400 * 30))]
    pub auth_token_ttl: u64,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// How often idle watchers that asked for progress notifications get
    /// one (etcd's flag name; a duration such as 10m, 500ms or 2s).
    #[arg(long = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = secretd_client::format::parse_duration)]
    pub watch_progress_notify_interval: Duration,
    /// Certificate for client connections (https client URLs).
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Key for --cert-file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that signs client certificates.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates from --trusted-ca-file on https client
    /// URLs (roles come from them). `--client-cert-auth=false` turns it off.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// This member's certificate for peer traffic (server and client).
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Key for --peer-cert-file.
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA that signs members' certificates.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require member certificates on https peer URLs.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Plain-HTTP URLs serving Prometheus /metrics and /health.
    #[arg(long, default_value = "")]
    pub listen_metrics_urls: String,
    /// Append one JSON line per secret delivery and per change to a
    /// secret, config, task or setting to this file (mode 0600).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Old versions of a secret kept after a rotation (pinned versions are
    /// kept regardless).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub secret_history: u32,
    /// Turn autolock on if it is off: the keyring is sealed under an
    /// unlock key that is never on disk, printed once on stderr; restarted
    /// members stay locked until `secretctl cluster unlock`.
    #[arg(long)]
    pub autolock: bool,
    /// Client connections this member holds at once (lowered to what the
    /// open-file limit allows after storage and peers).
    #[arg(long, default_value_t = 4096)]
    pub max_client_connections: usize,
    /// Client connections one certificate identity may hold at once (at
    /// most half of --max-client-connections).
    #[arg(long, default_value_t = 1024)]
    pub max_connections_per_identity: usize,
    /// A client or peer connection with no request in flight for this long
    /// is closed (clients reconnect on their next request).
    #[arg(long, default_value = "2m", value_parser = secretd_client::format::parse_duration)]
    pub idle_connection_timeout: Duration,
}

impl ServerFlags {
    fn node_config(&self) -> Result<(NodeConfig, Vec<String>, Vec<String>)> {
        if self.heartbeat_interval == 0 || self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms)",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_request_bytes) {
            bail!("--max-request-bytes must be between 1 KiB and 64 MiB");
        }
        if self.max_txn_ops == 0 {
            bail!("--max-txn-ops must be at least 1");
        }
        if self.max_client_connections < 2 || self.max_connections_per_identity == 0 {
            bail!("--max-client-connections must be at least 2 and --max-connections-per-identity at least 1");
        }
        if self.idle_connection_timeout < Duration::from_secs(1) {
            bail!("--idle-connection-timeout must be at least 1s");
        }
        let client = urls::parse_list("--listen-client-urls", &self.listen_client_urls)?;
        let peer = urls::parse_list("--listen-peer-urls", &self.listen_peer_urls)?;
        urls::parse_list("--advertise-client-urls", &self.advertise_client_urls)?;
        let advertise_peer = urls::parse_list(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let initial = self.initial_cluster.clone().unwrap_or_else(|| {
            advertise_peer
                .iter()
                .map(|u| format!("{}={u}", self.name))
                .collect::<Vec<_>>()
                .join(",")
        });
        let members = cluster::parse_initial_cluster(&initial, &self.initial_cluster_token)?;
        if let Some(me) = members.iter().find(|m| m.name == self.name) {
            let mut mine = me.peer_urls.clone();
            let mut adv = advertise_peer.clone();
            mine.sort();
            adv.sort();
            if mine != adv {
                bail!(
                    "--initial-cluster has {} for {:?} but --initial-advertise-peer-urls is {}",
                    me.peer_urls.join(","),
                    self.name,
                    advertise_peer.join(",")
                );
            }
        }
        let client_urls = urls::parse_list("--advertise-client-urls", &self.advertise_client_urls)?;
        let cfg = NodeConfig {
            join: None,
            cluster_token: self.initial_cluster_token.clone(),
            client_urls,
            quota_backend_bytes: if self.quota_backend_bytes <= 0 {
                2 << 30
            } else {
                self.quota_backend_bytes
            },
            name: self.name.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name))),
            initial_members: members,
            tick_ms: self.heartbeat_interval,
            election_ticks: (self.election_timeout / self.heartbeat_interval) as usize,
            heartbeat_ticks: 1,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            request_timeout: Duration::from_millis(5000 + 2 * self.election_timeout),
            watch_progress_interval: self
                .watch_progress_notify_interval
                .max(Duration::from_millis(100)),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
        };
        Ok((cfg, client, peer))
    }
}

/// `--auth-token`: etcd's `simple`, or a clear refusal of what is not
/// served (JWT).
fn parse_auth_token(s: &str) -> std::result::Result<String, String> {
    match s.split(',').next().unwrap_or("") {
        "simple" if s == "simple" => Ok(s.to_string()),
        "simple" => Err("simple tokens take no options (their TTL is --auth-token-ttl)".into()),
        "jwt" => Err("JWT tokens are not served; use --auth-token simple".into()),
        other => Err(format!(
            "unknown token kind {other:?}: the only kind is simple"
        )),
    }
}

/// The services etcd's JSON gateway calls.
fn gateway_services(
    node: &Arc<Node>,
    auth: &Arc<crate::auth::AuthService>,
) -> crate::gateway::Services {
    crate::gateway::Services {
        kv: Arc::new(KvService { node: node.clone() }),
        lease: Arc::new(LeaseService { node: node.clone() }),
        cluster: Arc::new(ClusterService { node: node.clone() }),
        maintenance: Arc::new(MaintenanceService { node: node.clone() }),
        watch: Arc::new(WatchService { node: node.clone() }),
        auth: auth.clone(),
        node: node.clone(),
    }
}

type Listeners = tokio::task::JoinSet<std::result::Result<(), tonic::transport::Error>>;

/// Serves `router` on one listener: TLS when the URL is https (with the
/// client's role from its certificate when `client_auth`), plaintext
/// otherwise; either way admitted against `adm` and behind the gate.
/// Connections set TCP_NODELAY: `serve_with_incoming` does not apply the
/// builder's, and with Nagle on, a stream's next small message waited 40 ms
/// for the peer's delayed ACK.
fn serve(
    tasks: &mut Listeners,
    router: tonic::transport::server::Router<
        tower::layer::util::Stack<crate::conn::GateLayer, tower::layer::util::Identity>,
    >,
    l: TcpListener,
    https: bool,
    tls_cfg: Option<Arc<rustls::ServerConfig>>,
    client_auth: bool,
    adm: &Arc<crate::conn::Admission>,
) {
    match (https, tls_cfg) {
        (true, Some(cfg)) => {
            let incoming = crate::conn::tls_incoming(l, cfg, client_auth, adm.clone());
            tasks.spawn(async move { router.serve_with_incoming(incoming).await });
        }
        _ => {
            let incoming = crate::conn::plain_incoming(l, adm.clone());
            tasks.spawn(async move { router.serve_with_incoming(incoming).await });
        }
    }
}

/// Binds every URL of a list, failing clearly on the first that cannot be.
async fn bind_all(flag: &str, list: &[String]) -> Result<Vec<(TcpListener, bool)>> {
    let mut out = Vec::new();
    for url in list {
        for addr in urls::resolve(url).await? {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("{flag}: cannot listen on {addr}"))?;
            out.push((l, url.starts_with("https://")));
        }
    }
    Ok(out)
}

/// The TLS config for one kind of listener, if any of its URLs is https.
fn listener_tls(
    kind: &str,
    prefix: &str,
    https: bool,
    files: (&Option<PathBuf>, &Option<PathBuf>, &Option<PathBuf>, bool),
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    if !https {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (files.0, files.1) else {
        bail!("https {kind} URLs need --{prefix}cert-file and --{prefix}key-file (run `secretd certs init` for a development CA)");
    };
    let f = crate::tls::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        trusted_ca: files.2.clone(),
        client_cert_auth: files.3,
    };
    Ok(Some(crate::tls::server_config(&f, &format!("--{prefix}"))?))
}

/// `secretd snapshot restore`: a new member's data directory from a backup.
pub fn restore(flags: ServerFlags, backup: &std::path::Path) -> Result<()> {
    let (cfg, _, _) = flags.node_config()?;
    crate::datadir::private_umask();
    secretd_store::node::restore(&cfg, backup)
        .with_context(|| format!("restore {}", backup.display()))?;
    crate::datadir::secure(&cfg.data_dir)?;
    println!(
        "restored {} into {} as member {:?}",
        backup.display(),
        cfg.data_dir.display(),
        cfg.name
    );
    Ok(())
}

/// Runs a member until SIGINT/SIGTERM or a fatal storage error.
pub async fn run(flags: ServerFlags) -> Result<()> {
    // Every flag is checked before anything is bound or written, so a bad
    // flag is reported as itself, never as a busy port.
    let (cfg, client_urls, peer_urls) = flags.node_config()?;
    let mut cfg = cfg;
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
    let client_limits = crate::conn::Limits::clients(
        flags.max_client_connections,
        flags.max_connections_per_identity,
        flags.idle_connection_timeout.as_millis() as u64,
        fds,
    );
    tracing::info!(
        total = client_limits.total_max,
        per_identity = client_limits.per_identity_max,
        idle_ms = client_limits.idle_ms,
        "client connection budget"
    );
    let client_adm = crate::conn::Admission::new("client", client_limits);
    let peer_adm = crate::conn::Admission::new(
        "peer",
        crate::conn::Limits::peers(flags.idle_connection_timeout.as_millis() as u64),
    );
    if let Some(p) = &flags.audit_log {
        crate::audit::open(p)?;
    }
    // How this member connects to others over https peer URLs.
    if let Some(ca) = &flags.peer_trusted_ca_file {
        tls::set_peer_client(Some(tls::ClientTls::load(
            ca,
            flags.peer_cert_file.as_deref(),
            flags.peer_key_file.as_deref(),
        )?));
    }
    let fresh = !cfg.data_dir.join("db").exists();
    if fresh && !cfg.initial_members.iter().any(|m| m.name == cfg.name) {
        bail!(
            "--initial-cluster has no member named {:?} (--name)",
            cfg.name
        );
    }
    if flags.initial_cluster_state == ClusterState::Existing && fresh {
        cfg.join = Some(join_info(&cfg).await?);
    }
    // Bind before starting raft, so a busy port fails fast and clearly.
    let peer_listeners = bind_all("--listen-peer-urls", &peer_urls).await?;
    let client_listeners = bind_all("--listen-client-urls", &client_urls).await?;
    let metrics_listeners = bind_all("--listen-metrics-urls", &metrics_urls).await?;

    // The transport needs peer URLs by id; the node decides ids (from flags
    // on first start, from disk afterwards), so start it with a deferred
    // transport.
    let deferred = Arc::new(DeferredTransport::default());
    let node = Node::start(cfg.clone(), deferred.clone()).context("cannot start the member")?;
    let peers: HashMap<u64, String> = node
        .members()
        .iter()
        .filter(|m| m.id != node.id())
        .filter_map(|m| m.peer_ur_ls.first().map(|u| (m.id, u.clone())))
        .collect();
    let transport = GrpcTransport::start(node.id(), node.cluster_id(), peers, node.snapshot_dir());
    transport.attach(&node);
    deferred.set(transport);
    tracing::info!(
        name = %cfg.name,
        member = format_args!("{:x}", node.id()),
        cluster = format_args!("{:x}", node.cluster_id()),
        data_dir = %cfg.data_dir.display(),
        client_urls = %client_urls.join(","),
        peer_urls = %peer_urls.join(","),
        "secretd member started"
    );
    let keys = crate::objects::keys::Keys::load(node.clone(), &cfg.data_dir)
        .context("cannot open this member's keyring")?;
    keys.spawn_sync();
    if flags.autolock {
        enable_autolock(keys.clone());
    }
    let objects = crate::objects::service::ObjectService {
        store: Arc::new(crate::objects::store::ObjectStore::new(
            node.clone(),
            keys.clone(),
            flags.secret_history as usize,
        )),
    };

    if let Some(r) = retention {
        crate::compactor::start(node.clone(), r);
    }
    let enforce_peer = peer_tls.is_some() && flags.peer_client_cert_auth;
    let enforce_client = client_tls.is_some() && flags.client_cert_auth;
    if !enforce_client {
        tracing::warn!("CLIENT CONNECTIONS ARE NOT AUTHENTICATED: anyone who reaches the client port may do anything (use https client URLs with --cert-file, --key-file and --trusted-ca-file)");
    }
    if !enforce_peer {
        tracing::warn!("PEER CONNECTIONS ARE NOT AUTHENTICATED: anyone who reaches the peer port may speak raft and fetch the key-encryption key (use https peer URLs with --peer-cert-file, --peer-key-file and --peer-trusted-ca-file)");
    }
    crate::metrics::spawn(
        metrics_listeners.into_iter().map(|(l, _)| l).collect(),
        node.clone(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (l, https) in peer_listeners {
        let svc = RaftServer::new(RaftService {
            node: node.clone(),
            keys: keys.clone(),
        })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let router = Server::builder()
            .layer(crate::conn::GateLayer)
            .add_service(svc);
        serve(
            &mut tasks,
            router,
            l,
            https,
            peer_tls.clone(),
            enforce_peer,
            &peer_adm,
        );
    }
    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let auth = Arc::new(crate::auth::AuthService::new(
        node.clone(),
        flags.bcrypt_cost,
    ));
    for (l, https) in client_listeners {
        let mut routes = tonic::service::Routes::new(
            KvServer::new(KvService { node: node.clone() })
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            WatchServer::new(WatchService { node: node.clone() })
                .max_decoding_message_size(max_recv)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(ClusterServer::new(ClusterService { node: node.clone() }))
        .add_service(SecretsServer::new(objects.clone()).max_decoding_message_size(max_recv))
        .add_service(ConfigsServer::new(objects.clone()).max_decoding_message_size(max_recv))
        .add_service(TasksServer::new(objects.clone()))
        .add_service(AdminServer::new(objects.clone()))
        .add_service(
            AgentServer::new(crate::objects::agent::AgentService {
                node: node.clone(),
                store: objects.store.clone(),
            })
            .max_encoding_message_size(max_recv),
        )
        .add_service(LeaseServer::new(LeaseService { node: node.clone() }))
        .add_service(AuthServer::from_arc(auth.clone()))
        .add_service(
            MaintenanceServer::new(MaintenanceService { node: node.clone() })
                .max_encoding_message_size(usize::MAX),
        );
        // etcd's JSON gateway shares the port (HTTP/1.1 and HTTP/2), the
        // TLS and the gate.
        let gateway = crate::gateway::router(gateway_services(&node, &auth), max_recv);
        let grpc = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = grpc.merge(gateway).fallback(crate::gateway::fallback);
        let router = Server::builder()
            .accept_http1(true)
            .layer(crate::conn::GateLayer)
            .add_routes(routes);
        serve(
            &mut tasks,
            router,
            l,
            https,
            client_tls.clone(),
            enforce_client,
            &client_adm,
        );
    }

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
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); Ok(()) }
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); Ok(()) }
        f = fatal => Err(anyhow::anyhow!("member stopped: {f}")),
        Some(r) = tasks.join_next() => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("a listener stopped")),
            Ok(Err(e)) => Err(anyhow::anyhow!("a listener failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("a listener task failed: {e}")),
        },
    };
    node.stop();
    result
}

/// A transport whose real implementation is plugged in after the node
/// starts (the node's ids are needed to build it). Messages before that are
/// dropped; raft retransmits.
#[derive(Default)]
struct DeferredTransport {
    inner: std::sync::OnceLock<Arc<GrpcTransport>>,
    /// A membership change applied before the real transport existed.
    pending_peers: parking_lot::Mutex<Option<Vec<(u64, String)>>>,
}

impl DeferredTransport {
    fn set(&self, t: Arc<GrpcTransport>) {
        if let Some(peers) = self.pending_peers.lock().take() {
            secretd_store::node::Transport::update_peers(t.as_ref(), peers);
        }
        let _ = self.inner.set(t);
    }
}

/// For a member joining a running cluster: asks the other members listed in
/// `--initial-cluster` for the cluster id, and finds this member's id (given
/// by `member add`) by its peer URLs.
async fn join_info(cfg: &NodeConfig) -> Result<secretd_store::node::JoinInfo> {
    let me = cfg
        .initial_members
        .iter()
        .find(|m| m.name == cfg.name)
        .expect("checked by the caller");
    let others: Vec<String> = cfg
        .initial_members
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    if others.is_empty() {
        bail!(
            "--initial-cluster-state existing: --initial-cluster must list the running members too"
        );
    }
    let info = crate::peer::fetch_cluster_info(&others)
        .await
        .context("cannot reach any running member to join")?;
    let mut mine = me.peer_urls.clone();
    mine.sort();
    let found = info.members.iter().find(|m| {
        let mut u = m.peer_urls.clone();
        u.sort();
        u == mine
    });
    let Some(found) = found else {
        bail!(
            "the cluster has no member with peer URLs {}: add it first (etcdctl member add {} --peer-urls={})",
            mine.join(","),
            cfg.name,
            mine.join(",")
        );
    };
    tracing::info!(
        cluster = format_args!("{:x}", info.cluster_id),
        member = format_args!("{:x}", found.id),
        "joining a running cluster"
    );
    let members = info
        .members
        .iter()
        .map(|m| secretd_store::pb::etcdserverpb::Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: m.is_learner,
        })
        .collect();
    Ok(secretd_store::node::JoinInfo {
        cluster_id: info.cluster_id,
        member_id: found.id,
        members,
    })
}

impl secretd_store::node::Transport for DeferredTransport {
    fn send(&self, msgs: Vec<raft::eraftpb::Message>) {
        if let Some(t) = self.inner.get() {
            secretd_store::node::Transport::send(t.as_ref(), msgs);
        }
    }

    fn update_peers(&self, peers: Vec<(u64, String)>) {
        match self.inner.get() {
            Some(t) => secretd_store::node::Transport::update_peers(t.as_ref(), peers),
            None => *self.pending_peers.lock() = Some(peers),
        }
    }
}

/// How long `--autolock` keeps trying to switch autolock on while the
/// cluster elects a leader.
const AUTOLOCK_ENABLE_TIMEOUT_MS: u64 = 120_000;

/// `--autolock`: switches autolock on once the cluster can write, and
/// prints the unlock key to stderr (never to the log). If it is already
/// on, does nothing: the key was shown when it was switched on.
fn enable_autolock(keys: Arc<crate::objects::keys::Keys>) {
    tokio::spawn(async move {
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(AUTOLOCK_ENABLE_TIMEOUT_MS);
        loop {
            match keys.set_autolock(true).await {
                Ok(Some(mut key)) => {
                    eprintln!(
                        "\nAutolock is on. To unlock a restarted member, run `secretctl cluster unlock` and give it this key:\n\n    {key}\n\nKeep it somewhere safe: it is not shown again.\n"
                    );
                    zeroize::Zeroize::zeroize(&mut key);
                    return;
                }
                Ok(None) => return,
                Err(e) if e.message().starts_with("autolock is already on") => return,
                Err(e) if e.message() == crate::objects::keys::LOCKED_MESSAGE => return,
                Err(e) if std::time::Instant::now() >= deadline => {
                    tracing::error!(error = %e.message(), "--autolock: cannot switch autolock on");
                    return;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
            }
        }
    });
}
