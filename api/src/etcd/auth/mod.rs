//! etcd's Auth service: users, roles, permissions, the auth switch, and
//! simple tokens, over the replicated auth state (`secretd_store::auth`).
//!
//! Changes go through raft, each checked again at apply by its caller's
//! root role (`guard::Who::admin_fence`), as etcd does. Reads wait for a ReadIndex, as
//! etcd serves them through raft. Passwords are hashed here with bcrypt at
//! `--bcrypt-cost` before they are proposed, so neither the raft log nor
//! a snapshot ever holds one; a token is proposed as its SHA-256 only.

pub mod guard;

use std::sync::Arc;

use secretd_store::auth::{self as store_auth, tokens, AuthError};
use secretd_store::mvcc::WriteResult;
use secretd_store::node::Node;
use secretd_store::pb::internal::{
    auth_request::Op, internal_request, AuthRequest, AuthTokenIssue,
};
use secretd_store::StoreError;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::errors::{auth_status, status};
use crate::pb::etcdserverpb::{auth_server::Auth, *};
pub use guard::Who;

/// bcrypt computations at once: each takes tens of milliseconds of CPU at
/// the default cost, so a burst of logins queues instead of starving the
/// member's other work.
const BCRYPT_CONCURRENT_MAX: usize = 2;
/// Longest password accepted. bcrypt reads only the first 72 bytes; a
/// longer one is refused rather than silently cut.
pub const PASSWORD_BYTES_MAX: usize = 72;

/// etcd's default and bounds for `--bcrypt-cost`.
pub const BCRYPT_COST_DEFAULT: u32 = 10;
pub const BCRYPT_COST_MIN: u32 = 4;
pub const BCRYPT_COST_MAX: u32 = 31;

pub struct AuthService {
    node: Arc<Node>,
    bcrypt_cost: u32,
    bcrypt: Arc<Semaphore>,
}

impl AuthService {
    pub fn new(node: Arc<Node>, bcrypt_cost: u32) -> AuthService {
        assert!((BCRYPT_COST_MIN..=BCRYPT_COST_MAX).contains(&bcrypt_cost));
        AuthService {
            node,
            bcrypt_cost,
            bcrypt: Arc::new(Semaphore::new(BCRYPT_CONCURRENT_MAX)),
        }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    /// Proposes one auth change as `who`, who must be root while auth is
    /// enabled.
    async fn change<T>(&self, req: &Request<T>, op: Op) -> Result<Option<ResponseHeader>, Status> {
        let who = Who::of(&self.node, req).await?;
        who.admin()?;
        self.propose(op, &who).await
    }

    async fn propose(&self, op: Op, who: &Who) -> Result<Option<ResponseHeader>, Status> {
        let req = internal_request::Request::Auth(AuthRequest { op: Some(op) });
        // etcd checks an auth change at apply by the proposer's root role
        // alone: concurrent changes do not refuse each other.
        match self.node.propose_checked(req, who.admin_fence()).await {
            Ok((WriteResult::Auth { .. }, h)) => Ok(Some(h)),
            Ok((other, _)) => Err(Status::internal(format!("auth apply returned {other:?}"))),
            Err(e) => Err(status(e)),
        }
    }

    /// A linearizable view of the auth state, for reads.
    async fn read<T>(&self, req: &Request<T>) -> Result<Who, Status> {
        self.node.read_index().await.map_err(status)?;
        Who::of(&self.node, req).await
    }

    async fn bcrypt<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Status> {
        let _permit = self
            .bcrypt
            .acquire()
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Status::internal(format!("password hashing failed: {e}")))
    }

