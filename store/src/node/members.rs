//! Membership (etcd's Cluster service and MoveLeader): adding, removing,
//! promoting and updating members as raft configuration changes, and a
//! starting member publishing its name and client URLs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use tokio::sync::oneshot;

use super::{unexpected, Input, Node, PUBLISH_RETRY};
use crate::cluster;
use crate::db::CF_META;
use crate::error::{Result, StoreError};
use crate::membership;
use crate::mvcc::WriteResult;
use crate::pb::etcdserverpb::{
    Member, MemberAddResponse, MemberListResponse, MemberPromoteResponse, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::pb::internal::{internal_request::Request, ConfChangeContext};

impl Node {
    pub async fn member_list(&self, linearizable: bool) -> Result<MemberListResponse> {
        if linearizable {
            self.read_index().await?;
        }
        Ok(MemberListResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            members: self.members(),
        })
    }

    async fn conf_change(
        &self,
        change: ConfChangeType,
        node_id: u64,
        member: Option<Member>,
        promote: bool,
    ) -> Result<(Vec<Member>, ResponseHeader)> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let context = ConfChangeContext {
            request_id: id,
            proposer: self.id,
            member,
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = node_id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::ConfChange {
            id,
            cc,
            context,
            promote: promote.then_some(node_id),
            reply,
        })?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(Ok((WriteResult::Members(ms), h)))) => Ok((ms, h)),
            Ok(Ok(Ok((other, _)))) => Err(unexpected(other)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The id a member with these peer URLs has in this cluster (derived
    /// with the cluster token, as the member itself derives it).
    pub fn member_id_for(&self, peer_urls: &[String]) -> Result<u64> {
        let token = self
            .db
            .get(CF_META, membership::META_TOKEN)?
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        Ok(cluster::member_id(peer_urls, &token))
    }

    /// Adds a member (as a learner if asked). Its id is derived from its
    /// peer URLs and the cluster token, as the new member derives it.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse> {
        if peer_urls.is_empty() {
            return Err(StoreError::InvalidArgument(
                "member add needs at least one peer URL".into(),
            ));
        }
        let id = self.member_id_for(&peer_urls)?;
        {
            let reg = self.registry.read();
            if reg.with_peer_url(&peer_urls).is_some() {
                return Err(StoreError::PeerUrlExists);
            }
            if reg.get(id).is_some() {
                return Err(StoreError::MemberExists);
            }
        }
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: peer_urls,
            client_ur_ls: Vec::new(),
            is_learner,
        };
        let change = if is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let (members, h) = self
            .conf_change(change, id, Some(member.clone()), false)
            .await?;
        Ok(MemberAddResponse {
            header: Some(h),
            member: Some(member),
            members,
        })
    }

    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse> {
        if self.registry.read().get(id).is_none() {
            return Err(StoreError::MemberNotFound);
        }
        let (members, h) = self
            .conf_change(ConfChangeType::RemoveNode, id, None, false)
            .await?;
        Ok(MemberRemoveResponse {
            header: Some(h),
            members,
        })
    }

    /// Promotes a learner that has caught up. Must run on the leader (the
    /// caller forwards on `NotLeader`).
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse> {
        match self.registry.read().get(id) {
            None => return Err(StoreError::MemberNotFound),
            Some(m) if !m.is_learner => return Err(StoreError::MemberNotLearner),
            Some(_) => {}
        }
        let (members, h) = self
            .conf_change(ConfChangeType::AddNode, id, None, true)
            .await?;
        Ok(MemberPromoteResponse {
            header: Some(h),
            members,
        })
    }

    pub async fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<MemberUpdateResponse> {
        if self
            .registry
            .read()
            .with_peer_url(&peer_urls)
            .is_some_and(|m| m.id != id)
        {
            return Err(StoreError::PeerUrlExists);
        }
        match self
            .propose(Request::MemberUpdate(MemberUpdateRequest {
                id,
                peer_ur_ls: peer_urls,
            }))
            .await?
        {
            (WriteResult::Members(members), h) => Ok(MemberUpdateResponse {
                header: Some(h),
                members,
            }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Moves leadership to `target` (etcd's MoveLeader); must run on the
    /// leader. Returns once `target` leads, or times out.
    pub async fn move_leader(&self, target: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send_input(Input::TransferLeader { target, reply })?;
        rx.await.map_err(|_| self.stopped_error())??;
        let deadline = Instant::now() + self.cfg.request_timeout;
        while self.status.read().leader != target {
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// Publishes this member's name and client URLs once the cluster can take
/// a write (etcd does the same), retrying until they are in the registry.
pub(super) async fn publish_attributes(node: std::sync::Weak<Node>) {
    loop {
        tokio::time::sleep(PUBLISH_RETRY).await;
        let Some(node) = node.upgrade() else { return };
        let published = node
            .registry
            .read()
            .get(node.id)
            .is_some_and(|m| m.name == node.cfg.name && m.client_ur_ls == node.cfg.client_urls);
        if published {
            return;
        }
        if node.registry.read().get(node.id).is_none() || node.status().leader == 0 {
            continue; // not (yet) a member, or no leader to take the write
        }
        let attrs = Member {
            id: node.id,
            name: node.cfg.name.clone(),
            peer_ur_ls: Vec::new(),
            client_ur_ls: node.cfg.client_urls.clone(),
            is_learner: false,
        };
        if let Err(e) = node.propose(Request::MemberAttrs(attrs)).await {
            tracing::debug!(error = %e, "publishing member attributes; will retry");
        }
    }
}
