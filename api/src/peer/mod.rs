//! Member to member, on the peer port: the raft transport and the gRPC
//! client of other members.
//!
//! Sending (here): one task per peer owns a bounded queue and a long-lived raft
//! stream (`raw`: length-prefixed messages over TCP or TLS, no
//! HTTP/2); it drains whatever raft produced meanwhile into one write.
//! A peer that does not take the raw stream and says (`ClusterInfo`'s
//! `wire_version`) it speaks peer wire 1 (a release before the raw stream,
//! d63c56e and earlier) gets the same messages over gRPC `Raft.Send`, as
//! that release sent them, until the stream breaks; then the raw stream is
//! tried again (the peer may have been upgraded meanwhile). This is what
//! lets a cluster be upgraded, or rolled back, one member at a time.
//! Snapshots, cluster info, promotions and KEK fetches stay on gRPC, and
//! so does the receiving side of the old `Send` stream. A full
//! queue or a dead connection drops messages and tells raft the peer is
//! unreachable: raft's own retransmission is the recovery, so the raft loop
//! never waits on the network.
//!
//! Receiving (`service`, and `raw` for the stream): every message is
//! checked against the batch's sender and our cluster and member ids
//! before raft sees it; garbage ends the stream with a clear error and is
//! logged.
//!
//! - `raw`: the raft stream itself, both ends (sender's `connect`/`pump`,
//!   receiver's `serve`).
//! - `service`: the `Raft` gRPC service, the receiving side.
//! - `corruption`: members comparing keyspace hashes over this port.
//!
//! The service and the hash check sit beside the raw stream: `raw` hands
//! batches to `service`, `service` answers hash requests with
//! `corruption`; neither is used back. Everything here may use
//! connections (`conn`), TLS and the role matrix, never a client-facing
//! service.

pub mod corruption;
pub mod raw;
pub mod service;
mod wires;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use secretd_store::node::{Node, Transport};
use secretd_store::snapshot;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::pb::raftpb::{
    raft_client::RaftClient, ClusterInfoRequest, ClusterInfoResponse, PromoteMemberRequest,
    RaftBatch, SnapshotChunk,
};

/// Bytes of snapshot file per chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 8192;
/// Bytes in one batch on the wire.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest gRPC message the peer service accepts (one batch, with slack).
pub const PEER_MESSAGE_BYTES_MAX: usize = 2 * BATCH_BYTES_MAX + 1024 * 1024;
/// The peer wire this member speaks. 1: the gRPC `Raft` service only
/// (d63c56e and earlier). 2: also the raw raft stream (`raw`), and
/// `ClusterInfo` reports the version; `Send` is still served, and still
/// used towards a peer of wire 1. 3: the wire of 2; apply measures a
/// write's answer against the bound its entry carries
/// (`secretd_store::transport::wire`). 4: the wire of 2; apply decides a
/// txn before it writes when its entry says so. A newer member must keep
/// speaking every version the previous release spoke (README, "Upgrades").
pub const PEER_WIRE_VERSION: u32 = 5;
/// The version a peer that takes the raw stream speaks at least; the rest
/// is asked of it (`learn_wire`).
const RAW_STREAM_WIRE: u32 = 2;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

type PeerQueues = HashMap<u64, PeerQueue>;

/// The way to one peer's sender task: its queue, and a bell that cuts a
/// reconnect backoff short when the peer is seen up (`peer_up`).
struct PeerQueue {
    tx: mpsc::Sender<Message>,
    wake: Arc<tokio::sync::Notify>,
}

/// What a sender task reads: the queue, and the bell.
struct Inbox {
    rx: mpsc::Receiver<Message>,
    wake: Arc<tokio::sync::Notify>,
}
use wires::PeerWires;

pub struct GrpcTransport {
    /// Per-peer queues and URLs; replaced when membership changes.
    peers: parking_lot::RwLock<(PeerQueues, HashMap<u64, String>)>,
    wires: PeerWires,
    node: Arc<OnceLock<Weak<Node>>>,
    my_id: u64,
    cluster_id: u64,
    snap_dir: PathBuf,
    /// `send` runs on the raft thread, outside the runtime: spawn through
    /// this handle.
    runtime: tokio::runtime::Handle,
}

