//! etcd's Maintenance service: Status, Alarm, Defragment, HashKV, Snapshot
//! and MoveLeader. Hash (of the whole backend, "for testing only" in etcd)
//! is not offered; HashKV is the comparison to use.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use tonic::{Request, Response, Status};

use crate::etcd::auth::Who;

use crate::pb::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};

const BACKUP_CHUNK_BYTES: usize = 1 << 20;

pub struct MaintenanceService {
    pub node: Arc<Node>,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // Listing alarms needs a user; raising or clearing one needs root.
        let who = Who::of(&self.node, &req).await?;
        if req.get_ref().action != crate::pb::etcdserverpb::alarm_request::AlarmAction::Get as i32 {
            who.admin()?;
        }
        let alarms = self
            .node
            .alarm(req.into_inner())
            .await
            .map_err(crate::errors::status)?;
        Ok(Response::new(AlarmResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            alarms,
        }))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Who::of(&self.node, &req).await?;
        let st = self.node.status();
        let size = self.node.db_size_bytes();
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            version: crate::ETCD_SERVER_VERSION.to_string(),
            db_size: size,
            leader: st.leader,
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: st
                .fatal
                .into_iter()
                .chain(self.node.alarm_errors())
                .collect(),
            db_size_in_use: size,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Who::of(&self.node, &req).await?.admin()?;
        self.node
            .defragment()
            .await
            .map_err(crate::errors::status)?;
        // etcd answers Defragment and MoveLeader without a header, and
        // clients assert that.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Who::of(&self.node, &req).await?.admin()?;
        let node = self.node.clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || {
            let rev = node.mvcc().current_revision();
            node.mvcc().hash_state().map(|h| (h, rev))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(crate::errors::status)?;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Who::of(&self.node, &req).await?.admin()?;
        let node = self.node.clone();
        let rev = req.into_inner().revision;
        let (hash, compact_revision, hash_revision) =
            tokio::task::spawn_blocking(move || node.mvcc().hash_kv(rev))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(crate::errors::status)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// A consistent copy of this member's state as an etcd database
    /// (`secretd_store::etcd_backup`), streamed in 1 MiB chunks: `etcdutl
    /// snapshot restore` turns it into an etcd cluster, `secretd snapshot
    /// restore` into a secretd one.
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let who = Who::of(&self.node, &req).await?;
        who.admin()?;
        if who.anonymous() && who.user().is_none() {
            // The snapshot is the whole database, secretd's sealed objects
            // included: never for a caller nobody identified.
            return Err(Status::permission_denied(
                "a snapshot holds the whole database (secretd's sealed objects included): \
                 without a client certificate, only etcd's root user may take one \
                 (after `etcdctl auth enable`)",
            ));
        }
        let (file, path, len) = self.write_backup().await?;
        let header = self.node.header(self.node.mvcc().current_revision());
        Ok(Response::new(stream_backup(file, path, len, header)))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Who::of(&self.node, &req).await?.admin()?;
        self.node
            .move_leader(req.into_inner().target_id)
            .await
            .map_err(crate::errors::status)?;
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }
}

/// Backups written at once by this process (`write_backup`).
static BACKUP_TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

impl MaintenanceService {
    /// Writes this member's state as an etcd database next to the raft
    /// thread's point-in-time copy, and opens it: the file, its path (the
    /// stream removes it when done) and its length.
    async fn write_backup(&self) -> Result<(tokio::fs::File, std::path::PathBuf, u64), Status> {
        // One at a time: each starts by clearing the member's backup
        // directory, where the one before it writes and converts. Held
        // until the file is open (its stream then needs only the handle).
        let _turn = BACKUP_TURN
            .acquire()
            .await
            .map_err(|e| Status::internal(format!("backup: {e}")))?;
        let state = self.node.backup().await.map_err(crate::errors::status)?;
        // The raft thread wrote the point-in-time state; the conversion
        // runs off it and off the async runtime.
        let path = state.with_extension("db");
        let out = path.clone();
        let converted = tokio::task::spawn_blocking(move || {
            let done = secretd_store::etcd_backup::export(&state, &out);
            let _ = std::fs::remove_file(&state);
            done
        })
        .await
        .map_err(|e| Status::internal(format!("backup: {e}")))?;
        if let Err(e) = converted {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(crate::errors::status(e));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::internal(format!("backup: {e}")))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Status::internal(format!("backup: {e}")))?
            .len();
        Ok((file, path, len))
    }
}

/// Streams the backup at `path` (`len` bytes, open as `file`) in
/// `BACKUP_CHUNK_BYTES` chunks, then removes it.
fn stream_backup(
    mut file: tokio::fs::File,
    path: std::path::PathBuf,
    len: u64,
    header: ResponseHeader,
) -> SnapshotStream {
    // etcd's framing, which etcdctl checks: zero padding to a 512-byte
    // multiple, then the sha256 of everything before it.
    let align = secretd_store::snapshot::BACKUP_ALIGN_BYTES;
    let padding = (align - len % align) % align;
    let mut remaining = len + padding + 32;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use sha2::Digest;
        use tokio::io::AsyncReadExt;
        let mut hash = sha2::Sha256::new();
        let mut tail_sent = false;
        loop {
            let mut blob = vec![0u8; BACKUP_CHUNK_BYTES];
            let n = match file.read(&mut blob).await {
                Ok(0) if tail_sent => break,
                Ok(0) => {
                    let mut tail = vec![0u8; padding as usize];
                    hash.update(&tail);
                    tail.extend_from_slice(&std::mem::take(&mut hash).finalize());
                    tail_sent = true;
                    blob = tail;
                    blob.len()
                }
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("backup read: {e}"))))
                        .await;
                    break;
                }
            };
            blob.truncate(n);
            if !tail_sent {
                hash.update(&blob);
            }
            remaining -= n as u64;
            let msg = SnapshotResponse {
                header: Some(header),
                remaining_bytes: remaining,
                blob,
                version: crate::ETCD_CLUSTER_VERSION.into(),
            };
            if tx.send(Ok(msg)).await.is_err() {
                break; // the client went away
            }
        }
        let _ = tokio::fs::remove_file(&path).await;
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
