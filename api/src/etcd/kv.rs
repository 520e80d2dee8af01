//! etcd's KV service over the store, kept out of the reserved range, with
//! etcd's users and roles checked on every request (`auth::Who`).

use std::sync::Arc;

use secretd_store::mvcc::txn_checks;
use secretd_store::node::Node;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::etcd::auth::Who;
use crate::etcd::reserved;
use crate::pb::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};

#[derive(Clone)]
pub struct KvService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let mut req = req.into_inner();
        reserved::range(&mut req)?;
        who.range(&req)?;
        let (resp, charge) = self.node.range_charged(req).await.map_err(status)?;
        who.recheck(&self.node)?;
        Ok(crate::gate::held_until_sent(resp, charge))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let req = req.into_inner();
        reserved::put(&req)?;
        who.put(&req, &self.node.mvcc().lessor())?;
        self.node
            .put(req, who.fence())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let mut req = req.into_inner();
        reserved::delete(&mut req)?;
        who.delete(&req)?;
        let resp = self
            .node
            .delete_range(req, who.fence())
            .await
            .map_err(status)?;
        // Its prev_kv, rendered by apply within the entry's bound, held
        // like a read's answer until it is sent.
        let charge = self.node.mvcc().answers().charge();
        charge.hold(prost::Message::encoded_len(&resp));
        Ok(crate::gate::held_until_sent(resp, charge))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        let mut req = req.into_inner();
        // etcd's checks, on the request as the client sent it: cutting
        // the reserved range out of a delete can make duplicates appear.
        txn_checks::validate_txn(&req, self.node.config().max_txn_ops).map_err(status)?;
        reserved::txn(&mut req)?;
        who.txn(&req, &self.node.mvcc().lessor())?;
        let read_only = txn_checks::is_read_only(&req);
        let (resp, charge) = self
            .node
            .txn_charged_cut(req, who.fence())
            .await
            .map_err(status)?;
        if read_only {
            // Served without raft, so without the fence.
            who.recheck(&self.node)?;
        }
        Ok(crate::gate::held_until_sent(resp, charge))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // Compaction throws away every user's history: root only (etcd
        // lets any user compact; this is stricter on purpose).
        let who = Who::of(&self.node, &req).await?;
        who.admin()?;
        self.node
            .compact(req.into_inner(), who.admin_fence())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
