//! etcd's Lock service (`v3lockpb.Lock`), which client libraries' `lock()`
//! calls: a lock named `n` is held by the oldest key under `n/`, each
//! waiter's key being `n/<lease id in hex>`, bound to its lease. Lock puts
//! the caller's key and waits, watching only the key just ahead of it,
//! until its key is the oldest; the lock is released by Unlock (which
//! deletes the key) or when the lease ends. etcd's steps exactly
//! (`concurrency.Mutex`, `concurrency.rs`), so the service and etcdctl's
//! `lock` (which builds the same keys by hand) exclude each other.

use std::sync::Arc;

use secretd_store::mvcc::prefix_end;
use secretd_store::node::Node;
use tonic::{Request, Response, Status};

use crate::etcd::auth::Who;
use crate::etcd::concurrency::{
    check_key, check_name, client_error, create_or_get, first_created, lease_key, prefix_of,
    range_at, via_client, wait_turn, Acting, Limits, Undo, WaitEnd,
};
use crate::etcd::reserved;
use crate::pb::etcdserverpb::{request_op::Request as Op, RequestOp, ResponseHeader};
use crate::pb::v3lockpb::{
    lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};

pub struct LockService {
    pub node: Arc<Node>,
    /// The member's count of waiters, shared with Election.
    pub limits: Arc<Limits>,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let _slot = self.limits.waiter()?;
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let r = req.into_inner();
        check_name("lock", &r.name)?;
        let mut a = Acting::new(self.node.clone(), who);
        let (header, key) = lock(&mut a, &r.name, r.lease).await?;
        Ok(Response::new(LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let who = Who::of(&self.node, &req).await.map_err(via_client)?;
        let r = req.into_inner();
        check_key("lock", &r.key)?;
        // etcd deletes whatever key it is given, lock or not.
        let header = Acting::new(self.node.clone(), who).delete(r.key).await?;
        Ok(Response::new(UnlockResponse {
            header: Some(header),
        }))
    }
}

/// etcd's `Mutex.Lock`: the header of the read that found the caller
/// first, and the caller's key.
async fn lock(
    a: &mut Acting,
    name: &[u8],
    lease: i64,
) -> Result<(ResponseHeader, Vec<u8>), Status> {
    let prefix = prefix_of(name);
    // Refused before a lease is granted for it.
    reserved::clamp(&prefix, &mut prefix_end(&prefix))?;
    let lease = a.session_lease(lease).await?;
    let key = lease_key(&prefix, lease);
    // One round trip when nobody holds it: put the key unless this lease
    // already has one (locking twice with one lease is one hold), and
    // read the holder.
    let holder = RequestOp {
        request: Some(Op::RequestRange(first_created(&prefix))),
    };
    let resp = a.txn(create_or_get(&key, b"", lease, &[holder])).await?;
    let header = resp.header.unwrap_or_default();
    let mine_rev = if resp.succeeded {
        header.revision
    } else {
        match range_at(&resp, 0).and_then(|r| r.kvs.first()) {
            Some(kv) => kv.create_revision,
            // The compare saw it; the read of the same txn cannot miss it.
            None => return Err(Status::internal("lock key vanished inside its txn")),
        }
    };
    let holder = range_at(&resp, 1).and_then(|r| r.kvs.first());
    if holder.is_none_or(|kv| kv.create_revision == mine_rev) {
        return Ok((header, key));
    }
    let mut undo = a.undo_on_drop(Undo::Delete(key.clone()));
    match wait_turn(a, &prefix, &key, mine_rev).await {
        Ok(WaitEnd::Clear(h)) => {
            undo.disarm();
            Ok((h, key))
        }
        Ok(WaitEnd::MineGone) => {
            undo.disarm();
            Err(client_error("mutex: session is expired"))
        }
        Err(e) => {
            undo.run_now(a).await;
            Err(e)
        }
    }
}
