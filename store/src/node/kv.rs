//! The keyspace's requests (etcd's KV service): reads served here after a
//! ReadIndex round (or at once when serializable), writes checked as etcd
//! checks them, then proposed.

use prost::Message as _;

use super::{propose_as, unexpected, Fence, Node};
use crate::answers::Charge;
use crate::error::{Result, StoreError};
use crate::mvcc::{txn_checks, KvOp, WriteResult};
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::pb::internal::internal_request::Request;

impl Node {
    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.range_charged(req).await.map(|(resp, _)| resp)
    }

    /// `range`, and the answer's charge against the member's budget for
    /// answers (`answers`): the caller holds it until the answer is sent.
    pub async fn range_charged(&self, req: RangeRequest) -> Result<(RangeResponse, Charge)> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        self.check_serving_at_read(req.serializable).await?;
        let (mut resp, rev, charge) = self.mvcc.range_charged(&req)?;
        resp.header = Some(self.header(rev));
        Ok((resp, charge))
    }

    /// Whether this member serves a read: a serializable one as of now,
    /// a linearizable one as of its ReadIndex (a CORRUPT alarm disarmed
    /// before the read began is applied by then, so it does not refuse).
    async fn check_serving_at_read(&self, serializable: bool) -> Result<()> {
        if !serializable {
            self.read_index().await?;
        }
        self.check_serving()
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
        self.txn_charged(req, fence).await.map(|(resp, _)| resp)
    }

    /// `txn`; the answer comes with its charge: a read-only one's as it was
    /// rendered (`range_charged`), a write's held after apply rendered it
    /// (bounded by the entry, `mvcc::write_answer`).
    pub async fn txn_charged(
        &self,
        req: TxnRequest,
        fence: Fence,
    ) -> Result<(TxnResponse, Charge)> {
        txn_checks::validate_txn(&req, self.cfg.max_txn_ops)?;
        self.txn_admitted(req, fence).await
    }

    /// `txn_charged` for a request that passed `txn_checks::validate_txn`
    /// as its client sent it, before its ranges were cut short (the API's
    /// reserved range): checked again for all but duplicate keys, which
    /// a cut can only make appear.
    pub async fn txn_charged_cut(
        &self,
        req: TxnRequest,
        fence: Fence,
    ) -> Result<(TxnResponse, Charge)> {
        txn_checks::validate_txn_but_duplicates(&req, self.cfg.max_txn_ops)?;
        self.txn_admitted(req, fence).await
    }

    async fn txn_admitted(&self, req: TxnRequest, fence: Fence) -> Result<(TxnResponse, Charge)> {
        if txn_checks::is_read_only(&req) {
            self.check_serving_at_read(txn_checks::is_serializable(&req))
                .await?;
            let (mut resp, rev, charge) = self.mvcc.txn_readonly(&req)?;
            resp.header = Some(self.header(rev));
            return Ok((resp, charge));
        }
        self.check_quota(KvOp::Txn(&req), req.encoded_len()).await?;
        let resp = propose_as!(self, Request::Txn(req), Txn, fence)?;
        // Rendered by apply within the entry's bound; held like a read's
        // until it is sent, so the readers after it see it.
        let charge = self.mvcc.answers().charge();
        charge.hold(resp.encoded_len());
        Ok((resp, charge))
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
