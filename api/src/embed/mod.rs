//! An embeddable member: a Rust program runs a secretd member inside its
//! own process, as Go programs run etcd's `embed`, and talks to it through
//! an in-process client that goes through no socket.
//!
//! The member starts on the binary's own path (`server::start`, from the
//! same `ServerFlags`), so everything the flags decide, and every check,
//! is the binary's. The in-process client calls the service structs the
//! client listener registers, with an explicit identity that the gate's
//! role matrix decides first (`gate::admit`): a `Node` identity is refused
//! admin calls exactly as over the network.
//!
//! - `error`: `EmbedError`, the one map from gRPC codes to variants.
//! - `shared`: the services a member and its clients share, and the stop.
//! - `client`: the in-process client, KV and Lease.
//! - `objects`: secrets, configs and tasks.
//! - `watch`: Watch as typed events.

mod client;
mod error;
mod objects;
mod shared;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

pub use self::client::{Client, KeyValue, Lease};
pub use self::error::EmbedError;
pub use self::objects::mount;
pub use self::shared::WATCH_STREAMS_MAX;
pub use self::watch::{EventKind, WatchEvent, Watcher};
pub use crate::identity::Role;
pub use crate::pb::secretstore::{Mount, Object, Task};
use crate::server::{Running, ServerFlags, StartOptions};

/// How long `Member::stop` lets connections finish, and then waits for
/// the storage to be let go.
const STOP_GRACE_DEFAULT: Duration = Duration::from_secs(5);

/// An embedded member's settings: `secretd`'s flags (same names, same
/// defaults, same checks), but with no client or peer listener unless
/// asked for.
#[derive(Clone, Debug)]
pub struct Config {
    flags: ServerFlags,
    harden_process: bool,
    stop_grace: Duration,
}

/// Parses no arguments: the binary's defaults.
#[derive(Parser)]
struct DefaultFlags {
    #[command(flatten)]
    flags: ServerFlags,
}

impl Config {
    /// A single member named `name` over `data_dir`, serving no socket:
    /// its advertised peer URL (`http://127.0.0.1:2380`) only names it.
    pub fn new(name: &str, data_dir: impl Into<PathBuf>) -> Config {
        let mut flags = match DefaultFlags::try_parse_from(["secretd"]) {
            Ok(d) => d.flags,
            Err(e) => unreachable!("the flags' defaults parse: {e}"),
        };
        flags.name = name.to_string();
        flags.data_dir = Some(data_dir.into());
        flags.listen_client_urls = String::new();
        flags.advertise_client_urls = String::new();
        flags.listen_peer_urls = String::new();
        flags.initial_advertise_peer_urls = "http://127.0.0.1:2380".to_string();
        Config::from_flags(flags)
    }

    /// Exactly the member `secretd` would run with these flags.
    pub fn from_flags(flags: ServerFlags) -> Config {
        Config {
            flags,
            harden_process: true,
            stop_grace: STOP_GRACE_DEFAULT,
        }
    }

    /// Serves clients on these URLs too (listened on and advertised).
    /// `http://127.0.0.1:0` takes a free port: see `Member::client_addrs`.
    /// An https URL needs the certificate flags (`flags_mut`).
    pub fn client_urls(mut self, urls: &[&str]) -> Config {
        self.flags.listen_client_urls = urls.join(",");
        self.flags.advertise_client_urls = urls.join(",");
        self
    }

    /// Listens for peers on these URLs, and advertises them.
    pub fn peer_urls(mut self, urls: &[&str]) -> Config {
        self.flags.listen_peer_urls = urls.join(",");
        self.flags.initial_advertise_peer_urls = urls.join(",");
        self
    }

    /// Any other flag (`--initial-cluster`, TLS files, limits, ...).
    pub fn flags_mut(&mut self) -> &mut ServerFlags {
        &mut self.flags
    }

