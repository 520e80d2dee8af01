//! The receiving side of the peer protocol: the `Raft` gRPC service.
//! Every request is bound to the member certificate it came with (a
//! member speaks only as itself) and checked against this cluster before
//! raft, the keyring or the hash check sees it: batches (`Send`, and the
//! raw stream through `raw`), snapshots, cluster info, promotions, KEK
//! fetches and keyspace hashes.

use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use secretd_store::node::Node;
use secretd_store::snapshot;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::PEER_WIRE_VERSION;
use crate::identity::{Caller, Role};
use crate::pb::raftpb::{
    raft_server::Raft, ClusterInfoRequest, ClusterInfoResponse, FetchKekRequest, FetchKekResponse,
    MemberInfo, PeerHashKvRequest, PeerHashKvResponse, PromoteMemberRequest, RaftBatch,
    SendResponse, SnapshotChunk,
};

/// Largest snapshot file a member accepts.
const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;

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
            .map_err(crate::errors::secrets_status)?;
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
        crate::peer::corruption::answer(&self.node, r.revision)
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
        // The stream's bytes were hashed as they came and match the file's
        // sha256 trailer: only the header is read back here (reading and
        // hashing the whole file again took a third of a second per
        // million keys). The install reads every record, checked.
        let checked = match result {
            Ok(()) => snapshot::SnapshotReader::open(&part).map(|r| r.header),
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                tracing::warn!(?remote, error = %e.message(), "refused a snapshot stream");
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
/// checks it against its sha256 trailer, and fsyncs it.
async fn receive_file(
    stream: &mut Streaming<SnapshotChunk>,
    part: &std::path::Path,
    first: &[u8],
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
    let mut f = tokio::fs::File::create(part).await.map_err(io)?;
    let mut total = first.len() as u64;
    let mut digest = TrailerHash::default();
    digest.update(first);
    f.write_all(first).await.map_err(io)?;
    while let Some(chunk) = stream.message().await? {
        total += chunk.data.len() as u64;
        if total > SNAPSHOT_BYTES_MAX {
            return Err(Status::resource_exhausted(format!(
                "snapshot larger than {SNAPSHOT_BYTES_MAX} bytes"
            )));
        }
        digest.update(&chunk.data);
        f.write_all(&chunk.data).await.map_err(io)?;
    }
    if !digest.matches() {
        return Err(Status::invalid_argument(
            "snapshot sha256 mismatch: the stream is not the file its sender wrote",
        ));
    }
    f.sync_all().await.map_err(io)?;
    Ok(())
}

/// The sha256 of a stream but for its last 32 bytes, and those bytes (a
/// snapshot file ends in the sha256 of everything before it).
#[derive(Default)]
struct TrailerHash {
    hasher: sha2::Sha256,
    tail: Vec<u8>,
}

impl TrailerHash {
    const DIGEST_BYTES: usize = 32;

    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.tail.extend_from_slice(data);
        if self.tail.len() > Self::DIGEST_BYTES {
            let cut = self.tail.len() - Self::DIGEST_BYTES;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    fn matches(self) -> bool {
        use sha2::Digest;
        self.tail.len() == Self::DIGEST_BYTES && self.hasher.finalize()[..] == self.tail[..]
    }
}

#[cfg(test)]
mod trailer_tests {
    use super::TrailerHash;
    use sha2::{Digest, Sha256};

    /// However the stream is cut into chunks, a file whose trailer is the
    /// sha256 of what precedes it matches, and one changed byte does not.
    #[test]
    fn a_stream_is_checked_against_its_trailer_however_it_is_cut() {
        let content: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = content.clone();
        file.extend_from_slice(&Sha256::digest(&content));
        for chunk in [1, 5, 31, 32, 33, 100, 1032, 5000] {
            let mut h = TrailerHash::default();
            file.chunks(chunk).for_each(|c| h.update(c));
            assert!(h.matches(), "chunks of {chunk}");
            let mut bad = file.clone();
            bad[500] ^= 1;
            let mut h = TrailerHash::default();
            bad.chunks(chunk).for_each(|c| h.update(c));
            assert!(!h.matches(), "a changed byte, chunks of {chunk}");
        }
        let mut short = TrailerHash::default();
        short.update(&file[..20]);
        assert!(!short.matches());
    }
}
