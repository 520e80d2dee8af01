//! The keyspace's requests (etcd's KV service): reads served here after a
//! ReadIndex round (or at once when serializable), writes checked as etcd
//! checks them, then proposed.

use prost::Message as _;

use super::{propose_as, unexpected, Fence, Node};
use crate::error::{Result, StoreError};
use crate::mvcc::{txn_checks, KvOp, WriteResult};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::pb::internal::internal_request::Request;

impl Node {
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        self.check_serving()?;
        if !req.serializable {
            self.read_index().await?;
        }
        let (mut resp, rev) = self.mvcc.range(&req)?;
        resp.header = Some(self.header(rev));
        Ok(resp)
    }

    pub async fn put(&self, req: PutRequest, fence: Fence) -> Result<PutResponse> {
        txn_checks::validate_put(&req)?;
        self.check_quota(KvOp::Put(&req), req.key.len() + req.value.len())
            .await?;
        propose_as!(self, Request::Put(req), Put, fence)
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
        fence: Fence,
    ) -> Result<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        propose_as!(self, Request::DeleteRange(req), DeleteRange, fence)
    }

    pub async fn txn(&self, req: TxnRequest, fence: Fence) -> Result<TxnResponse> {
        txn_checks::validate_txn(&req, self.cfg.max_txn_ops)?;
        if txn_checks::is_read_only(&req) {
            self.check_serving()?;
            if !txn_checks::is_serializable(&req) {
                self.read_index().await?;
            }
            let (mut resp, rev) = self.mvcc.txn_readonly(&req)?;
            resp.header = Some(self.header(rev));
            return Ok(resp);
        }
        self.check_quota(KvOp::Txn(&req), req.encoded_len()).await?;
        propose_as!(self, Request::Txn(req), Txn, fence)
    }

    pub async fn compact(
        &self,
        req: CompactionRequest,
        fence: Fence,
    ) -> Result<CompactionResponse> {
        // Fail fast on what is already known; apply re-checks in log order.
        let compacted = self.mvcc.compact_revision();
        if req.revision <= compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        if req.revision > self.mvcc.current_revision() {
            return Err(StoreError::FutureRevision);
        }
        propose_as!(self, Request::Compaction(req), Compaction, fence)
    }
}