    /// The stored form of a new password: the client's own bcrypt hash
    /// (etcd 3.5's `hashedPassword`, checked at apply) or ours of its
    /// password.
    async fn password(&self, password: &str, hashed: &str) -> Result<String, Status> {
        if !hashed.is_empty() {
            return Ok(hashed.to_string());
        }
        if password.len() > PASSWORD_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "etcdserver: password is longer than {PASSWORD_BYTES_MAX} bytes (bcrypt would ignore the rest)"
            )));
        }
        let (pw, cost) = (password.to_string(), self.bcrypt_cost);
        self.bcrypt(move || store_auth::hash_password(&pw, cost))
            .await?
            .map_err(status)
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self.change(&req, Op::Enable(AuthEnableRequest {})).await?;
        tracing::warn!("etcd authentication enabled");
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self
            .change(&req, Op::Disable(AuthDisableRequest {}))
            .await?;
        tracing::warn!("etcd authentication disabled");
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        // Root only once auth is on, as etcd 3.5 answers it.
        self.read(&req).await?.admin()?;
        let s = self.node.auth().state();
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: s.enabled,
            auth_revision: s.revision,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let caller = crate::identity::Caller::of(&req)?;
        let r = req.into_inner();
        self.node.read_index().await.map_err(status)?;
        let state = self.node.auth().state();
        let hash = match state.password_hash(&r.name) {
            Ok(h) => h.to_vec(),
            Err(e) => return Err(self.failed_login(&caller, &r.name, e)),
        };
        let password_sha256 = store_auth::password_digest(&hash).to_vec();
        let pw = r.password.clone();
        let ok = r.password.len() <= PASSWORD_BYTES_MAX
            && self
                .bcrypt(move || store_auth::verify_password(&pw, &hash))
                .await?;
        if !ok {
            return Err(self.failed_login(&caller, &r.name, AuthError::AuthFailed));
        }
        let token = tokens::generate();
        let op = Op::TokenIssue(AuthTokenIssue {
            name: r.name.clone(),
            token_sha256: tokens::hash(&token).to_vec(),
            password_sha256,
        });
        let req = internal_request::Request::Auth(AuthRequest { op: Some(op) });
        // No revision fence: apply issues the token only if the user still
        // has the password hash checked here, so unrelated auth changes
        // never fail a login (etcd retries until they hold still).
        match self.node.propose(req).await {
            Ok((WriteResult::Auth { index }, h)) => {
                tracing::info!(user = %r.name, remote = ?caller.remote, "etcd user authenticated");
                // etcd's format: the index lets a member that has not
                // applied the token yet wait for it.
                Ok(Response::new(AuthenticateResponse {
                    header: Some(h),
                    token: format!("{token}.{index}"),
                }))
            }
            Ok((other, _)) => Err(Status::internal(format!("auth apply returned {other:?}"))),
            Err(StoreError::Auth(e)) => Err(self.failed_login(&caller, &r.name, e)),
            Err(e) => Err(status(e)),
        }
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        who.admin()?;
        let mut r = req.into_inner();
        if r.name.is_empty() {
            return Err(auth_status(AuthError::UserEmpty));
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            self.password(&r.password, &r.hashed_password).await?
        };
        r.password.clear();
        let header = self.propose(Op::UserAdd(r), &who).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let who = self.read(&req).await?;
        let name = &req.get_ref().name;
        who.admin_or_self(name)?;
        let roles = self
            .node
            .auth()
            .state()
            .user_roles(name)
            .map_err(auth_status)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        self.read(&req).await?.admin()?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users: self.node.auth().state().user_names(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let op = Op::UserDelete(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let who = Who::of(&self.node, &req).await?;
        who.admin()?;
        let mut r = req.into_inner();
        r.hashed_password = self.password(&r.password, &r.hashed_password).await?;
        r.password.clear();
        let header = self.propose(Op::UserChangePassword(r), &who).await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let op = Op::UserGrantRole(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let op = Op::UserRevokeRole(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let op = Op::RoleAdd(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let who = self.read(&req).await?;
        let role = &req.get_ref().role;
        who.admin_or_role(role)?;
        let perm = self
            .node
            .auth()
            .state()
            .role_permissions(role)
            .map_err(auth_status)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        self.read(&req).await?.admin()?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles: self.node.auth().state().role_names(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let op = Op::RoleDelete(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let op = Op::RoleGrantPermission(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let op = Op::RoleRevokePermission(req.get_ref().clone());
        let header = self.change(&req, op).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}

impl AuthService {
    fn failed_login(&self, caller: &crate::identity::Caller, user: &str, e: AuthError) -> Status {
        if e != AuthError::AuthNotEnabled {
            tracing::warn!(user = %user, remote = ?caller.remote, reason = %e, "etcd authentication failed");
        }
        auth_status(e)
    }
}
