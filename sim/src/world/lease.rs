//! The lease client: one lease kept alive through any member, and the
//! check that no member revokes it while its keepalives are acknowledged.

use secretd_store::mvcc::WriteResult;

use super::{Ev, World};
use crate::clients;

/// Slack for the lease check: ticks, elections and apply lag.
const LEASE_SLACK_MS: u64 = 1_500;

impl World {
    pub(super) fn lease_turn(&mut self) {
        if self.settling {
            return;
        }
        self.at(self.now_ms + clients::LEASE_KEEPALIVE_MS, Ev::Lease);
        if let Some((member, mut rx, sent_ms)) = self.lease.pending.take() {
            let _ = member;
            match rx.try_recv() {
                Ok(Ok((WriteResult::LeaseGrant(_), _))) => {
                    self.lease.live = true;
                    self.lease.last_ack_ms = Some(sent_ms);
                }
                Ok(Ok((WriteResult::LeaseRenew(_), _))) => self.lease.last_ack_ms = Some(sent_ms),
                Ok(Err(secretd_store::StoreError::LeaseNotFound)) => {
                    // Gone (expired): keep going with a new one.
                    self.lease.id += 1;
                    self.lease.live = false;
                    self.lease.last_ack_ms = None;
                }
                _ => {}
            }
        }
        let Some(member) = self.pick_member() else {
            return;
        };
        let Some(up) = &self.members[member].up else {
            return;
        };
        let req = if self.lease.live {
            clients::lease_renew(self.lease.id)
        } else {
            // A fresh id for every grant attempt: an attempt whose answer
            // was lost may still land, expire and be revoked, and a member
            // catching up later must not take that revoke for one of the
            // lease the client holds.
            self.lease.id += 1;
            clients::lease_grant(self.lease.id)
        };
        if let Ok(rx) = up.node.submit(req, None) {
            self.lease.pending = Some((member, rx, self.now_ms));
            self.schedule_run(member);
        }
    }

    /// A lease revoked on `slot` while its client kept it alive is a bug,
    /// unless a leader's clock jumped forward by as much.
    pub(super) fn check_lease(&mut self, slot: usize) {
        let id = self.lease.id;
        let Some(up) = &mut self.members[slot].up else {
            return;
        };
        let holds = up.node.mvcc().lessor().contains(id);
        if holds {
            up.lease_seen = Some(id);
            return;
        }
        if up.lease_seen != Some(id) {
            return;
        }
        up.lease_seen = None;
        let Some(ack_ms) = self.lease.last_ack_ms else {
            return;
        };
        let ttl_ms = clients::LEASE_TTL_S as u64 * 1000;
        let allowed_ms = ttl_ms.saturating_sub(LEASE_SLACK_MS + self.clock_forward_ms);
        let age_ms = self.now_ms.saturating_sub(ack_ms);
        if age_ms < allowed_ms {
            self.invariants.violations.push(format!(
                "{} ms: lease {id:x} revoked on m{slot} {age_ms} ms after a keepalive was \
                 acknowledged (TTL {ttl_ms} ms)",
                self.now_ms
            ));
        }
    }
}
