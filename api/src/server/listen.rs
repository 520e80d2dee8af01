//! The member's listeners: binding, TLS per listener, the peer and client
//! routers (gRPC, the JSON gateway, the gate), and serving each.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use secretd_store::node::Node;
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::etcd::cluster::ClusterService;
use crate::etcd::concurrency::Limits;
use crate::etcd::election::ElectionService;
use crate::etcd::kv::KvService;
use crate::etcd::lease::LeaseService;
use crate::etcd::lock::LockService;
use crate::etcd::maintenance::MaintenanceService;
use crate::etcd::watch::WatchService;
use crate::pb::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer,
};
use crate::pb::raftpb::raft_server::RaftServer;
use crate::pb::secretstore::{
    admin_server::AdminServer, agent_server::AgentServer, configs_server::ConfigsServer,
    driver_server::DriverServer, secrets_server::SecretsServer, tasks_server::TasksServer,
};
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::peer::raw::MAGIC_PREFIX;
use crate::peer::service::RaftService;
use crate::peer::PEER_MESSAGE_BYTES_MAX;
use crate::urls;

/// gRPC overhead etcd allows on top of `--max-request-bytes`, so that an
/// oversized request gets etcd's clear error instead of a transport one.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

pub(super) type Listeners = tokio::task::JoinSet<std::result::Result<(), tonic::transport::Error>>;

/// Serves `router` on one listener: TLS when the URL is https (the door's,
/// with the client's role from its certificate when it asks for one),
/// plaintext otherwise; either way admitted against the door's budget and
/// behind the gate, until the member closes its listeners (`closed`).
/// Connections set TCP_NODELAY: `serve_with_incoming` does not apply the
/// builder's, and with Nagle on, a stream's next small message waited 40 ms
/// for the peer's delayed ACK.
pub(super) fn serve(
    tasks: &mut Listeners,
    router: tonic::transport::server::Router<
        tower::layer::util::Stack<crate::gate::GateLayer, tower::layer::util::Identity>,
    >,
    l: TcpListener,
    https: bool,
    door: &Door<'_>,
    closed: &Closed,
) {
    let until = until_closed(closed);
    let adm = door.admission;
    match (https, door.tls.clone()) {
        (true, Some(cfg)) => {
            let incoming = crate::conn::tls_incoming(l, cfg, door.certs.clone(), adm.clone());
            tasks.spawn(async move { router.serve_with_incoming_shutdown(incoming, until).await });
        }
        _ => {
            let incoming = crate::conn::plain_incoming(l, adm.clone());
            tasks.spawn(async move { router.serve_with_incoming_shutdown(incoming, until).await });
        }
    }
}

/// Set to `true` when the member stops: listeners stop accepting and close
/// their connections gracefully (`Running::shutdown`).
pub(super) type Closed = tokio::sync::watch::Receiver<bool>;

/// Resolves once the member asks its listeners to close (or is gone).
fn until_closed(closed: &Closed) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut closed = closed.clone();
    async move {
        let _ = closed.wait_for(|c| *c).await;
    }
}

/// Binds every URL of a list, failing clearly on the first that cannot be.
pub(super) async fn bind_all(flag: &str, list: &[String]) -> Result<Vec<(TcpListener, bool)>> {
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
pub(super) fn listener_tls(
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

/// The services etcd's JSON gateway calls.
fn gateway_services(
    node: &Arc<Node>,
    keys: &Arc<secretd_secrets::keys::Keys>,
    auth: &Arc<crate::etcd::auth::AuthService>,
    limits: &Arc<Limits>,
) -> crate::etcd::gateway::Services {
    crate::etcd::gateway::Services {
        kv: Arc::new(KvService { node: node.clone() }),
        lease: Arc::new(LeaseService { node: node.clone() }),
        cluster: Arc::new(ClusterService {
            node: node.clone(),
            keys: keys.clone(),
        }),
        maintenance: Arc::new(MaintenanceService { node: node.clone() }),
        watch: Arc::new(WatchService { node: node.clone() }),
        auth: auth.clone(),
        lock: Arc::new(LockService {
            node: node.clone(),
            limits: limits.clone(),
        }),
        election: Arc::new(ElectionService {
            node: node.clone(),
            limits: limits.clone(),
        }),
        node: node.clone(),
    }
}

/// One listener's TLS and admission, and whether it checks certificates.
pub(super) struct Door<'a> {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub certs: crate::conn::ClientCerts,
    pub admission: &'a Arc<crate::conn::Admission>,
    /// HTTP/2 streams one connection may have open at once.
    pub streams_per_connection_max: u32,
}

/// The peer port: raft streams (`peer::raw`) and, behind the gate, gRPC
/// for snapshots, cluster info, promotions and KEK fetches.
pub(super) fn serve_peers(
    tasks: &mut Listeners,
    listeners: Vec<(TcpListener, bool)>,
    node: &Arc<Node>,
    keys: &Arc<secretd_secrets::keys::Keys>,
    door: &Door<'_>,
    closed: &Closed,
) {
    for (l, https) in listeners {
        let until = until_closed(closed);
        let svc = RaftServer::new(RaftService {
            node: node.clone(),
            keys: keys.clone(),
        })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let router = Server::builder()
            .max_concurrent_streams(door.streams_per_connection_max)
            .layer(crate::gate::GateLayer)
            .add_service(svc);
        // Raft streams (`peer::raw`) share the port: split off by their magic.
        let raw = Arc::new(RaftService {
            node: node.clone(),
            keys: keys.clone(),
        });
        let adm = door.admission.clone();
        match (https, door.tls.clone()) {
            (true, Some(cfg)) => {
                let incoming = crate::conn::tls_incoming(l, cfg, door.certs.clone(), adm);
                let incoming = crate::conn::split_by_magic(incoming, MAGIC_PREFIX, move |c| {
                    tokio::spawn(crate::peer::raw::serve(c, raw.clone()));
                });
                tasks.spawn(
                    async move { router.serve_with_incoming_shutdown(incoming, until).await },
                );
            }
            _ => {
                let incoming = crate::conn::plain_incoming(l, adm);
                let incoming = crate::conn::split_by_magic(incoming, MAGIC_PREFIX, move |c| {
                    tokio::spawn(crate::peer::raw::serve(c, raw.clone()));
                });
                tasks.spawn(
                    async move { router.serve_with_incoming_shutdown(incoming, until).await },
                );
            }
        }
    }
}

/// What the client port serves from.
pub(super) struct Clients<'a> {
    pub node: &'a Arc<Node>,
    pub objects: &'a crate::objects::service::ObjectService,
    pub auth: &'a Arc<crate::etcd::auth::AuthService>,
    /// Bytes a request may carry (`--max-request-bytes` and gRPC's part).
    pub max_recv: usize,
}

