//! The in-process client: typed KV and Lease calls that build the same
//! `tonic::Request` a connection would, with an explicit identity
//! (`Caller`), pass the gate's role matrix (`gate::admit`), and call the
//! service structs the member registers on its client listener. No socket,
//! no encoding; every check a service makes still applies. Secrets,
//! configs and tasks are in `objects`, Watch in `watch`.

use std::sync::Arc;

use prost::Message;
use tonic::Request;

use super::error::EmbedError;
use super::shared::{Services, Shared};
use crate::identity::{Caller, Role};
use crate::pb::etcdserverpb::{
    compare, kv_server::Kv, lease_server::Lease as _, request_op, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, TxnResponse,
};
use crate::pb::mvccpb;

/// A key's current value and its revisions (etcd's `KeyValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Writes since the key was created (1 for a new key).
    pub version: i64,
    /// The lease the key is attached to, 0 for none.
    pub lease: i64,
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> KeyValue {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds it lives without a keep-alive.
    pub ttl: i64,
}

/// A client of one embedded member, acting as one identity. Cheap to
/// clone; it stops working (`Stopped`) when the member stops.
#[derive(Clone)]
pub struct Client {
    pub(super) shared: Arc<Shared>,
    pub(super) caller: Caller,
}

impl Client {
    pub(super) fn new(shared: Arc<Shared>, role: Role) -> Client {
        Client {
            shared,
            caller: Caller {
                role,
                remote: None,
                common_name: None,
                token: None,
            },
        }
    }

    /// The same identity with etcd's auth token (from `Authenticate`), for
    /// a member with etcd auth enabled.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.caller.token = Some(token.into());
        self
    }

    /// The same identity with a certificate common name, which etcd's
    /// auth takes for the user of an admin without a token.
    pub fn with_common_name(mut self, cn: impl Into<String>) -> Client {
        self.caller.common_name = Some(cn.into());
        self
    }

    pub fn role(&self) -> &Role {
        &self.caller.role
    }

    /// A request for the RPC `path` as this identity: decided by the role
    /// matrix as the gate decides it, sized as the gRPC decoder would
    /// allow, the `Caller` in its extensions.
    pub(super) fn request<T: Message>(
        &self,
        path: &str,
        msg: T,
    ) -> Result<(Arc<Services>, Request<T>), EmbedError> {
        let services = self.shared.services()?;
        crate::gate::admit(&self.caller, path)?;
        if msg.encoded_len() > services.request_bytes_max {
            return Err(EmbedError::ResourceExhausted(format!(
                "the request is larger than {} bytes",
                services.request_bytes_max
            )));
        }
        let mut req = Request::new(msg);
        req.extensions_mut().insert(self.caller.clone());
        Ok((services, req))
    }

    /// Writes `value` at `key`; the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, EmbedError> {
        self.put_with_lease(key, value, 0).await
    }

    /// Writes `value` at `key`, attached to `lease` (0: none).
    pub async fn put_with_lease(
        &self,
        key: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<i64, EmbedError> {
        let msg = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        let (s, req) = self.request("/etcdserverpb.KV/Put", msg)?;
        let resp = s.kv.put(req).await?.into_inner();
        Ok(resp.header.map_or(0, |h| h.revision))
    }

    /// The key's value (a linearizable read), if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, EmbedError> {
        Ok(self.range(key, &[], 1).await?.into_iter().next())
    }

    /// Every key with this prefix, in key order, at most `limit` (0: all).
    pub async fn get_prefix(&self, prefix: &[u8], limit: i64) -> Result<Vec<KeyValue>, EmbedError> {
        self.range(prefix, &secretd_store::mvcc::prefix_end(prefix), limit)
            .await
    }

    /// Keys in `[key, range_end)` (etcd's range: an empty end is the key
    /// alone), at most `limit` (0: all).
    pub async fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: i64,
    ) -> Result<Vec<KeyValue>, EmbedError> {
        let msg = RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            limit,
            ..Default::default()
        };
        let (s, req) = self.request("/etcdserverpb.KV/Range", msg)?;
        let resp = s.kv.range(req).await?.into_inner();
        Ok(resp.kvs.into_iter().map(KeyValue::from).collect())
    }

    /// Deletes the key; how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &[u8]) -> Result<i64, EmbedError> {
        let msg = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let (s, req) = self.request("/etcdserverpb.KV/DeleteRange", msg)?;
        Ok(s.kv.delete_range(req).await?.into_inner().deleted)
    }

    /// Compare-and-swap: writes `value` only if the key's version is
    /// `version` (0: only if the key does not exist). Whether it wrote.
    pub async fn put_if_version(
        &self,
        key: &[u8],
        value: &[u8],
        version: i64,
    ) -> Result<bool, EmbedError> {
        let put = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                key: key.to_vec(),
                target_union: Some(compare::TargetUnion::Version(version)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put)),
            }],
            failure: Vec::new(),
        };
        Ok(self.txn(txn).await?.succeeded)
    }

    /// etcd's whole Txn, for what `put_if_version` does not cover.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, EmbedError> {
        let (s, req) = self.request("/etcdserverpb.KV/Txn", txn)?;
        Ok(s.kv.txn(req).await?.into_inner())
    }

    /// A lease of `ttl` seconds (the member may grant a longer one).
    pub async fn lease_grant(&self, ttl: i64) -> Result<Lease, EmbedError> {
        let msg = LeaseGrantRequest { ttl, id: 0 };
        let (s, req) = self.request("/etcdserverpb.Lease/LeaseGrant", msg)?;
        let r = s.lease.lease_grant(req).await?.into_inner();
        if !r.error.is_empty() {
            return Err(EmbedError::FailedPrecondition(r.error));
        }
        Ok(Lease {
            id: r.id,
            ttl: r.ttl,
        })
    }

    /// Renews the lease once; its new TTL. An expired or revoked lease is
    /// `NotFound`.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, EmbedError> {
        use futures::StreamExt;
        let msg = LeaseKeepAliveRequest { id };
        let (s, req) = self.request("/etcdserverpb.Lease/LeaseKeepAlive", msg)?;
        let who = crate::etcd::auth::Who::of(&s.node, &req).await?;
        let inbound = futures::stream::iter([Ok(req.into_inner())]);
        let mut answers = s.lease.keep_alive(inbound, who);
        match answers.next().await {
            Some(Ok(r)) if r.ttl > 0 => Ok(r.ttl),
            Some(Ok(_)) => Err(EmbedError::NotFound(format!(
                "lease {id:x} expired or was revoked"
            ))),
            Some(Err(e)) => Err(e.into()),
            None => Err(EmbedError::Stopped),
        }
    }

    /// Revokes the lease, deleting every key attached to it.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), EmbedError> {
        let (s, req) =
            self.request("/etcdserverpb.Lease/LeaseRevoke", LeaseRevokeRequest { id })?;
        s.lease.lease_revoke(req).await?;
        Ok(())
    }
}