impl GrpcTransport {
    /// Starts a sender task per peer (`id → peer URL`, excluding ourselves).
    /// Must be called inside the tokio runtime.
    /// `snap_dir` is where this member's snapshot files are.
    pub fn start(
        my_id: u64,
        cluster_id: u64,
        peers: HashMap<u64, String>,
        snap_dir: PathBuf,
        wires_file: Option<PathBuf>,
    ) -> Arc<GrpcTransport> {
        let node: Arc<OnceLock<Weak<Node>>> = Arc::new(OnceLock::new());
        let runtime = tokio::runtime::Handle::current();
        let t = GrpcTransport {
            peers: Default::default(),
            wires: PeerWires::load(wires_file),
            node,
            my_id,
            cluster_id,
            snap_dir,
            runtime,
        };
        t.update_peers(peers.into_iter().collect());
        Arc::new(t)
    }

    /// Streams a snapshot to its follower off the raft thread, and reports
    /// the outcome to raft.
    fn send_snapshot(&self, m: Message) {
        let to = m.to;
        let Some(url) = self.peers.read().1.get(&to).cloned() else {
            return;
        };
        let index = m.get_snapshot().get_metadata().index;
        let path = snapshot::file_path(&self.snap_dir, index);
        let (from, cluster_id, node) = (self.my_id, self.cluster_id, self.node.clone());
        self.runtime.spawn(async move {
            let result = stream_snapshot(from, cluster_id, &url, &m, &path).await;
            if let Err(e) = &result {
                tracing::warn!(peer = format_args!("{to:x}"), index, error = %e, "snapshot not delivered");
            } else {
                tracing::info!(peer = format_args!("{to:x}"), index, "snapshot delivered");
            }
            if let Some(n) = node.get().and_then(Weak::upgrade) {
                n.report_snapshot(to, result.is_ok());
            }
        });
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
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(m);
                continue;
            }
            match self.peers.read().0.get(&to) {
                Some(q) => {
                    if q.tx.try_send(m).is_err() {
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

    /// Starts senders for new peers, stops those of removed ones, and
    /// restarts a sender whose peer URL changed.
    fn update_peers(&self, peers: Vec<(u64, String)>) {
        let mut guard = self.peers.write();
        let (queues, urls) = &mut *guard;
        let wanted: HashMap<u64, String> = peers
            .into_iter()
            .filter(|(id, _)| *id != self.my_id)
            .collect();
        queues.retain(|id, _| wanted.get(id).is_some_and(|u| urls.get(id) == Some(u)));
        for (id, url) in &wanted {
            if !queues.contains_key(id) {
                let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
                let wake = Arc::new(tokio::sync::Notify::new());
                queues.insert(
                    *id,
                    PeerQueue {
                        tx,
                        wake: wake.clone(),
                    },
                );
                self.runtime.spawn(peer_sender(
                    self.my_id,
                    self.cluster_id,
                    *id,
                    url.clone(),
                    Inbox { rx, wake },
                    self.node.clone(),
                    self.wires.clone(),
                ));
            }
        }
        self.wires.retain(|id| wanted.contains_key(&id));
        *urls = wanted;
    }

    /// Peers not known to speak peer wire `wire`: older releases, or
    /// members neither this run nor an earlier one has heard it from
    /// (`wires`).
    fn peers_below(&self, wire: u32) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .peers
            .read()
            .1
            .keys()
            .filter(|id| self.wires.get(**id).is_none_or(|v| v < wire))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    fn peer_up(&self, id: u64) {
        if let Some(q) = self.peers.read().0.get(&id) {
            // `notify_one` keeps the permit if the sender is not waiting
            // yet: a peer seen up while its sender is mid-attempt still
            // shortens the backoff that follows.
            q.wake.notify_one();
        }
    }
}

async fn stream_snapshot(
    from: u64,
    cluster_id: u64,
    url: &str,
    m: &Message,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut source = SnapshotSource::open(path).await?;
    let channel = crate::tls::peer_endpoint(url)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let mut client = RaftClient::new(channel).max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let first = SnapshotChunk {
        from,
        cluster_id,
        message: m.write_to_bytes()?.into(),
        data: Vec::new(),
    };
    let call = tokio::spawn(async move {
        client
            .send_snapshot(Request::new(ReceiverStream::new(rx)))
            .await
    });
    tx.send(first).await?;
    loop {
        let Some(buf) = source.next_chunk().await? else {
            break;
        };
        if tx
            .send(SnapshotChunk {
                from,
                cluster_id,
                message: Default::default(),
                data: buf,
            })
            .await
            .is_err()
        {
            break; // the call ended early; its result says why
        }
    }
    drop(tx);
    call.await??;
    Ok(())
}

/// Waits out `backoff` before dialling a peer again, or less if the peer
/// connects to us meanwhile (it is up: try it now; a peer cannot keep us
/// dialling faster than its own connections). Returns the next backoff.
async fn wait_to_redial(backoff: Duration, wake: &tokio::sync::Notify) -> Duration {
    let waited = tokio::select! {
        _ = tokio::time::sleep(backoff) => backoff,
        _ = wake.notified() => RECONNECT_BACKOFF_MIN,
    };
    (waited * 2).min(RECONNECT_BACKOFF_MAX)
}

/// A snapshot file to stream: whole on disk, or still being written
/// (`secretd_store::growing`), read up to what is written so far.
struct SnapshotSource {
    file: tokio::fs::File,
    growing: Option<Arc<secretd_store::growing::Progress>>,
    sent: u64,
}

/// How long a sender waits for a growing file to grow before looking again.
const GROWING_POLL: Duration = Duration::from_millis(2);

impl SnapshotSource {
    async fn open(path: &std::path::Path) -> anyhow::Result<SnapshotSource> {
        // A file may finish (and leave the registry) between the two
        // looks: then it is at its final path on the next.
        for _ in 0..2 {
            if let Some((tmp, progress)) = secretd_store::growing::lookup(path) {
                if let Ok(file) = tokio::fs::File::open(&tmp).await {
                    return Ok(SnapshotSource {
                        file,
                        growing: Some(progress),
                        sent: 0,
                    });
                }
            }
            match tokio::fs::File::open(path).await {
                Ok(file) => {
                    return Ok(SnapshotSource {
                        file,
                        growing: None,
                        sent: 0,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "snapshot file {} is neither written nor being written",
            path.display()
        )
    }

    /// The next chunk, or `None` at the end of a complete file.
    async fn next_chunk(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        let limit = loop {
            let Some(p) = &self.growing else {
                break SNAPSHOT_CHUNK_BYTES as u64;
            };
            // Read before asking for the outcome: a file that is done has
            // every byte counted.
            let written = p.written();
            if written > self.sent {
                break written - self.sent;
            }
            match p.outcome() {
                None => tokio::time::sleep(GROWING_POLL).await,
                Some(Ok(len)) if len <= self.sent => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(why)) => anyhow::bail!("{why}"),
            }
        };
        let mut buf = vec![0u8; limit.min(SNAPSHOT_CHUNK_BYTES as u64) as usize];
        let n = self.file.read(&mut buf).await?;
        if n == 0 {
            if self.growing.is_some() {
                anyhow::bail!("the snapshot file ended before its writer said it did");
            }
            return Ok(None);
        }
        buf.truncate(n);
        self.sent += n as u64;
        Ok(Some(buf))
    }
}

async fn peer_sender(
    my_id: u64,
    cluster_id: u64,
    peer: u64,
    url: String,
    inbox: Inbox,
    node: Arc<OnceLock<Weak<Node>>>,
    wires: PeerWires,
) {
    let Inbox { mut rx, wake } = inbox;
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // A refusal is a configuration problem: say so once per reason, not
    // at every retry.
    let mut last_refusal = String::new();
    let mut said_legacy = false;
    loop {
        match raw::connect(&url, my_id, cluster_id, peer).await {
            Ok(io) => {
                backoff = RECONNECT_BACKOFF_MIN;
                last_refusal.clear();
                if raw_stream_up(&wires, peer, &url) {
                    said_legacy = false;
                }
                if let Err(e) = raw::pump(io, &mut rx).await {
                    tracing::debug!(peer = format_args!("{peer:x}"), error = %e, "raft stream ended");
                }
            }
            Err(raw::ConnectError::Refused(why)) => {
                if why != last_refusal {
                    tracing::warn!(peer = format_args!("{peer:x}"), %url, reason = %why, "the peer refused our raft stream");
                    last_refusal = why;
                }
            }
            Err(raw::ConnectError::NotRaw(why)) => match peer_wire(&url).await {
                Ok(v) if v < PEER_WIRE_VERSION => {
                    wires.learnt(peer, v);
                    if !said_legacy {
                        tracing::info!(peer = format_args!("{peer:x}"), %url, peer_wire = v, our_wire = PEER_WIRE_VERSION,
                            "the peer runs an older release (no raw raft stream); sending over gRPC Raft.Send");
                        said_legacy = true;
                    }
                    backoff = RECONNECT_BACKOFF_MIN;
                    send_grpc(my_id, cluster_id, peer, &url, &mut rx, &node).await;
                }
                Ok(v) => {
                    tracing::debug!(peer = format_args!("{peer:x}"), %url, peer_wire = v, reason = %why, "the raft stream failed");
                }
                Err(e) => {
                    tracing::debug!(peer = format_args!("{peer:x}"), %url, error = %e, reason = %why, "peer unreachable");
                }
            },
            Err(raw::ConnectError::Unreachable(e)) => {
                tracing::debug!(peer = format_args!("{peer:x}"), %url, error = %e, "peer unreachable");
            }
        }
        if rx.is_closed() && rx.is_empty() {
            return; // transport dropped: member shutting down
        }
        // Drop what queued up while disconnected: raft retransmits anyway,
        // and stale heartbeats only confuse the peer.
        while rx.try_recv().is_ok() {}
        report_unreachable(&node, peer);
        backoff = wait_to_redial(backoff, &wake).await;
    }
}

/// A gRPC client of the member at peer URL `url` (TLS as this member's
/// peer flags say): at most `connect_ms` to connect, `timeout_ms` per call.
pub async fn raft_client(
    url: &str,
    connect_ms: u64,
    timeout_ms: u64,
) -> anyhow::Result<RaftClient<tonic::transport::Channel>> {
    let ch = crate::tls::peer_endpoint(url)?
        .connect_timeout(Duration::from_millis(connect_ms))
        .timeout(Duration::from_millis(timeout_ms))
        .connect()
        .await?;
    Ok(RaftClient::new(ch))
}

/// The peer took the raw stream: it speaks wire 2 at least, and its
/// release says the rest, asked again at each connection (it may have been
/// rolled back meanwhile). Whether it was on an older wire before.
fn raw_stream_up(wires: &PeerWires, peer: u64, url: &str) -> bool {
    let was_older = wires
        .reached(peer, RAW_STREAM_WIRE)
        .is_none_or(|v| v < RAW_STREAM_WIRE);
    tokio::spawn(learn_wire(url.to_string(), peer, wires.clone()));
    was_older
}

/// Records the wire the peer at `url` speaks, once it says: until then it
/// counts as the raw stream's (`peers_below`).
async fn learn_wire(url: String, peer: u64, wires: PeerWires) {
    match peer_wire(&url).await {
        Ok(v) => {
            wires.learnt(peer, v.max(RAW_STREAM_WIRE));
        }
        Err(e) => {
            tracing::debug!(peer = format_args!("{peer:x}"), %url, error = %e, "could not ask the peer its wire version")
        }
    }
}

/// The peer wire version a member at `url` speaks, from `ClusterInfo`
/// (1 for a release that does not report one).
async fn peer_wire(url: &str) -> anyhow::Result<u32> {
    let info = raft_client(url, 1_000, 5_000)
        .await?
        .cluster_info(ClusterInfoRequest {})
        .await?
        .into_inner();
    Ok(info.wire_version.max(1))
}

/// Peer wire 1: batches over one gRPC `Raft.Send` client stream, as
/// d63c56e sends them, until the stream breaks or the queue closes.
async fn send_grpc(
    my_id: u64,
    cluster_id: u64,
    peer: u64,
    url: &str,
    rx: &mut mpsc::Receiver<Message>,
    node: &OnceLock<Weak<Node>>,
) {
    let endpoint = match crate::tls::peer_endpoint(url) {
        Ok(e) => e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true),
        Err(e) => {
            tracing::error!(peer = format_args!("{peer:x}"), %url, error = %e, "bad peer URL");
            return;
        }
    };
    let mut client = RaftClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let (btx, brx) = mpsc::channel::<RaftBatch>(16);
    let call =
        tokio::spawn(async move { client.send(Request::new(ReceiverStream::new(brx))).await });
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
                    batch.messages.push(b.into());
                }
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message; dropped"),
            }
            if bytes >= BATCH_BYTES_MAX {
                break;
            }
            next = rx.try_recv().ok();
        }
        if btx.send(batch).await.is_err() {
            report_unreachable(node, peer);
            break;
        }
    }
    drop(btx);
    match call.await {
        Ok(Err(status)) => {
            tracing::debug!(peer = format_args!("{peer:x}"), %status, "gRPC raft stream ended")
        }
        Ok(Ok(_)) => {}
        Err(e) => tracing::warn!(error = %e, "gRPC raft stream task failed"),
    }
}

/// Asks the members at `peer_urls` for the cluster's id and members, for a
/// member joining with an empty data directory. The first that answers wins.
pub async fn fetch_cluster_info(peer_urls: &[String]) -> anyhow::Result<ClusterInfoResponse> {
    let mut last = None;
    for url in peer_urls {
        let attempt = async {
            anyhow::Ok(
                raft_client(url, 2_000, 5_000)
                    .await?
                    .cluster_info(ClusterInfoRequest {})
                    .await?
                    .into_inner(),
            )
        };
        match attempt.await {
            Ok(info) => return Ok(info),
            Err(e) => last = Some(anyhow::anyhow!("{url}: {e}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no peer URL to ask")))
}

/// Forwards a learner promotion to the leader's peer URL.
pub async fn forward_promote(leader_peer_url: &str, id: u64) -> Result<(), Status> {
    let ch = crate::tls::peer_endpoint(leader_peer_url)
        .map_err(|e| Status::internal(format!("leader URL {leader_peer_url}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| {
            Status::unavailable(format!("cannot reach the leader at {leader_peer_url}: {e}"))
        })?;
    RaftClient::new(ch)
        .promote_member(PromoteMemberRequest { id })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretd_store::snapshot::{SnapshotHeader, SnapshotWriter, CF_TAG_KV};

    fn header(index: u64) -> SnapshotHeader {
        SnapshotHeader {
            index,
            term: 1,
            conf_state: Vec::new(),
        }
    }

    async fn stream_all(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
        let mut src = SnapshotSource::open(path).await?;
        let mut out = Vec::new();
        while let Some(chunk) = src.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A file streamed while it is written arrives whole, byte for byte
    /// the finished file; one whose write fails ends the stream in error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_streams_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (started_tx, started) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let mut w = SnapshotWriter::create(&d, &header(7)).unwrap();
            started_tx.send(()).unwrap();
            for i in 0..40_000u32 {
                w.record(CF_TAG_KV, &i.to_be_bytes(), &[i as u8; 300])
                    .unwrap();
                if i % 5_000 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            w.finish().unwrap()
        });
        started.recv().unwrap();
        let path = secretd_store::snapshot::file_path(dir.path(), 7);
        let streamed = stream_all(&path).await.unwrap();
        let done = writer.join().unwrap();
        assert!(streamed.len() > 4 * SNAPSHOT_CHUNK_BYTES, "spans chunks");
        assert_eq!(streamed, std::fs::read(done).unwrap());

        let d = dir.path().to_path_buf();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (fail_tx, fail) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut w = SnapshotWriter::create(&d, &header(8)).unwrap();
            for i in 0..10_000u32 {
                w.record(CF_TAG_KV, &i.to_be_bytes(), &[1; 300]).unwrap();
            }
            started_tx.send(()).unwrap();
            fail.recv().unwrap();
            drop(w); // abandoned, as when the member stops
        });
        started.recv().unwrap();
        let path = secretd_store::snapshot::file_path(dir.path(), 8);
        // Opened while it grows, then the writer gives up.
        let mut src = SnapshotSource::open(&path).await.unwrap();
        fail_tx.send(()).unwrap();
        writer.join().unwrap();
        let err = loop {
            match src.next_chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("an abandoned file streamed as if complete"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(err.contains("failed"), "{err}");
    }
}
