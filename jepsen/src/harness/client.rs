//! The harness's etcd v3 client: one lazily connected channel per node,
//! every request bounded by a timeout. How an error is recorded is the
//! workloads' business: a write that times out may have happened.

use std::time::Duration;

use anyhow::Result;
use tonic::transport::{Channel, Endpoint};

pub use secretd_client::pb;

pub use pb::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, maintenance_client::MaintenanceClient,
    watch_client::WatchClient,
};
use pb::etcdserverpb::{MemberListRequest, StatusRequest};

/// A request that takes longer is abandoned and recorded as unknown.
pub const REQUEST_TIMEOUT_MS: u64 = 1500;
const CONNECT_TIMEOUT_MS: u64 = 1000;

#[derive(Clone)]
pub struct Clients {
    pub urls: Vec<String>,
    channels: Vec<Channel>,
}

impl Clients {
    pub fn new(urls: Vec<String>) -> Result<Clients> {
        let channels = urls
            .iter()
            .map(|u| Ok(endpoint(u)?.connect_lazy()))
            .collect::<Result<_>>()?;
        Ok(Clients { urls, channels })
    }

    pub fn kv(&self, node: usize) -> KvClient<Channel> {
        KvClient::new(self.channels[node].clone())
    }

    pub fn channel(&self, node: usize) -> Channel {
        self.channels[node].clone()
    }

    pub fn cluster(&self, node: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channels[node].clone())
    }

    /// A watch stream needs no per-request deadline: its own channel,
    /// without the timeout layer.
    pub fn watch(&self, node: usize) -> Result<WatchClient<Channel>> {
        let ch = Endpoint::from_shared(self.urls[node].clone())?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(WatchClient::new(ch))
    }

    /// The node that is raft leader, as the reachable nodes report it.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = vec![None; self.channels.len()];
        let mut leader = None;
        for (i, ch) in self.channels.iter().enumerate() {
            if let Ok(r) = MaintenanceClient::new(ch.clone())
                .status(StatusRequest {})
                .await
            {
                let r = r.into_inner();
                ids[i] = r.header.map(|h| h.member_id);
                if r.leader != 0 {
                    leader = Some(r.leader);
                }
            }
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// The member list as node `via` reports it (None: no answer).
    async fn members(&self, via: usize) -> Option<Vec<pb::etcdserverpb::Member>> {
        let r = self
            .cluster(via)
            .member_list(MemberListRequest { linearizable: true })
            .await
            .ok()?;
        Some(r.into_inner().members)
    }

    /// Whether node `via` lists a member with this peer URL.
    pub async fn has_peer_url(&self, via: usize, url: &str) -> Option<bool> {
        let members = self.members(via).await?;
        Some(
            members
                .iter()
                .any(|m| m.peer_ur_ls.iter().any(|u| u == url)),
        )
    }

    /// Member id of the member called `name`, asking node `via`.
    pub async fn member_id(&self, via: usize, name: &str) -> Option<u64> {
        let members = self.members(via).await?;
        members.iter().find(|m| m.name == name).map(|m| m.id)
    }
}

fn endpoint(url: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .tcp_nodelay(true))
}

/// Whether the request certainly never reached a server: the connection
/// could not be made. Anything else (a timeout, a reset mid-request) may
/// have been applied.
pub fn never_sent(s: &tonic::Status) -> bool {
    let text = format!("{s:?}");
    s.code() == tonic::Code::Unavailable
        && (text.contains("Connection refused")
            || text.contains("tcp connect error")
            || text.contains("No route to host"))
}

/// How a write's error is recorded: failed if it never left, else unknown.
pub fn write_error(s: &tonic::Status) -> (super::history::Type, String) {
    let kind = if never_sent(s) {
        super::history::Type::Fail
    } else {
        super::history::Type::Info
    };
    (kind, error_text(s))
}

/// One line for a gRPC error.
pub fn error_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    }
}
