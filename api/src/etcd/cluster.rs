//! etcd's Cluster service: the member list and membership changes.

use std::sync::Arc;

use secretd_store::node::Node;
use secretd_store::StoreError;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::etcd::auth::Who;
use crate::pb::etcdserverpb::{
    cluster_server::Cluster, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use crate::urls;

pub struct ClusterService {
    pub node: Arc<Node>,
    /// The keyring: a removal must leave every live KEK on a quorum, and an
    /// added member starts with no record of holding one.
    pub keys: Arc<secretd_secrets::keys::Keys>,
}

fn check_urls(list: &[String]) -> Result<(), Status> {
    for u in list {
        urls::host_port(u).map_err(|e| Status::invalid_argument(format!("peer URL {u:?}: {e}")))?;
    }
    Ok(())
}

/// etcd's Cluster service answers with a header that has no revision
/// (its `ClusterServer.header()` fills cluster, member and term only).
fn no_revision<T>(
    mut resp: T,
    header: impl FnOnce(&mut T) -> &mut Option<crate::pb::etcdserverpb::ResponseHeader>,
) -> Response<T> {
    if let Some(h) = header(&mut resp) {
        h.revision = 0;
    }
    Response::new(resp)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        // Changing the membership is root's (etcd's rule).
        Who::of(&self.node, &req).await?.admin()?;
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        // A member added where a former one was has its id: that one's
        // records of holding KEKs must not count the new, empty keyring.
        let id = self.node.member_id_for(&r.peer_ur_ls).map_err(status)?;
        if !self.node.members().iter().any(|m| m.id == id) {
            self.keys
                .forget_member(id)
                .await
                .map_err(crate::errors::secrets_status)?;
        }
        self.node
            .member_add(r.peer_ur_ls, r.is_learner)
            .await
            .map(|r| no_revision(r, |r| &mut r.header))
            .map_err(status)
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        // Changing the membership is root's (etcd's rule).
        Who::of(&self.node, &req).await?.admin()?;
        let id = req.into_inner().id;
        self.keys
            .check_member_removal(id)
            .await
            .map_err(crate::errors::secrets_status)?;
        self.node
            .member_remove(id)
            .await
            .map(|r| no_revision(r, |r| &mut r.header))
            .map_err(status)
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        // Changing the membership is root's (etcd's rule).
        Who::of(&self.node, &req).await?.admin()?;
        let r = req.into_inner();
        check_urls(&r.peer_ur_ls)?;
        self.node
            .member_update(r.id, r.peer_ur_ls)
            .await
            .map(|r| no_revision(r, |r| &mut r.header))
            .map_err(status)
    }

    async fn member_list(
        &self,
        req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.node
            .member_list(req.into_inner().linearizable)
            .await
            .map(|r| no_revision(r, |r| &mut r.header))
            .map_err(status)
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        // Changing the membership is root's (etcd's rule).
        Who::of(&self.node, &req).await?.admin()?;
        let id = req.into_inner().id;
        match self.node.member_promote(id).await {
            Ok(r) => Ok(no_revision(r, |r| &mut r.header)),
            // Only the leader knows how far the learner got: ask it, over
            // the peer service (its peer URL is always known).
            Err(StoreError::NotLeader) => {
                let leader = self.node.status().leader;
                let Some(url) = self
                    .node
                    .members()
                    .into_iter()
                    .find(|m| m.id == leader)
                    .and_then(|m| m.peer_ur_ls.into_iter().next())
                else {
                    return Err(status(StoreError::NoLeader));
                };
                crate::peer::forward_promote(&url, id).await?;
                let members = self.node.member_list(true).await.map_err(status)?;
                Ok(no_revision(
                    MemberPromoteResponse {
                        header: members.header,
                        members: members.members,
                    },
                    |r| &mut r.header,
                ))
            }
            Err(e) => Err(status(e)),
        }
    }
}