    /// Whether starting hardens the whole process as `secretd` does (no
    /// core dumps, umask 077, the open-file limit raised). On by default:
    /// the process holds the KEK. Off for a program that must keep its
    /// own umask and limits; the data directory is 0700 either way.
    pub fn harden_process(mut self, on: bool) -> Config {
        self.harden_process = on;
        self
    }

    /// How long `stop` lets open connections finish (and then waits for
    /// the storage to close).
    pub fn stop_grace(mut self, grace: Duration) -> Config {
        self.stop_grace = grace;
        self
    }
}

/// A running embedded member. Stop it with `stop` (dropping it stops it
/// too, without waiting for connections or the storage).
pub struct Member {
    running: Option<Running>,
    shared: Arc<shared::Shared>,
    client_addrs: Vec<SocketAddr>,
    stop_grace: Duration,
}

impl Member {
    /// Starts the member (bootstrapping `data_dir`, or reopening it) and
    /// its listeners, if any. It may not have a leader yet: see `ready`.
    pub async fn start(config: Config) -> Result<Member, EmbedError> {
        let opts = StartOptions {
            listeners_optional: true,
            harden_process: config.harden_process,
        };
        let running = crate::server::start(&config.flags, opts)
            .await
            .map_err(EmbedError::from_start)?;
        let node = running.node.clone();
        let services = shared::Services {
            kv: crate::etcd::kv::KvService { node: node.clone() },
            lease: crate::etcd::lease::LeaseService { node: node.clone() },
            watch: crate::etcd::watch::WatchService { node: node.clone() },
            objects: running.objects.clone(),
            request_bytes_max: node.config().max_request_bytes + crate::server::GRPC_OVERHEAD_BYTES,
            node,
        };
        Ok(Member {
            client_addrs: running.client_addrs.clone(),
            shared: shared::Shared::new(services),
            running: Some(running),
            stop_grace: config.stop_grace,
        })
    }

    /// Waits until the cluster has a leader and this member serves a
    /// linearizable read, at most `within` (`Timeout` after it).
    pub async fn ready(&self, within: Duration) -> Result<(), EmbedError> {
        let node = self.shared.services()?.node.clone();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = node.status();
            if let Some(f) = status.fatal {
                return Err(EmbedError::Unavailable(f));
            }
            if status.leader != 0 {
                match tokio::time::timeout_at(deadline, node.read_index()).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(_)) => {}
                    Err(_) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // Polls the raft loop's published status: it has no event.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(EmbedError::Timeout(format!(
            "no leader serving reads within {within:?}"
        )))
    }

    /// An in-process client acting as `role`: `Role::Admin` for the admin
    /// API and etcd's, `Role::Node(name)` for a node agent's calls only.
    pub fn client(&self, role: Role) -> Client {
        Client::new(self.shared.clone(), role)
    }

    /// The client listeners' addresses (ports chosen for port 0).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// This member's id and its cluster's.
    pub fn ids(&self) -> Result<(u64, u64), EmbedError> {
        let node = self.shared.services()?.node.clone();
        Ok((node.id(), node.cluster_id()))
    }

    /// Stops gracefully: clients and watchers answer `Stopped`, listeners
    /// close (connections still busy after the grace period are cut),
    /// raft stops, the write-ahead log is synced, and this waits until
    /// RocksDB is closed, so the data directory can be opened again.
    pub async fn stop(mut self) -> Result<(), EmbedError> {
        let Some(running) = self.running.take() else {
            return Err(EmbedError::Stopped);
        };
        let db = Arc::downgrade(running.node.db());
        self.shared.close().await;
        running
            .shutdown(self.stop_grace)
            .await
            .map_err(EmbedError::from_start)?;
        let deadline = tokio::time::Instant::now() + self.stop_grace;
        while db.strong_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(EmbedError::Unavailable(format!(
                    "the storage is still in use {:?} after the stop (a client connection or an agent stream still open)",
                    self.stop_grace
                )));
            }
            // Aborted tasks let go of the node when the runtime next
            // reaches them.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.shared.close_now();
            running.abort();
        }
    }
}
