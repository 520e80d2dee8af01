//! `secretd`'s flags, named and checked as etcd's: everything here is
//! validated before the member binds a port or writes a byte.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use secretd_store::cluster;
use secretd_store::node::NodeConfig;

use crate::urls;

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
    /// After a permanent loss of quorum: make this member, with its data
    /// directory, the only member of its cluster (etcd's flag). It keeps
    /// what it committed, discards entries it had not seen commit, and
    /// removes every other member. Remove the flag before the next start:
    /// a second forced start is refused (README, "Losing quorum for good").
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_new_cluster: bool,
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
    /// Bytes of read answers (Range, read-only Txn) a member holds at once,
    /// from the first record rendered until the last byte is handed to the
    /// connection; a read that would pass it fails with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = secretd_store::answers::IN_FLIGHT_BYTES_DEFAULT)]
    pub max_response_bytes_in_flight: usize,
    /// Bytes a write's answer may render (a txn's ranges, a delete's
    /// prev_kv): every member renders it while applying the write, so a
    /// write that would pass it is refused on every member, before it
    /// changes anything. Set on the writes this member proposes.
    #[arg(long, default_value_t = secretd_store::answers::WRITE_ANSWER_BYTES_DEFAULT)]
    pub max_write_answer_bytes: usize,
    /// How long an answer (Range, Txn, gateway) may go with its client
    /// taking none of it: past it, the answer is given up, its bytes freed
    /// and its stream reset, so a client that stops reading cannot hold
    /// the member's answer budget.
    #[arg(long, default_value = "30s", value_parser = secretd_client::format::parse_duration)]
    pub max_answer_stall: Duration,
    /// Cost of the bcrypt hashes of etcd user passwords (etcd's flag):
    /// 4 to 31, each step doubling the work of a login and of a guess.
    #[arg(long, default_value_t = crate::etcd::auth::BCRYPT_COST_DEFAULT,
          value_parser = clap::value_parser!(u32).range(crate::etcd::auth::BCRYPT_COST_MIN as i64..=crate::etcd::auth::BCRYPT_COST_MAX as i64))]
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
    /// Bytes the audit log may hold: past half of it the file moves to
    /// FILE.1 (replacing the one before) and a new one begins, so the two
    /// together stay under it, whatever a caller makes the member record.
    #[arg(long, default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub audit_log_max_bytes: u64,
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
    /// HTTP/2 streams (RPCs, watch streams) one client connection may have
    /// open at once (etcd's flag; its default is unbounded, secretd's is
    /// not: each open stream holds memory on the member).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// A client or peer connection with no request in flight for this long
    /// is closed (clients reconnect on their next request).
    #[arg(long, default_value = "2m", value_parser = secretd_client::format::parse_duration)]
    pub idle_connection_timeout: Duration,
    /// Before serving clients, compare this member's keyspace hash with
    /// its peers' at its revision, and refuse to start when outvoted
    /// (etcd's flag; on by default here, off in etcd).
    #[arg(long = "experimental-initial-corrupt-check", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub initial_corrupt_check: bool,
    /// How often the leader compares every member's keyspace hash at its
    /// revision and raises CORRUPT on a mismatch; 0 turns it off (etcd's
    /// flag; 5m by default here, off in etcd).
    #[arg(long = "experimental-corrupt-check-time", default_value = "5m", value_parser = secretd_client::format::parse_duration)]
    pub corrupt_check_time: Duration,
}

impl ServerFlags {
    pub(super) fn node_config(&self) -> Result<(NodeConfig, Vec<String>, Vec<String>)> {
        self.node_config_with(false)
    }

    /// The node's config and the client and peer URLs to listen on; with
    /// `listeners_optional` (an embedded member) those lists and the
    /// advertised client URLs may be empty.
    pub(super) fn node_config_with(
        &self,
        listeners_optional: bool,
    ) -> Result<(NodeConfig, Vec<String>, Vec<String>)> {
        self.check_bounds()?;
        let list = |flag: &str, s: &str| match listeners_optional && s.trim().is_empty() {
            true => Ok(Vec::new()),
            false => urls::parse_list(flag, s),
        };
        let client = list("--listen-client-urls", &self.listen_client_urls)?;
        let peer = list("--listen-peer-urls", &self.listen_peer_urls)?;
        let client_urls = list("--advertise-client-urls", &self.advertise_client_urls)?;
        let advertise_peer = urls::parse_list(
            "--initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?;
        let members = self.initial_members(&advertise_peer)?;
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
            max_response_bytes_in_flight: self.max_response_bytes_in_flight,
            max_write_answer_bytes: self.max_write_answer_bytes,
            max_answer_stall_ms: self.max_answer_stall.as_millis() as u64,
            request_timeout: Duration::from_millis(5000 + 2 * self.election_timeout),
            watch_progress_interval: self
                .watch_progress_notify_interval
                .max(Duration::from_millis(100)),
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            auth_token_ttl: Duration::from_secs(self.auth_token_ttl),
            force_new_cluster: self.force_new_cluster,
        };
        Ok((cfg, client, peer))
    }

    /// Flags whose values would make the member unsafe or unusable, refused
    /// before anything starts.
    fn check_bounds(&self) -> Result<()> {
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
        if self.max_response_bytes_in_flight < 1 << 20 {
            bail!("--max-response-bytes-in-flight must be at least 1 MiB");
        }
        if self.max_answer_stall < Duration::from_secs(1) {
            bail!("--max-answer-stall must be at least 1s");
        }
        if self.max_write_answer_bytes < 1 << 20 {
            bail!("--max-write-answer-bytes must be at least 1 MiB");
        }
        if self.max_client_connections < 2 || self.max_connections_per_identity == 0 {
            bail!("--max-client-connections must be at least 2 and --max-connections-per-identity at least 1");
        }
        if self.idle_connection_timeout < Duration::from_secs(1) {
            bail!("--idle-connection-timeout must be at least 1s");
        }
        Ok(())
    }

    /// The initial cluster (`--initial-cluster`, or this member alone at
    /// its advertised peer URLs), which must list this member at the URLs
    /// it advertises.
    fn initial_members(&self, advertise_peer: &[String]) -> Result<Vec<cluster::Member>> {
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
            let mut adv = advertise_peer.to_vec();
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
        Ok(members)
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
