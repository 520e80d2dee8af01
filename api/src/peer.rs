//! Member-to-member raft transport.
//!
//! Sending: one task per peer owns a bounded queue and a long-lived raft
//! stream (`peer_raw`: length-prefixed messages over TCP or TLS, no
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
//! Receiving: every message is checked against the batch's sender and our
//! cluster and member ids before raft sees it; garbage ends the stream with
//! a clear error and is logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use secretd_store::node::{Node, Transport};
use secretd_store::snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::{Caller, Role};

use crate::pb::raftpb::{
    raft_client::RaftClient, raft_server::Raft, ClusterInfoRequest, ClusterInfoResponse,
    FetchKekRequest, FetchKekResponse, MemberInfo, PeerHashKvRequest, PeerHashKvResponse,
    PromoteMemberRequest, RaftBatch, SendResponse, SnapshotChunk,
};

/// Bytes of snapshot file per chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest snapshot file a member accepts.
const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 8192;
/// Bytes in one batch on the wire.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest gRPC message the peer service accepts (one batch, with slack).
pub const PEER_MESSAGE_BYTES_MAX: usize = 2 * BATCH_BYTES_MAX + 1024 * 1024;
/// The peer wire this member speaks. 1: the gRPC `Raft` service only
/// (d63c56e and earlier). 2: also the raw raft stream (`peer_raw`), and
/// `ClusterInfo` reports the version; `Send` is still served, and still
/// used towards a peer of wire 1. A newer member must keep speaking every
/// version the previous release spoke (README, "Upgrades").
pub const PEER_WIRE_VERSION: u32 = 2;
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

type PeerQueues = HashMap<u64, mpsc::Sender<Message>>;
/// Each peer's peer wire version, as last learnt (absent: not known yet).
type PeerWires = Arc<parking_lot::Mutex<HashMap<u64, u32>>>;

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
    ) -> Arc<GrpcTransport> {
        let node: Arc<OnceLock<Weak<Node>>> = Arc::new(OnceLock::new());
        let runtime = tokio::runtime::Handle::current();
        let t = GrpcTransport {
            peers: Default::default(),
            wires: Default::default(),
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
                queues.insert(*id, tx);
                self.runtime.spawn(peer_sender(
                    self.my_id,
                    self.cluster_id,
                    *id,
                    url.clone(),
                    rx,
                    self.node.clone(),
                    self.wires.clone(),
                ));
            }
        }
        self.wires.lock().retain(|id, _| wanted.contains_key(id));
        *urls = wanted;
    }

    /// Peers not known to speak peer wire 2: older releases, or members
    /// this one has not reached since it started. They may not apply the
    /// entry kinds added with peer wire 2 (`LeaseExpiry`, `AuthRequest`):
    /// d63c56e stops at an entry it cannot decode.
    fn older_peers(&self) -> Vec<u64> {
        let wires = self.wires.lock();
        let mut out: Vec<u64> = self
            .peers
            .read()
            .1
            .keys()
            .filter(|id| wires.get(id).is_none_or(|v| *v < PEER_WIRE_VERSION))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }
}

