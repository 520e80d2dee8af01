//! Who an etcd request acts as, and whether etcd's users and roles let it.
//!
//! The certificate role is the outer gate (`gate::Gate`, `authz`): only an
//! admin certificate, or any client on a listener without client
//! certificates, reaches the etcd API at all. Behind it, once `auth
//! enable` has run, each request acts as an etcd user, as etcd decides it:
//! - the user of the request's token (`token` metadata or `Authorization`
//!   header), and an unknown or expired token is refused, never ignored;
//! - else, on an admin certificate, the user named by its common name (etcd
//!   uses the CN the same way);
//! - else nobody: "user name is empty".
//!
//! A request must be allowed in full: a range, watch or txn that reaches
//! one key the user may not read is refused, never cut down. secretd's
//! reserved range stays outside every etcd user's reach, root's included
//! (`reserved` runs before these checks, for everyone).

use std::sync::Arc;

use secretd_store::auth::{Access, AuthError, AuthState};
use secretd_store::lease::Lessor;
use secretd_store::node::{Fence, Node};
use tonic::{Request, Status};

use crate::errors::auth_status;
use crate::identity::{Caller, Role};
use crate::pb::etcdserverpb::{
    request_op::Request as Op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// An etcd request's identity and the auth state it is checked against.
#[derive(Clone)]
pub struct Who {
    state: Arc<AuthState>,
    /// `None` while auth is disabled: nothing to check.
    user: Option<String>,
    caller: Caller,
}

impl Who {
    pub async fn of<T>(node: &Node, req: &Request<T>) -> Result<Who, Status> {
        Who::from_caller(node, &Caller::of(req)?).await
    }

    pub async fn from_caller(node: &Node, caller: &Caller) -> Result<Who, Status> {
        if let Some(t) = &caller.token {
            wait_for_token(node, t).await;
        }
        let state = node.auth().state();
        let caller = caller.clone();
        if !state.enabled {
            return Ok(Who {
                state,
                user: None,
                caller,
            });
        }
        let user = match (&caller.token, &caller.role, &caller.common_name) {
            (Some(t), _, _) => node.auth().token_user(t).map_err(auth_status)?,
            (None, Role::Admin, Some(cn)) => cn.clone(),
            _ => return Err(auth_status(AuthError::UserEmpty)),
        };
        Ok(Who {
            state,
            user: Some(user),
            caller,
        })
    }

    /// The same identity against the auth state of now, for a stream that
    /// outlives an auth change: the same user (its token is not checked
    /// again, as a stream does not use it again), or, if auth was off
    /// when the stream began, whoever the caller is now.
    pub async fn refresh(&self, node: &Node) -> Result<Who, Status> {
        let state = node.auth().state();
        match &self.user {
            Some(u) if state.enabled => Ok(Who {
                state,
                user: Some(u.clone()),
                caller: self.caller.clone(),
            }),
            _ => Who::from_caller(node, &self.caller).await,
        }
    }

    /// The user, while auth is enabled.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// For a request whose permissions were checked here: what apply
    /// checks again (`AuthState::admits`; nothing while auth is disabled
    /// then, the same auth revision while it is enabled).
    pub fn fence(&self) -> Fence {
        Some(self.state.fence(self.user()))
    }

    /// For a root-only request: apply checks that the user still holds
    /// root, and no revision (etcd's `IsAdminPermitted`).
    pub fn admin_fence(&self) -> Fence {
        Some(self.state.admin_fence(self.user()))
    }

    /// For a read served without raft: refuses the answer if auth changed
    /// while it was read. As etcd after a serializable read, only for a
    /// request that had a user, so only with auth enabled.
    pub fn recheck(&self, node: &Node) -> Result<(), Status> {
        if self.user.is_some() && self.auth_changed(node) {
            return Err(auth_status(AuthError::AuthOldRevision));
        }
        Ok(())
    }

    /// Has anything in the auth state (the switch included) changed since
    /// this identity was checked? A stream then checks its caller again.
    pub fn auth_changed(&self, node: &Node) -> bool {
        node.auth().revision() != self.state.revision
    }

    fn require(&self, key: &[u8], range_end: &[u8], access: Access) -> Result<(), Status> {
        match &self.user {
            None => Ok(()),
            Some(u) if self.state.permitted(u, key, range_end, access) => Ok(()),
            Some(u) => {
                tracing::info!(
                    user = %u,
                    key = %String::from_utf8_lossy(key),
                    range_end = %String::from_utf8_lossy(range_end),
                    ?access,
                    "etcd auth refused a request"
                );
                Err(auth_status(AuthError::PermissionDenied))
            }
        }
    }

    /// A client without a certificate (`--client-cert-auth=false`).
    pub fn anonymous(&self) -> bool {
        self.caller.role == Role::Anonymous
    }

    pub fn is_admin(&self) -> bool {
        match &self.user {
            None => true,
            Some(u) => self.state.check_admin(u).is_ok(),
        }
    }

    /// Only the `root` role (etcd's `IsAdminPermitted`).
    pub fn admin(&self) -> Result<(), Status> {
        match &self.user {
            None => Ok(()),
            Some(u) => self.state.check_admin(u).map_err(auth_status),
        }
    }

    /// The user's own record, or root.
    pub fn admin_or_self(&self, name: &str) -> Result<(), Status> {
        match self.admin() {
            Err(_) if self.user() == Some(name) => Ok(()),
            r => r,
        }
    }

    /// A role the user holds, or root.
    pub fn admin_or_role(&self, role: &str) -> Result<(), Status> {
        match (self.admin(), &self.user) {
            (Err(_), Some(u)) if self.state.has_role(u, role) => Ok(()),
            (r, _) => r,
        }
    }

    pub fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        self.require(key, range_end, Access::Read)
    }

    pub fn range(&self, r: &RangeRequest) -> Result<(), Status> {
        self.read(&r.key, &r.range_end)
    }

    /// A put needs write on its key, read too for `prev_kv`, and write on
    /// every key already on its lease (else the user could revoke, by
    /// attaching, keys it may not write).
    pub fn put(&self, p: &PutRequest, lessor: &Lessor) -> Result<(), Status> {
        self.require(&p.key, &[], Access::Write)?;
        self.lease_keys(p.lease, lessor, Access::Write)?;
        if p.prev_kv {
            self.read(&p.key, &[])?;
        }
        Ok(())
    }

    pub fn delete(&self, d: &DeleteRangeRequest) -> Result<(), Status> {
        self.require(&d.key, &d.range_end, Access::Write)?;
        if d.prev_kv {
            self.read(&d.key, &d.range_end)?;
        }
        Ok(())
    }

    /// Every compare reads; every branch's operations, nested txns too,
    /// whichever branch will run.
    pub fn txn(&self, t: &TxnRequest, lessor: &Lessor) -> Result<(), Status> {
        if self.user.is_none() {
            return Ok(());
        }
        for c in &t.compare {
            self.read(&c.key, &c.range_end)?;
        }
        self.ops(&t.success, lessor)?;
        self.ops(&t.failure, lessor)
    }

    fn ops(&self, ops: &[RequestOp], lessor: &Lessor) -> Result<(), Status> {
        for op in ops {
            match &op.request {
                Some(Op::RequestRange(r)) => self.range(r)?,
                Some(Op::RequestPut(p)) => self.put(p, lessor)?,
                Some(Op::RequestDeleteRange(d)) => self.delete(d)?,
                Some(Op::RequestTxn(t)) => self.txn(t, lessor)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Every key attached to `lease` (none for lease 0 or an unknown one),
    /// unless the user is root.
    pub fn lease_keys(&self, lease: i64, lessor: &Lessor, access: Access) -> Result<(), Status> {
        if self.user.is_none() || lease == 0 || self.is_admin() {
            return Ok(());
        }
        if let Some(l) = lessor.get(lease) {
            for k in &l.keys {
                self.require(k, &[], access)?;
            }
        }
        Ok(())
    }

    /// Every key of every lease (LeaseLeases), unless root.
    pub fn all_lease_keys(&self, lessor: &Lessor) -> Result<(), Status> {
        if self.user.is_none() || self.is_admin() {
            return Ok(());
        }
        for id in lessor.ids() {
            self.lease_keys(id, lessor, Access::Read)?;
        }
        Ok(())
    }
}

/// A token names the raft index that issued it. A member that has not
/// applied that index yet (the client logged in through a faster member)
/// catches up first, with one ReadIndex round: afterwards it has applied
/// everything the cluster had committed when the request came, and a
/// real token's entry was committed (and applied by its issuer) before
/// the client held the token. So the wait is one round trip to the
/// leader, never the request timeout: a token naming an index past that
/// was not issued, and is refused at once as unknown. Without a leader the
/// round fails, as every linearizable request does, and the token is
/// judged on what this member has applied.
async fn wait_for_token(node: &Node, token: &str) {
    let Some(index) = secretd_store::auth::tokens::split(token).1 else {
        return;
    };
    if node.status().applied_index >= index {
        return;
    }
    if let Err(e) = node.read_index().await {
        tracing::debug!(error = %e, index, "cannot catch up to a token's entry");
    }
}
