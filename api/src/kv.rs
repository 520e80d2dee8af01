//! etcd's KV service over the store, kept out of the reserved range.

use std::sync::Arc;

use secretd_store::node::Node;
use tonic::{Request, Response, Status};

use crate::errors::status;
use crate::pb::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::reserved;

pub struct KvService {
    pub node: Arc<Node>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let mut req = req.into_inner();
        reserved::range(&mut req)?;
        self.node
            .range(req)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        reserved::put(&req)?;
        self.node.put(req).await.map(Response::new).map_err(status)
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let mut req = req.into_inner();
        reserved::delete(&mut req)?;
        self.node
            .delete_range(req)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let mut req = req.into_inner();
        reserved::txn(&mut req)?;
        self.node.txn(req).await.map(Response::new).map_err(status)
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.node
            .compact(req.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }
}
