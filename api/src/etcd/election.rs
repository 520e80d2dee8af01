//! etcd's Election service (`v3electionpb.Election`), which client
//! libraries' `campaign()` and `observe()` call. Campaigners of election
//! `n` put `n/<lease id in hex>` with their value, bound to their lease;
//! the oldest key (lowest create revision) leads and its value is the
//! proclamation. etcd's steps exactly (`concurrency.Election`,
//! `concurrency.rs`), so the service and etcdctl's `elect` (which builds
//! the same keys by hand) take turns.
//!
//! Differences from etcd, on purpose: a campaigner whose key goes away
//! while it waits (its lease ended) is told so ("election: session is
//! expired") instead of being told it won; a failed campaign takes its
//! key back out of the queue (etcd does only when the client cancels);
//! Observe refuses up front what it may not read, and ends with the
//! error that stopped it, where etcd ends the stream without a word.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::mvcc::prefix_end;
use secretd_store::node::Node;
use secretd_store::watch::WatchSpec;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::etcd::auth::Who;
use crate::etcd::concurrency::{
    check_key, check_name, client_error, create_or_get, first_created, lease_key, prefix_of,
    proclaim, range_at, resign, via_client, wait_turn, Acting, HubWatchers, Limits, Slot, Undo,
    WaitEnd,
};
use crate::etcd::reserved;
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::{event::EventType, KeyValue};
use crate::pb::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest,
    LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};

/// etcd's words (`v3election`, `concurrency`), with code Unknown.
const MISSING_LEADER: &str = "\"leader\" field must be provided";
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
/// Ours: etcd answers a campaign whose key went away as if it had won.
const SESSION_EXPIRED: &str = "election: session is expired";

/// Answers buffered towards one Observe client; past it the stream's
/// watcher waits (and its events catch up from storage).
const OBSERVE_RESPONSES_MAX: usize = 16;
/// Hub messages one Observe stream's watcher holds before catching up
/// from storage.
const OBSERVE_EVENTS_MAX: usize = 64;

pub struct ElectionService {
    pub node: Arc<Node>,
    /// The member's counts of waiters (shared with Lock) and observers.
    pub limits: Arc<Limits>,
}

pub type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

/// `name/`, refused if it reaches into the reserved range.
fn election_prefix(name: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Status> {
    check_name("election", name)?;
    let prefix = prefix_of(name);
    let mut end = prefix_end(&prefix);
    reserved::clamp(&prefix, &mut end)?;
    Ok((prefix, end))
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let _slot = self.limits.waiter()?;
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let r = req.into_inner();
        let (prefix, _) = election_prefix(&r.name)?;
        let mut a = Acting::new(self.node.clone(), who);
        let (header, leader) = campaign(&mut a, r.name, &prefix, r.lease, &r.value).await?;
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let r = req.into_inner();
        let leader = r.leader.ok_or_else(|| client_error(MISSING_LEADER))?;
        check_key("election", &leader.key)?;
        reserved::clamp(&leader.key, &mut Vec::new())?;
        let mut a = Acting::new(self.node.clone(), who);
        // etcd's session: lease 0 puts the value under a new 60 s lease.
        let lease = a.session_lease(leader.lease).await?;
        match proclaim(&mut a, &leader.key, leader.rev, lease, &r.value).await? {
            Some(header) => Ok(Response::new(ProclaimResponse {
                header: Some(header),
            })),
            None => Err(client_error(NOT_LEADER)),
        }
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let (prefix, _) = election_prefix(&req.get_ref().name)?;
        let mut a = Acting::new(self.node.clone(), who);
        let resp = a.range(first_created(&prefix)).await?;
        match resp.kvs.into_iter().next() {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: resp.header,
                kv: Some(kv),
            })),
            None => Err(client_error(NO_LEADER)),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let slot = self.limits.observer()?;
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let (prefix, end) = election_prefix(&req.get_ref().name)?;
        let mut a = Acting::new(self.node.clone(), who);
        a.may_read(&prefix, &end).await?;
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_MAX);
        tokio::spawn(observe(a, prefix, end, tx, slot));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let leader = req
            .into_inner()
            .leader
            .ok_or_else(|| client_error(MISSING_LEADER))?;
        check_key("election", &leader.key)?;
        let mut a = Acting::new(self.node.clone(), who);
        let header = resign(&mut a, leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse {
            header: Some(header),
        }))
    }
}

