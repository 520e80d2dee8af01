//! etcd's Maintenance service. Status and HashKV are complete; alarms report
//! none (no quota exists yet); Snapshot, Hash, Defragment and MoveLeader
//! arrive with the rest of the cluster-operations work and say so when
//! called.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb::{
    maintenance_server::Maintenance, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};

pub struct MaintenanceService {
    pub node: Arc<Node>,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "secretd: Maintenance.{what} is not supported by this version"
    ))
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let st = self.node.status();
        let size = self.node.db_size_bytes();
        Ok(Response::new(StatusResponse {
            header: Some(self.node.header(self.node.mvcc().current_revision())),
            version: crate::ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: st.leader,
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors: st.fatal.into_iter().collect(),
            db_size_in_use: size,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(not_yet("Defragment"))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
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

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("MoveLeader"))
    }
}