async fn stream_snapshot(
    from: u64,
    cluster_id: u64,
    url: &str,
    m: &Message,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
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
        let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
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

async fn peer_sender(
    my_id: u64,
    cluster_id: u64,
    peer: u64,
    url: String,
    mut rx: mpsc::Receiver<Message>,
    node: Arc<OnceLock<Weak<Node>>>,
    wires: PeerWires,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // A refusal is a configuration problem: say so once per reason, not
    // at every retry.
    let mut last_refusal = String::new();
    let mut said_legacy = false;
    loop {
        match crate::peer_raw::connect(&url, my_id, cluster_id, peer).await {
            Ok(io) => {
                backoff = RECONNECT_BACKOFF_MIN;
                last_refusal.clear();
                if wires.lock().insert(peer, PEER_WIRE_VERSION) != Some(PEER_WIRE_VERSION) {
                    said_legacy = false;
                }
                if let Err(e) = crate::peer_raw::pump(io, &mut rx).await {
                    tracing::debug!(peer = format_args!("{peer:x}"), error = %e, "raft stream ended");
                }
            }
            Err(crate::peer_raw::ConnectError::Refused(why)) => {
                if why != last_refusal {
                    tracing::warn!(peer = format_args!("{peer:x}"), %url, reason = %why, "the peer refused our raft stream");
                    last_refusal = why;
                }
            }
            Err(crate::peer_raw::ConnectError::NotRaw(why)) => match peer_wire(&url).await {
                Ok(v) if v < PEER_WIRE_VERSION => {
                    wires.lock().insert(peer, v);
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
            Err(crate::peer_raw::ConnectError::Unreachable(e)) => {
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
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

fn member_info(m: secretd_store::pb::etcdserverpb::Member) -> MemberInfo {
    MemberInfo {
        id: m.id,
        name: m.name,
        peer_urls: m.peer_ur_ls,
        is_learner: m.is_learner,
    }
}

/// The receiving side: the `Raft` gRPC service.
pub struct RaftService {
    pub node: Arc<Node>,
    /// Serves KEK generations to other members (`FetchKek`).
    pub keys: Arc<secretd_secrets::keys::Keys>,
}

/// etcd's way of printing a member ID: lower-case hex, no prefix.
pub fn member_id(id: u64) -> String {
    format!("{id:x}")
}

impl RaftService {
    /// A member's certificate names the member (`spiffe://secretd/member/N`):
    /// it may speak only as the member registered under that name. A member
    /// added but not yet started has no name in the registry (etcd's
    /// `member add` records none); until it publishes one, a certificate
    /// whose name no member has may speak as it, and as no one else.
    fn bind_member(&self, caller: &Caller, claimed: u64) -> Result<(), Status> {
        let Role::Member(name) = &caller.role else {
            // Without client certificates there is no identity to bind.
            return Ok(());
        };
        let members = self.node.members();
        let named = members.iter().find(|m| &m.name == name);
        let ok = match named {
            Some(m) => m.id == claimed,
            None => members.iter().any(|m| m.id == claimed && m.name.is_empty()),
        };
        if ok {
            return Ok(());
        }
        tracing::warn!(
            remote = ?caller.remote,
            certificate = %name,
            claimed = %member_id(claimed),
            registered = %named.map(|m| member_id(m.id)).unwrap_or_else(|| "none".into()),
            "refused peer traffic: the certificate is another member's"
        );
        Err(Status::permission_denied(format!(
            "the certificate of member {name} may not speak as member {}{}",
            member_id(claimed),
            match named {
                Some(m) => format!(" (it is member {})", member_id(m.id)),
                None =>
                    " (no member has this name, and the ID is not an unnamed new member)".into(),
            }
        )))
    }

    /// Checks a raft stream's hello: our cluster, addressed to us, from a
    /// member the caller's certificate may speak as.
    pub(crate) fn check_hello(
        &self,
        caller: &Caller,
        cluster_id: u64,
        from: u64,
        to: u64,
    ) -> Result<(), Status> {
        // The role matrix of the gRPC `Send` this stream replaces: members
        // only (the gate does not see raw streams).
        if let crate::authz::Decision::Deny(why) =
            crate::authz::decide(&caller.role, "/secretd.raft.v1.Raft/Send")
        {
            tracing::warn!(remote = ?caller.remote, role = %caller.role, reason = %why, "refused a raft stream");
            return Err(Status::permission_denied(why));
        }
        if cluster_id != self.node.cluster_id() {
            tracing::warn!(
                remote = ?caller.remote,
                cluster = format_args!("{cluster_id:x}"),
                "refused raft traffic from another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this member belongs to cluster {:x}, the sender to {cluster_id:x}",
                self.node.cluster_id()
            )));
        }
        let me = self.node.id();
        if to != me || from == me {
            tracing::warn!(remote = ?caller.remote, from, to, "refused a misaddressed raft stream");
            return Err(Status::invalid_argument(format!(
                "a raft stream from {from:x} to {to:x} reached member {me:x}"
            )));
        }
        self.bind_member(caller, from)
    }

    /// Checks a message against the sender, the cluster and ourselves.
    pub(crate) fn check(
        &self,
        remote: Option<std::net::SocketAddr>,
        cluster_id: u64,
        from: u64,
        bytes: &bytes::Bytes,
    ) -> Result<Message, Status> {
        if cluster_id != self.node.cluster_id() {
            tracing::warn!(
                ?remote,
                cluster = format_args!("{cluster_id:x}"),
                "refused raft traffic from another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "cluster id mismatch: this member belongs to cluster {:x}, the sender to {cluster_id:x}",
                self.node.cluster_id()
            )));
        }
        let m = Message::parse_from_carllerche_bytes(bytes).map_err(|e| {
            tracing::warn!(?remote, error = %e, "refused undecodable raft message");
            Status::invalid_argument(format!("undecodable raft message: {e}"))
        })?;
        let me = self.node.id();
        if m.from != from || m.to != me {
            tracing::warn!(
                ?remote,
                from = m.from,
                to = m.to,
                "refused misaddressed raft message"
            );
            return Err(Status::invalid_argument(format!(
                "raft message from {:x} to {:x} sent by {from:x} to {me:x}",
                m.from, m.to
            )));
        }
        Ok(m)
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<SendResponse>, Status> {
        let caller = Caller::of(&req)?;
        let remote = caller.remote;
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            self.bind_member(&caller, batch.from)?;
            for bytes in &batch.messages {
                let m = self.check(remote, batch.cluster_id, batch.from, bytes)?;
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    return Err(Status::invalid_argument(
                        "snapshots travel over SendSnapshot, not Send",
                    ));
                }
                self.node.step(m);
            }
        }
        Ok(Response::new(SendResponse {}))
    }

    async fn cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let members = self.node.members().into_iter().map(member_info).collect();
        Ok(Response::new(ClusterInfoResponse {
            cluster_id: self.node.cluster_id(),
            members,
            wire_version: PEER_WIRE_VERSION,
        }))
    }

    async fn fetch_kek(
        &self,
        req: Request<FetchKekRequest>,
    ) -> Result<Response<FetchKekResponse>, Status> {
        let caller = Caller::of(&req)?;
        let remote = caller.remote;
        let r = req.into_inner();
        if r.cluster_id != self.node.cluster_id() {
            tracing::warn!(
                ?remote,
                cluster = format_args!("{:x}", r.cluster_id),
                "refused a KEK request for another cluster"
            );
            return Err(Status::permission_denied("not a member of this cluster"));
        }
        let member = r.from != self.node.id() && self.node.members().iter().any(|m| m.id == r.from);
        if !member {
            tracing::warn!(
                ?remote,
                from = format_args!("{:x}", r.from),
                "refused a KEK request from a non-member"
            );
            return Err(Status::permission_denied(format!(
                "member {} (hex ID) is not a member of this cluster",
                member_id(r.from)
            )));
        }
        self.bind_member(&caller, r.from)?;
        let mut kek = self
            .keys
            .key_for_peer(r.generation)
            .map_err(crate::objects::status)?;
        let resp = FetchKekResponse {
            key: std::mem::take(&mut kek.key),
            sealed: std::mem::take(&mut kek.sealed),
            unlock_epoch: kek.unlock_epoch,
        };
        tracing::info!(
            generation = r.generation,
            to = format_args!("{:x}", r.from),
            sealed = !resp.sealed.is_empty(),
            "sent a key-encryption key to a member"
        );
        Ok(Response::new(resp))
    }

    async fn hash_kv(
        &self,
        req: Request<PeerHashKvRequest>,
    ) -> Result<Response<PeerHashKvResponse>, Status> {
        let caller = Caller::of(&req)?;
        let r = req.into_inner();
        if r.cluster_id != self.node.cluster_id() {
            return Err(Status::permission_denied(format!(
                "cluster id mismatch: this member belongs to cluster {:x}, the asker to {:x}",
                self.node.cluster_id(),
                r.cluster_id
            )));
        }
        if !self.node.members().iter().any(|m| m.id == r.from) {
            return Err(Status::permission_denied(format!(
                "member {} (hex ID) is not a member of this cluster",
                member_id(r.from)
            )));
        }
        self.bind_member(&caller, r.from)?;
        crate::corruption::answer(&self.node, r.revision)
            .await
            .map(Response::new)
    }

    async fn promote_member(
        &self,
        req: Request<PromoteMemberRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        // Only a registered member forwards a promotion.
        let caller = Caller::of(&req)?;
        if let Role::Member(name) = &caller.role {
            let members = self.node.members();
            if !members.iter().any(|m| &m.name == name) {
                tracing::warn!(remote = ?caller.remote, certificate = %name, "refused a promotion from a certificate no member has");
                return Err(Status::permission_denied(format!(
                    "no member of this cluster is named {name}"
                )));
            }
        }
        let r = self
            .node
            .member_promote(req.into_inner().id)
            .await
            .map_err(crate::errors::status)?;
        let members = r.members.into_iter().map(member_info).collect();
        Ok(Response::new(ClusterInfoResponse {
            cluster_id: self.node.cluster_id(),
            members,
            wire_version: PEER_WIRE_VERSION,
        }))
    }

    async fn send_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SendResponse>, Status> {
        let caller = Caller::of(&req)?;
        let remote = caller.remote;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        self.bind_member(&caller, first.from)?;
        let m = self.check(remote, first.cluster_id, first.from, &first.message)?;
        if m.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "SendSnapshot carries only snapshot messages",
            ));
        }
        let meta = m.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let dir = self.node.snapshot_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("snapshot dir: {e}")))?;
        let part = dir.join(format!("{index:016x}.{:x}.part", rand_suffix()));
        let result = receive_file(&mut stream, &part, &first.data).await;
        let checked = match result {
            Ok(()) => {
                let p = part.clone();
                tokio::task::spawn_blocking(move || snapshot::verify(&p))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        match checked {
            Ok(h) if h.index == index && h.term == term => {}
            Ok(h) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(Status::invalid_argument(format!(
                    "snapshot file is for {}/{}, message for {index}/{term}",
                    h.index, h.term
                )));
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                tracing::warn!(?remote, error = %e, "refused a corrupt snapshot");
                return Err(Status::invalid_argument(e.to_string()));
            }
        }
        tokio::fs::rename(&part, snapshot::file_path(&dir, index))
            .await
            .map_err(|e| Status::internal(format!("snapshot rename: {e}")))?;
        tracing::info!(
            index,
            term,
            from = format_args!("{:x}", m.from),
            "received snapshot"
        );
        self.node.step(m);
        Ok(Response::new(SendResponse {}))
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Writes the snapshot stream to `part`, bounded by `SNAPSHOT_BYTES_MAX`,
/// and fsyncs it.
async fn receive_file(
    stream: &mut Streaming<SnapshotChunk>,
    part: &std::path::Path,
    first: &[u8],
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    let mut f = tokio::fs::File::create(part).await.map_err(io)?;
    let mut total = first.len() as u64;
    f.write_all(first).await.map_err(io)?;
    while let Some(chunk) = stream.message().await? {
        total += chunk.data.len() as u64;
        if total > SNAPSHOT_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"
            )));
        }
        f.write_all(&chunk.data).await.map_err(io)?;
    }
    f.sync_all().await.map_err(io)?;
    Ok(())
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
