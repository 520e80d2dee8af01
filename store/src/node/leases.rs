//! Leases (etcd's Lease service): grants, revokes and renewals go through
//! raft, so every member keeps the same leases; TTL queries are served
//! here after a ReadIndex round.

use super::{propose_as, unexpected, Fence, Node};
use crate::error::{Result, StoreError};
use crate::lease;
use crate::mvcc::{KvOp, WriteResult};
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveResponse,
};
use crate::pb::internal::internal_request::Request;

impl Node {
    /// etcd's minimum lease TTL: 1.5 election timeouts, in whole seconds.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let ms = (3 * self.cfg.election_ticks as u64 / 2) * self.cfg.tick_ms;
        ms.div_ceil(1000).max(1) as i64
    }

    pub async fn lease_grant(&self, ttl: i64, id: i64, fence: Fence) -> Result<LeaseGrantResponse> {
        if ttl > lease::TTL_MAX_SECS {
            return Err(StoreError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.min_lease_ttl_secs());
        // The proposer picks the id, so every member applies the same one.
        let id = if id != 0 {
            id
        } else {
            (rand::random::<u64>() >> 1).max(1) as i64
        };
        let grant = LeaseGrantRequest { ttl, id };
        self.check_quota(KvOp::LeaseGrant(&grant), 16).await?;
        propose_as!(self, Request::LeaseGrant(grant), LeaseGrant, fence)
    }

    pub async fn lease_revoke(&self, id: i64, fence: Fence) -> Result<LeaseRevokeResponse> {
        propose_as!(
            self,
            Request::LeaseRevoke(LeaseRevokeRequest { id }),
            LeaseRevoke,
            fence
        )
    }

    /// A keep-alive: restarts the lease's TTL on every member.
    pub async fn lease_renew(&self, id: i64, fence: Fence) -> Result<LeaseKeepAliveResponse> {
        propose_as!(
            self,
            Request::LeaseRenew(LeaseKeepAliveRequest { id }),
            LeaseRenew,
            fence
        )
    }

    /// Remaining TTL (-1 if the lease is gone), as of a linearizable read.
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        self.read_index().await?;
        let lessor = self.mvcc.lessor();
        let mut resp = LeaseTimeToLiveResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        };
        if let Some(l) = lessor.get(id) {
            resp.ttl = lessor
                .remaining_secs(id, self.mvcc.clock().now())
                .unwrap_or(0);
            resp.granted_ttl = l.ttl_secs;
            if keys {
                resp.keys = l.keys.iter().cloned().collect();
            }
        }
        Ok(resp)
    }

    pub async fn lease_leases(&self) -> Result<LeaseLeasesResponse> {
        self.read_index().await?;
        let leases = self
            .mvcc
            .lessor()
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(LeaseLeasesResponse {
            header: Some(self.header(self.mvcc.current_revision())),
            leases,
        })
    }
}
