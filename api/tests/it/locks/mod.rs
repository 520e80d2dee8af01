//! etcd's Lock and Election services (`v3lockpb`, `v3electionpb`), which
//! client libraries' `lock()` and `campaign()` call: through the generated
//! gRPC clients and the JSON gateway, across members, against etcd auth
//! and the reserved range, past every limit, beside etcdctl 3.5.1's own
//! `lock` and `elect` (which build the same keys by hand, through KV and
//! Watch), and side by side with etcd 3.5.1.
//!
//! - `services`: the services through their gRPC clients.
//! - `clients`: etcdctl's and the `etcd-client` crate's locks and elections.
//! - `rules`: auth, the reserved range and the bounds.
//! - `etcd35`: side by side with etcd 3.5.1.
//!
//! The request builders and waits here are shared by all four.

mod clients;
mod etcd35;
mod rules;
mod services;

use std::time::{Duration, Instant};

use secretd_client::pb::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseRevokeRequest,
    RangeRequest,
};
use secretd_client::pb::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use secretd_client::pb::v3lockpb::LockRequest;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::secs;

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id
}

async fn revoke(ch: &Channel, id: i64) {
    LeaseClient::new(ch.clone())
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("lease revoke");
}

/// The keys under `prefix`, oldest first.
async fn keys_under(ch: &Channel, prefix: &[u8]) -> Vec<Vec<u8>> {
    let r = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: prefix.to_vec(),
            range_end: secretd_client::prefix_end(prefix),
            keys_only: true,
            sort_order: 1,  // ascend
            sort_target: 2, // create
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs.into_iter().map(|kv| kv.key).collect()
}

/// Waits (bounded) until `ok` holds.
async fn eventually(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `prefix` holds `n` keys: a waiter's key is in
/// line.
async fn keys_in_line(ch: &Channel, prefix: &[u8], n: usize) {
    let what = format!("{n} keys under {}", String::from_utf8_lossy(prefix));
    eventually(&what, secs(10), async || {
        keys_under(ch, prefix).await.len() == n
    })
    .await;
}

/// A spawned call's answer, within `secs(10)`.
async fn answer<T>(
    call: tokio::task::JoinHandle<Result<tonic::Response<T>, Status>>,
    what: &str,
) -> Result<T, Status> {
    tokio::time::timeout(secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        .expect("the call's task")
        .map(tonic::Response::into_inner)
}

fn lock_req(name: &str, lease: i64) -> LockRequest {
    LockRequest {
        name: name.as_bytes().to_vec(),
        lease,
    }
}

fn campaign_req(name: &str, lease: i64, value: &str) -> CampaignRequest {
    CampaignRequest {
        name: name.as_bytes().to_vec(),
        lease,
        value: value.as_bytes().to_vec(),
    }
}

fn leader_req(name: &str) -> LeaderRequest {
    LeaderRequest {
        name: name.as_bytes().to_vec(),
    }
}

fn proclaim_req(leader: &LeaderKey, value: &str) -> ProclaimRequest {
    ProclaimRequest {
        leader: Some(leader.clone()),
        value: value.as_bytes().to_vec(),
    }
}

fn resign_req(leader: &LeaderKey) -> ResignRequest {
    ResignRequest {
        leader: Some(leader.clone()),
    }
}

/// etcd's error for a failed call: code and message.
fn err_of<T>(r: Result<T, Status>) -> (Code, String) {
    match r {
        Ok(_) => panic!("succeeded where an error was expected"),
        Err(e) => (e.code(), e.message().to_string()),
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
