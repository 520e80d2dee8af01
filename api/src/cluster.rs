//! etcd's Cluster service: the member list and membership changes.

use std::sync::Arc;
use std::time::Duration;

use secretd_store::node::Node;
use secretd_store::StoreError;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::pb::etcdserverpb::{
    cluster_client::ClusterClient, cluster_server::Cluster, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use crate::urls;

pub struct ClusterService {
    pub node: Arc<Node>,
}

fn check_urls(list: &[String]) -> Result<(), Status> {
    for u in list {
        urls::host_port(u).map_err(|e| Status::invalid_argument(format!("peer URL {u:?}: {e}")))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        self.node
            .member_add(r.peer_ur_ls, r.is_learner)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.node
            .member_remove(req.into_inner().id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        self.node
            .member_update(r.id, r.peer_ur_ls)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.node
            .member_list(req.into_inner().linearizable)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let id = req.into_inner().id;
        match self.node.member_promote(id).await {
            Ok(r) => Ok(Response::new(r)),
            // Only the leader knows how far the learner got: ask it.
            Err(StoreError::NotLeader) => {
                let Some(url) = self.node.leader_client_urls().into_iter().next() else {
                    return Err(status(StoreError::NoLeader));
                };
                let ch = tonic::transport::Endpoint::from_shared(url.clone())
                    .map_err(|e| Status::internal(format!("leader URL {url}: {e}")))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10))
                    .connect()
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("cannot reach the leader at {url}: {e}"))
                    })?;
                ClusterClient::new(ch)
                    .member_promote(MemberPromoteRequest { id })
                    .await
            }
            Err(e) => Err(status(e)),
        }
    }
}