/// etcd's `Election.Campaign`: the header of the campaign's own txn, and
/// what holds the leadership.
async fn campaign(
    a: &mut Acting,
    name: Vec<u8>,
    prefix: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<(ResponseHeader, LeaderKey), Status> {
    let lease = a.session_lease(lease).await?;
    let key = lease_key(prefix, lease);
    let resp = a.txn(create_or_get(&key, value, lease, &[])).await?;
    let header = resp.header.unwrap_or_default();
    let mut rev = header.revision;
    if !resp.succeeded {
        // This lease campaigns already: same key, same place in line, and
        // the value brought up to date.
        let Some(kv) = range_at(&resp, 0).and_then(|r| r.kvs.first()) else {
            return Err(Status::internal("campaign key vanished inside its txn"));
        };
        rev = kv.create_revision;
        if kv.value != value {
            let done = proclaim(a, &key, rev, lease, value).await;
            if !matches!(done, Ok(Some(_))) {
                let _ = resign(a, key, rev).await;
                return Err(done.err().unwrap_or_else(|| client_error(NOT_LEADER)));
            }
        }
    }
    let mut undo = a.undo_on_drop(Undo::Resign {
        key: key.clone(),
        rev,
    });
    match wait_turn(a, prefix, &key, rev).await {
        Ok(WaitEnd::Clear(_)) => {
            undo.disarm();
            Ok((
                header,
                LeaderKey {
                    name,
                    key,
                    rev,
                    lease,
                },
            ))
        }
        Ok(WaitEnd::MineGone) => {
            undo.disarm();
            Err(client_error(SESSION_EXPIRED))
        }
        Err(e) => {
            undo.run_now(a).await;
            Err(e)
        }
    }
}

/// etcd's `Election.Observe`, until the client goes away: the leader of
/// now (or the first to come), each of its proclamations, and when its
/// key goes, the next leader.
async fn observe(
    mut a: Acting,
    prefix: Vec<u8>,
    end: Vec<u8>,
    tx: mpsc::Sender<Result<LeaderResponse, Status>>,
    _slot: Slot,
) {
    loop {
        let round = tokio::select! {
            r = observe_leader(&mut a, &prefix, &end, &tx) => r,
            _ = tx.closed() => return,
        };
        if let Err(e) = round {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

/// One leader: found, sent, followed until its key is deleted. `Ok` to
/// look for the next one (also after a compaction cut a watch short).
async fn observe_leader(
    a: &mut Acting,
    prefix: &[u8],
    end: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    let resp = a.range(first_created(prefix)).await?;
    let at = resp.header.map(|h| h.revision).unwrap_or_default();
    let kv = match resp.kvs.into_iter().next() {
        Some(kv) => kv,
        None => match first_put(a, prefix, end, at + 1).await? {
            Some(kv) => kv,
            None => return Ok(()),
        },
    };
    // etcd's header for a leader found by watching is the put's revision.
    let at = at.max(kv.mod_revision);
    let key = kv.key.clone();
    send(a, prefix, end, tx, at, kv).await?;
    follow(a, prefix, end, &key, at + 1, tx).await
}

async fn send(
    a: &mut Acting,
    prefix: &[u8],
    end: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
    revision: i64,
    kv: KeyValue,
) -> Result<(), Status> {
    // A stream outlives auth changes: its user must still read the
    // election at each answer.
    a.may_read(prefix, end).await?;
    let resp = LeaderResponse {
        header: Some(a.node.header(revision)),
        kv: Some(kv),
    };
    // A closed stream ends the loop through `tx.closed()`.
    let _ = tx.send(Ok(resp)).await;
    Ok(())
}

/// The first key put under an empty election from revision `from` on;
/// `None` if the watch could not say.
async fn first_put(
    a: &mut Acting,
    prefix: &[u8],
    end: &[u8],
    from: i64,
) -> Result<Option<KeyValue>, Status> {
    let node = a.node.clone();
    let (sink, mut inbox) = secretd_store::watch::inbox(OBSERVE_EVENTS_MAX);
    let mut watchers = HubWatchers::new(&node);
    let spec = WatchSpec {
        key: prefix.to_vec(),
        range_end: end.to_vec(),
        start_revision: from,
        no_delete: true,
        ..Default::default()
    };
    if !watchers.add(spec, 0, sink)? {
        return Ok(None);
    }
    loop {
        let Some(batch) = inbox.recv().await else {
            return Err(Status::unavailable("election watch ended"));
        };
        for msg in batch {
            if msg.compact_revision > 0 {
                return Ok(None);
            }
            if let Some(kv) = msg.events.iter().find_map(|e| e.decode()?.kv) {
                return Ok(Some(kv));
            }
        }
    }
}

/// Sends every new value of the leader's `key` from revision `from` on,
/// until it is deleted.
async fn follow(
    a: &mut Acting,
    prefix: &[u8],
    end: &[u8],
    key: &[u8],
    from: i64,
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    let node = a.node.clone();
    let (sink, mut inbox) = secretd_store::watch::inbox(OBSERVE_EVENTS_MAX);
    let mut watchers = HubWatchers::new(&node);
    let spec = WatchSpec {
        key: key.to_vec(),
        start_revision: from,
        ..Default::default()
    };
    if !watchers.add(spec, 0, sink)? {
        return Ok(());
    }
    loop {
        let Some(batch) = inbox.recv().await else {
            return Err(Status::unavailable("election watch ended"));
        };
        for msg in batch {
            if msg.compact_revision > 0 {
                return Ok(());
            }
            for ev in msg.events.iter().filter_map(|e| e.decode()) {
                if ev.r#type == EventType::Delete as i32 {
                    return Ok(());
                }
                if let Some(kv) = ev.kv {
                    send(a, prefix, end, tx, msg.revision, kv).await?;
                }
            }
        }
    }
}
