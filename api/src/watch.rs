//! etcd's Watch service: one bidirectional stream carries many watchers.
//!
//! One task per stream owns both the client's requests and the hub's events
//! for that stream, and is the only writer of responses. That serializes
//! them: a watcher's `created` response always precedes its events, and
//! nothing is sent for a watcher after its `canceled` response.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use secretd_store::watch::{WatchMsg, WatchSpec, WatcherKey};
use secretd_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch,
    WatchCreateRequest, WatchRequest, WatchResponse,
};

/// Hub messages buffered per stream before its watchers fall back to
/// catch-up from storage.
const STREAM_EVENTS_MAX: usize = 1024;
/// Responses buffered towards the client.
const STREAM_RESPONSES_MAX: usize = 256;
/// Watchers one stream may hold.
const STREAM_WATCHERS_MAX: usize = 10_000;

pub struct WatchService {
    pub node: Arc<Node>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        Ok(Response::new(self.serve(req.into_inner())))
    }
}

/// Requests from a client: gRPC's stream, or the JSON gateway's body.
pub type Inbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl WatchService {
    /// One watch stream: requests in, responses out, until either side
    /// goes away.
    pub fn serve(
        &self,
        inbound: impl Stream<Item = Result<WatchRequest, Status>> + Send + 'static,
    ) -> ResponseStream {
        let (out_tx, out_rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        let stream = WatchStream {
            node: self.node.clone(),
            out: out_tx,
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(stream.run(Box::pin(inbound)));
        Box::pin(ReceiverStream::new(out_rx))
    }
}

struct WatchStream {
    node: Arc<Node>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// watch_id → hub key, for this stream's live watchers.
    watchers: HashMap<i64, WatcherKey>,
    next_id: i64,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Inbound<WatchRequest>) {
        use futures::StreamExt;
        let (hub_tx, mut hub_rx) = mpsc::channel::<WatchMsg>(STREAM_EVENTS_MAX);
        loop {
            let ok = tokio::select! {
                req = inbound.next() => match req {
                    Some(Ok(r)) => self.on_request(r, &hub_tx).await,
                    None | Some(Err(_)) => false, // client went away
                },
                Some(msg) = hub_rx.recv() => self.on_hub(msg).await,
                _ = self.out.closed() => false,
            };
            if !ok {
                break;
            }
        }
        for key in self.watchers.values() {
            self.node.hub().cancel(*key);
        }
    }

    async fn send(&self, resp: WatchResponse) -> bool {
        self.out.send(Ok(resp)).await.is_ok()
    }

    fn response(&self, revision: i64, watch_id: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.node.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    async fn on_request(&mut self, req: WatchRequest, hub_tx: &mpsc::Sender<WatchMsg>) -> bool {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c, hub_tx).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some(key) = self.watchers.remove(&c.watch_id) {
                    self.node.hub().cancel(key);
                }
                let mut r = self.response(self.node.mvcc().current_revision(), c.watch_id);
                r.canceled = true;
                self.send(r).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                let keys: Vec<_> = self.watchers.values().copied().collect();
                match self.node.hub().progress(&keys) {
                    // Not associated with one watcher: etcd uses id -1.
                    Some(rev) => self.send(self.response(rev, -1)).await,
                    None => true, // a watcher is catching up; its events will tell
                }
            }
            None => true,
        }
    }

    async fn create(&mut self, c: WatchCreateRequest, hub_tx: &mpsc::Sender<WatchMsg>) -> bool {
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
        if let Err(e) = crate::reserved::clamp(&c.key, &mut c.range_end) {
            return self.send(refuse(e.message())).await;
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
                self.watchers.insert(id, key);
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

    fn next_free_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn on_hub(&mut self, msg: WatchMsg) -> bool {
        if !self.watchers.contains_key(&msg.watch_id) {
            return true; // cancelled while the message was queued
        }
        let mut r = self.response(msg.revision, msg.watch_id);
        if msg.compact_revision > 0 {
            self.watchers.remove(&msg.watch_id);
            return self.send(compacted(r, msg.compact_revision)).await;
        }
        r.events = msg.events;
        self.send(r).await
    }
}

fn compacted(mut r: WatchResponse, compact_revision: i64) -> WatchResponse {
    r.canceled = true;
    r.compact_revision = compact_revision;
    r.cancel_reason = StoreError::Compacted { compact_revision }.to_string();
    r
}
