//! Member-to-member raft transport over gRPC.
//!
//! Sending: one task per peer owns a bounded queue and a long-lived client
//! stream; it drains whatever raft produced meanwhile into one batch. A full
//! queue or a dead connection drops messages and tells raft the peer is
//! unreachable: raft's own retransmission is the recovery, so the raft loop
//! never waits on the network.
//!
//! Receiving: every message is checked against the batch's sender and our
//! cluster and member ids before raft sees it; garbage ends the stream with
//! a clear error and is logged.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use secretd_store::node::{Node, Transport};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::raftpb::{raft_client::RaftClient, raft_server::Raft, RaftBatch, SendResponse};

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 8192;
/// Bytes in one batch on the wire.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest gRPC message the peer service accepts (one batch, with slack).
pub const PEER_MESSAGE_BYTES_MAX: usize = 2 * BATCH_BYTES_MAX + 1024 * 1024;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct GrpcTransport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    node: Arc<OnceLock<Weak<Node>>>,
}

impl GrpcTransport {
    /// Starts a sender task per peer (`id → peer URL`, excluding ourselves).
    pub fn start(my_id: u64, cluster_id: u64, peers: HashMap<u64, String>) -> Arc<GrpcTransport> {
        let node: Arc<OnceLock<Weak<Node>>> = Arc::new(OnceLock::new());
        let mut queues = HashMap::new();
        for (id, url) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(id, tx);
            tokio::spawn(peer_sender(my_id, cluster_id, id, url, rx, node.clone()));
        }
        Arc::new(GrpcTransport { queues, node })
    }

    /// Connects the transport to its node (for unreachable reports).
    pub fn attach(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn unreachable(&self, peer: u64) {
        report_unreachable(&self.node, peer);
    }
}

fn report_unreachable(node: &OnceLock<Weak<Node>>, peer: u64) {
    if let Some(n) = node.get().and_then(Weak::upgrade) {
        n.report_unreachable(peer);
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            match self.queues.get(&to) {
                Some(q) => {
                    if q.try_send(m).is_err() {
                        self.unreachable(to);
                    }
                }
                None => tracing::debug!(
                    peer = format_args!("{to:x}"),
                    "message for unknown peer dropped"
                ),
            }
        }
    }
}

async fn peer_sender(
    my_id: u64,
    cluster_id: u64,
    peer: u64,
    url: String,
    mut rx: mpsc::Receiver<Message>,
    node: Arc<OnceLock<Weak<Node>>>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true),
        Err(e) => {
            tracing::error!(peer = format_args!("{peer:x}"), %url, error = %e, "bad peer URL; not sending to it");
            return;
        }
    };
    loop {
        let channel = endpoint.connect_lazy();
        let mut client = RaftClient::new(channel)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let (btx, brx) = mpsc::channel::<RaftBatch>(16);
        let call =
            tokio::spawn(async move { client.send(Request::new(ReceiverStream::new(brx))).await });
        let mut sent_any = false;
        // Pump batches until the stream breaks.
        while let Some(first) = rx.recv().await {
            let mut batch = RaftBatch {
                from: my_id,
                cluster_id,
                messages: Vec::new(),
            };
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m.write_to_bytes() {
                    Ok(b) => {
                        bytes += b.len();
                        batch.messages.push(b);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode raft message"),
                }
                if bytes >= BATCH_BYTES_MAX {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if btx.send(batch).await.is_err() {
                report_unreachable(&node, peer);
                break;
            }
            if !sent_any {
                sent_any = true;
                backoff = RECONNECT_BACKOFF_MIN;
            }
        }
        if rx.is_closed() && rx.is_empty() {
            return; // transport dropped: member shutting down
        }
        match call.await {
            Ok(Err(status)) => {
                tracing::debug!(peer = format_args!("{peer:x}"), %status, "peer stream ended")
            }
            Ok(Ok(_)) => {}
            Err(e) => tracing::warn!(error = %e, "peer stream task failed"),
        }
        // Drop what queued up while disconnected: raft retransmits anyway,
        // and stale heartbeats only confuse the peer.
        while rx.try_recv().is_ok() {}
        report_unreachable(&node, peer);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// The receiving side: the `Raft` gRPC service.
pub struct RaftService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<SendResponse>, Status> {
        let remote = req.remote_addr();
        let mut stream = req.into_inner();
        let me = self.node.id();
        while let Some(batch) = stream.message().await? {
            if batch.cluster_id != self.node.cluster_id() {
                tracing::warn!(
                    ?remote,
                    cluster = format_args!("{:x}", batch.cluster_id),
                    "refused raft batch from another cluster"
                );
                return Err(Status::failed_precondition(format!(
                    "cluster id mismatch: this member belongs to cluster {:x}, the batch to {:x}",
                    self.node.cluster_id(),
                    batch.cluster_id
                )));
            }
            for bytes in &batch.messages {
                let m = Message::parse_from_bytes(bytes).map_err(|e| {
                    tracing::warn!(?remote, error = %e, "refused undecodable raft message");
                    Status::invalid_argument(format!("undecodable raft message: {e}"))
                })?;
                if m.from != batch.from || m.to != me {
                    tracing::warn!(
                        ?remote,
                        from = m.from,
                        to = m.to,
                        "refused misaddressed raft message"
                    );
                    return Err(Status::invalid_argument(format!(
                        "raft message from {:x} to {:x} in a batch from {:x} to {me:x}",
                        m.from, m.to, batch.from
                    )));
                }
                self.node.step(m);
            }
        }
        Ok(Response::new(SendResponse {}))
    }
}
