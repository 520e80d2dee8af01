//! etcd's Lease service over the store's lessor. Once etcd auth is
//! enabled, every call needs a user; revoking a lease needs write on
//! every key attached to it, and listing keys or leases needs read on
//! them (etcd's rules), root excepted.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::auth::Access;
use secretd_store::node::Node;
use secretd_store::StoreError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::errors::status;
use crate::etcd::auth::Who;
use crate::pb::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

/// Keep-alive responses buffered towards one client.
const KEEPALIVE_RESPONSES_MAX: usize = 64;

pub struct LeaseService {
    pub node: Arc<Node>,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // Identifies the caller (a bad token is refused); a grant needs no
        // permission, so nothing is checked again at apply (etcd's rule).
        Who::of(&self.node, &req).await?;
        let r = req.into_inner();
        self.node
            .lease_grant(r.ttl, r.id, None)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let id = req.into_inner().id;
        // Checked here against the keys the lease holds now, and again at
        // apply against the keys it holds then (etcd's `checkLeasePuts`):
        // nothing for a lease without keys or while auth is disabled.
        who.lease_keys(id, &self.node.mvcc().lessor(), Access::Write)?;
        let fence = who.fence();
        self.node
            .lease_revoke(id, fence)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let who = Who::of(&self.node, &req).await?;
        Ok(Response::new(self.keep_alive(req.into_inner(), who)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let r = req.into_inner();
        let resp = self
            .node
            .lease_time_to_live(r.id, r.keys)
            .await
            .map_err(status)?;
        if r.keys {
            for k in &resp.keys {
                who.read(k, &[])?;
            }
            who.recheck(&self.node)?;
        }
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let resp = self.node.lease_leases().await.map_err(status)?;
        who.all_lease_keys(&self.node.mvcc().lessor())?;
        who.recheck(&self.node)?;
        Ok(Response::new(resp))
    }
}

impl LeaseService {
    /// Keep-alives: one answer per request, until the client goes away or
    /// a renewal fails.
    pub fn keep_alive(
        &self,
        inbound: impl futures::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + 'static,
        who: Who,
    ) -> KeepAliveStream {
        use futures::StreamExt;
        // Identified before the stream starts (etcd checks the user then).
        let _ = who;
        let mut inbound = Box::pin(inbound);
        let (tx, rx) = mpsc::channel(KEEPALIVE_RESPONSES_MAX);
        let node = self.node.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                // Renewing needs no permission (etcd checks none), so no
                // fence: an auth change must not starve a live lease.
                let resp = match node.lease_renew(r.id, None).await {
                    Ok(resp) => Ok(resp),
                    // etcd answers an unknown lease with TTL 0; clients read
                    // that as "expired".
                    Err(StoreError::LeaseNotFound) => Ok(LeaseKeepAliveResponse {
                        header: Some(node.header(node.mvcc().current_revision())),
                        id: r.id,
                        ttl: 0,
                    }),
                    Err(e) => Err(status(e)),
                };
                let stop = resp.is_err();
                if tx.send(resp).await.is_err() || stop {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}