/// The client port: every client gRPC service and etcd's JSON gateway
/// (HTTP/1.1 and HTTP/2), one TLS and one gate.
pub(super) fn serve_clients(
    tasks: &mut Listeners,
    listeners: Vec<(TcpListener, bool)>,
    c: &Clients<'_>,
    door: &Door<'_>,
    closed: &Closed,
) {
    let (node, objects, auth, max_recv) = (c.node, c.objects, c.auth, c.max_recv);
    // One count of agent streams for the member, whatever the listener.
    let agent_streams = Arc::new(crate::objects::agent::StreamCount::default());
    // One count of lock and election waiters and observers, gRPC and
    // gateway alike.
    let limits = Arc::new(Limits::default());
    // One count of KV request bytes being read, for every listener.
    let reading = crate::etcd::unary::reading_budget(max_recv);
    for (l, https) in listeners {
        let shared = Shared {
            agent_streams: &agent_streams,
            limits: &limits,
            reading: &reading,
        };
        let mut routes = client_grpc_routes(node, objects, auth, max_recv, shared);
        // etcd's JSON gateway shares the port (HTTP/1.1 and HTTP/2), the
        // TLS and the gate.
        let gateway = crate::etcd::gateway::router(
            gateway_services(node, objects.store.keys(), auth, &limits),
            max_recv,
        );
        let grpc = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = grpc.merge(gateway).fallback(crate::etcd::gateway::fallback);
        let router = Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(door.streams_per_connection_max)
            .layer(crate::gate::GateLayer)
            .add_routes(routes);
        serve(tasks, router, l, https, door, closed);
    }
}

/// What every client listener's services count together.
#[derive(Clone, Copy)]
struct Shared<'a> {
    agent_streams: &'a Arc<crate::objects::agent::StreamCount>,
    limits: &'a Arc<Limits>,
    reading: &'a Arc<secretd_store::answers::AnswerBudget>,
}

/// Every client gRPC service, etcd's and secretstore's, as one set of
/// routes for one client listener.
fn client_grpc_routes(
    node: &Arc<Node>,
    objects: &crate::objects::service::ObjectService,
    auth: &Arc<crate::etcd::auth::AuthService>,
    max_recv: usize,
    shared: Shared<'_>,
) -> tonic::service::Routes {
    let Shared {
        agent_streams,
        limits,
        reading,
    } = shared;
    tonic::service::Routes::new(crate::etcd::unary::KvGrpc::new(
        KvService { node: node.clone() },
        max_recv,
        reading,
    ))
    .add_service(crate::etcd::watch::grpc::WatchGrpc::new(
        WatchService { node: node.clone() },
        max_recv,
    ))
    .add_service(ClusterServer::new(ClusterService {
        node: node.clone(),
        keys: objects.store.keys().clone(),
    }))
    .add_service(SecretsServer::new(objects.clone()).max_decoding_message_size(max_recv))
    .add_service(ConfigsServer::new(objects.clone()).max_decoding_message_size(max_recv))
    .add_service(TasksServer::new(objects.clone()))
    .add_service(AdminServer::new(objects.clone()))
    .add_service(
        AgentServer::new(crate::objects::agent::AgentService {
            node: node.clone(),
            store: objects.store.clone(),
            streams: agent_streams.clone(),
        })
        .max_encoding_message_size(crate::objects::agent::AGENT_MESSAGE_BYTES_MAX),
    )
    .add_service(DriverServer::new(crate::objects::driver::DriverService {
        store: objects.store.clone(),
    }))
    .add_service(LeaseServer::new(LeaseService { node: node.clone() }))
    .add_service(AuthServer::from_arc(auth.clone()))
    .add_service(
        LockServer::new(LockService {
            node: node.clone(),
            limits: limits.clone(),
        })
        .max_decoding_message_size(max_recv),
    )
    .add_service(
        ElectionServer::new(ElectionService {
            node: node.clone(),
            limits: limits.clone(),
        })
        .max_decoding_message_size(max_recv),
    )
    .add_service(
        MaintenanceServer::new(MaintenanceService { node: node.clone() })
            .max_encoding_message_size(usize::MAX),
    )
}
