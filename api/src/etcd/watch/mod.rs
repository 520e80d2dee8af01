//! etcd's Watch service: one bidirectional stream carries many watchers.
//!
//! One task per stream owns both the client's requests and the hub's events
//! for that stream, and is the only writer of responses. That serializes
//! them: a watcher's `created` response always precedes its events, and
//! nothing is sent for a watcher after its `canceled` response.
//!
//! Once etcd auth is enabled, a watch is created only over a range its
//! user may read in full (else it is created and cancelled at once with
//! "permission denied", as etcd does). Unlike etcd, a live watcher is
//! checked again when users or roles change, and cancelled the same way
//! once its user may no longer read its range: a revoked permission stops
//! the events, not just new watches.
//!
//! - `wire`: a response whose events the hub encoded once (`WatchOut`).
//! - `grpc`: this service on gRPC, sending those responses as they are.
//!
//! The JSON gateway calls `WatchService::serve` directly.

pub mod grpc;
pub mod wire;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use secretd_store::watch::{WatchMsg, WatchSink, WatchSpec, WatcherKey};
use secretd_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::etcd::auth::Who;
use crate::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use wire::WatchOut;

/// Hub messages buffered per stream before its watchers fall back to
/// catch-up from storage.
const STREAM_EVENTS_MAX: usize = 1024;
/// Batches of responses buffered towards the client (a batch is one
/// request's answer, or one hub batch: at most one response per watcher).
const STREAM_RESPONSE_BATCHES_MAX: usize = 16;
/// Watchers one stream may hold.
const STREAM_WATCHERS_MAX: usize = 10_000;

pub struct WatchService {
    pub node: Arc<Node>,
}

/// Responses towards the client, events already encoded (served on gRPC
/// by `grpc`, decoded again by the JSON gateway).
type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchOut, Status>> + Send>>;

/// Requests from a client: gRPC's stream, or the JSON gateway's body.
pub type Inbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WatchService {
    /// One watch stream: requests in, responses out, until the client goes
    /// away. Its requests ending is not that: a client that half-closed
    /// keeps its watchers, as with etcd.
    pub fn serve(
        &self,
        inbound: impl Stream<Item = Result<WatchRequest, Status>> + Send + 'static,
        who: Who,
    ) -> ResponseStream {
        let (out_tx, out_rx) = mpsc::channel(STREAM_RESPONSE_BATCHES_MAX);
        let stream = WatchStream {
            node: self.node.clone(),
            out: out_tx,
            watchers: HashMap::new(),
            next_id: 0,
            who,
        };
        tokio::spawn(stream.run(Box::pin(inbound)));
        use futures::StreamExt;
        Box::pin(
            ReceiverStream::new(out_rx)
                .flat_map(|batch: Vec<WatchOut>| futures::stream::iter(batch.into_iter().map(Ok))),
        )
    }
}

struct WatchStream {
    node: Arc<Node>,
    out: mpsc::Sender<Vec<WatchOut>>,
    /// watch_id → hub key and watched range, for this stream's live
    /// watchers.
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
    /// The etcd user the stream acts as, and the auth state its watchers
    /// were last checked against.
    who: Who,
}

struct Watcher {
    key: WatcherKey,
    range: (Vec<u8>, Vec<u8>),
}

impl WatchStream {
    async fn run(mut self, mut inbound: Inbound<WatchRequest>) {
        use futures::StreamExt;
        let (hub_tx, mut hub_rx) = secretd_store::watch::inbox(STREAM_EVENTS_MAX);
        // A client may half-close its side once it has sent its requests:
        // its watchers live on, as etcd's do, until it goes away (the
        // response stream is dropped) or the stream fails.
        let mut requests_open = true;
        loop {
            let ok = tokio::select! {
                req = inbound.next(), if requests_open => match req {
                    Some(Ok(r)) => self.on_request(r, &hub_tx).await,
                    None => {
                        requests_open = false;
                        true
                    }
                    Some(Err(_)) => false, // the stream broke: the client is gone
                },
                Some(batch) = hub_rx.recv() => self.on_hub(batch).await,
                _ = self.out.closed() => false,
            };
            if !ok {
                break;
            }
        }
        for w in self.watchers.values() {
            self.node.hub().cancel(w.key);
        }
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.out.send(vec![WatchOut::new(resp)]).await.is_ok()
    }

    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.node.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_request(&mut self, req: WatchRequest, hub_tx: &WatchSink) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c, hub_tx).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some(w) = self.watchers.remove(&c.watch_id) {
                    self.node.hub().cancel(w.key);
                }
                let mut r = self.response(self.node.mvcc().current_revision(), c.watch_id);
                r.canceled = true;
                self.send(r).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let keys: Vec<_> = self.watchers.values().map(|w| w.key).collect();
                match self.node.hub().progress(&keys) {
                    // Not associated with one watcher: etcd uses id -1.
                    Some(rev) => self.send(self.response(rev, -1)).await,
                    None => true, // a watcher is catching up; its events will tell
                }
            }
            None => true,
        }
    }

    async fn create(&mut self, c: WatchCreateRequest, hub_tx: &WatchSink) -> bool {
        // Checked against the auth state of now, not the stream's start.
        if !self.recheck_auth().await {
            return false;
        }
        let current = self.node.mvcc().current_revision();
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            self.next_free_id()
        };
        let refuse = |reason: &str| {
            let mut r = self.response(current, id);
            r.created = true;
            r.canceled = true;
            r.cancel_reason = reason.to_string();
            r
        };
        if c.key.is_empty() {
            return self.send(refuse("etcdserver: key is not provided")).await;
        }
        let mut c = c;
        if let Err(e) = crate::etcd::reserved::clamp(&c.key, &mut c.range_end) {
            return self.send(refuse(e.message())).await;
        }
        if let Err(e) = self.who.read(&c.key, &c.range_end) {
            return self.send(refuse(&denied(&e))).await;
        }
        if self.watchers.contains_key(&id) {
            return self
                .send(refuse("etcdserver: watch ID already in use"))
                .await;
        }
        if self.watchers.len() >= STREAM_WATCHERS_MAX {
            return self
                .send(refuse("etcdserver: too many watchers on one stream"))
                .await;
        }
        let range = (c.key.clone(), c.range_end.clone());
        let spec = WatchSpec {
            key: c.key,
            range_end: c.range_end,
            start_revision: c.start_revision,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
        };
        match self.node.hub().watch(spec, id, hub_tx.clone()) {
            Ok(key) => {
                self.watchers.insert(id, Watcher { key, range });
                let mut r = self.response(current, id);
                r.created = true;
                self.send(r).await
            }
            Err(StoreError::Compacted { compact_revision }) => {
                // etcd creates the watcher, then cancels it at once.
                let mut r = self.response(current, id);
                r.created = true;
                if !self.send(r).await {
                    return false;
                }
                self.send(compacted(self.response(current, id), compact_revision))
                    .await
            }
            Err(e) => self.send(refuse(&e.to_string())).await,
        }
    }

    /// After an auth change: cancels, with etcd's "permission denied",
    /// every watcher whose user may no longer read its whole range.
    async fn recheck_auth(&mut self) -> bool {
        if !self.who.auth_changed(&self.node) {
            return true;
        }
        let fresh = self.who.refresh(&self.node).await;
        let mut lost: Vec<(i64, String)> = Vec::new();
        match &fresh {
            Ok(w) => {
                for (id, watcher) in &self.watchers {
                    if let Err(e) = w.read(&watcher.range.0, &watcher.range.1) {
                        lost.push((*id, denied(&e)));
                    }
                }
            }
            Err(e) => lost.extend(self.watchers.keys().map(|id| (*id, denied(e)))),
        }
        if let Ok(w) = fresh {
            self.who = w;
        }
        let current = self.node.mvcc().current_revision();
        for (id, reason) in lost {
            if let Some(w) = self.watchers.remove(&id) {
                self.node.hub().cancel(w.key);
            }
            let mut r = self.response(current, id);
            r.canceled = true;
            r.cancel_reason = reason;
            if !self.send(r).await {
                return false;
            }
        }
        true
    }

    fn next_free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// One publish's (or one catch-up's) messages for this stream's
    /// watchers, answered as one batch of responses.
    async fn on_hub(&mut self, batch: Vec<WatchMsg>) -> bool {
        if !self.recheck_auth().await {
            return false;
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut header: Option<crate::pb::etcdserverpb::ResponseHeader> = None;
        for msg in batch {
            if !self.watchers.contains_key(&msg.watch_id) {
                // Cancelled while the message was queued, or its user may
                // no longer read it.
                continue;
            }
            // A hub batch is one revision: one header for all of it.
            let h = match header {
                Some(h) if h.revision == msg.revision => h,
                _ => *header.insert(self.node.header(msg.revision)),
            };
            let head = WatchResponse {
                header: Some(h),
                watch_id: msg.watch_id,
                ..Default::default()
            };
            if msg.compact_revision > 0 {
                self.watchers.remove(&msg.watch_id);
                out.push(WatchOut::new(compacted(head, msg.compact_revision)));
                continue;
            }
            out.push(WatchOut {
                head,
                events: msg.events,
            });
        }
        out.is_empty() || self.out.send(out).await.is_ok()
    }
}

/// etcd's cancel reason for a refused watch: the gRPC error as Go prints
/// it.
fn denied(e: &Status) -> String {
    format!("rpc error: code = {:?} desc = {}", e.code(), e.message())
}

fn compacted(mut r: WatchResponse, compact_revision: i64) -> WatchResponse {
    r.canceled = true;
    r.compact_revision = compact_revision;
    r.cancel_reason = StoreError::Compacted { compact_revision }.to_string();
    r
}
