//! etcd's authentication and authorization: users with bcrypt passwords,
//! roles with key permissions, the auth switch, and simple tokens.
//!
//! Replicated state, changed only in the raft apply path (`apply`): records
//! live in the meta column family under `auth/` and travel in snapshots.
//! Readers take an immutable snapshot of the whole state (`state()`), so a
//! permission check and the revision it was made at always agree.
//!
//! The auth revision counts changes to that state (etcd's auth revision;
//! it is not the keyspace revision). A request whose permissions were
//! checked carries the auth revision and user it was checked as
//! (`AuthFence`), and apply makes etcd's apply-time check with them
//! (`check_fence`): with auth enabled, a request checked at another
//! revision is refused, so no write slips through a permission that was
//! revoked while it was in flight; with auth disabled nothing is checked,
//! so user and role changes never fail unrelated writes.
//!
//! Invariants: user and role names are never empty; a user's roles and a
//! role's permissions are sorted; `enabled` implies the user `root` exists
//! with the role `root`.

pub mod perms;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{Direction, IteratorMode, WriteBatch};
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::db::{Db, CF_META};
pub use crate::error::AuthError;
use crate::error::{Result, StoreError};
use crate::pb::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use crate::pb::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
pub use crate::pb::internal::AuthFence;
use crate::pb::internal::{auth_request::Op, AuthRequest, AuthTokenIssue};
pub use perms::UserPerms;
use tokens::Tokens;

/// Every auth record is under this prefix of the meta column family.
pub const META_PREFIX: &[u8] = crate::schema::meta::AUTH_PREFIX;
pub const META_ENABLED: &[u8] = crate::schema::meta::AUTH_ENABLED;
pub const META_REVISION: &[u8] = crate::schema::meta::AUTH_REVISION;
const USER_PREFIX: &[u8] = crate::schema::meta::AUTH_USER_PREFIX;
const ROLE_PREFIX: &[u8] = crate::schema::meta::AUTH_ROLE_PREFIX;

/// The user `auth enable` requires, and the role that may do everything.
pub const ROOT: &str = "root";

/// Users, and roles, one cluster may hold: each check reads them from
/// memory, and each change rebuilds every user's permissions.
pub const USERS_MAX: usize = 10_000;
pub const ROLES_MAX: usize = 10_000;
/// Permissions one role may hold.
pub const ROLE_PERMISSIONS_MAX: usize = 10_000;
/// Longest user or role name, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

/// One consistent view of the auth state.
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    pub enabled: bool,
    pub revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's permissions over all its roles (not for root-role users,
    /// who may do everything).
    perms: HashMap<String, Arc<UserPerms>>,
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl AuthState {
    fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(has_root_role)
    }

    /// May `user` read or write every key of `(key, range_end)`? Only
    /// meaningful while auth is enabled.
    pub fn permitted(&self, user: &str, key: &[u8], range_end: &[u8], access: Access) -> bool {
        if self.is_root(user) {
            return true;
        }
        let Some(p) = self.perms.get(user) else {
            return false; // no such user
        };
        match access {
            Access::Read => p.read.covers(key, range_end),
            Access::Write => p.write.covers(key, range_end),
        }
    }

    /// etcd's `IsAdminPermitted`: the user must exist and hold `root`.
    pub fn check_admin(&self, user: &str) -> std::result::Result<(), AuthError> {
        match self.users.get(user) {
            None => Err(AuthError::UserNotFound),
            Some(u) if has_root_role(u) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// The fence of a request whose permissions were checked against this
    /// state as `user` (`None`: auth was disabled).
    pub fn fence(&self, user: Option<&str>) -> AuthFence {
        AuthFence {
            revision: self.revision,
            user: user.unwrap_or_default().to_string(),
            admin: false,
        }
    }

    /// The fence of a root-only request (etcd's `needAdminPermission`):
    /// apply checks `user`'s root role again instead of the revision.
    pub fn admin_fence(&self, user: Option<&str>) -> AuthFence {
        AuthFence {
            admin: true,
            ..self.fence(user)
        }
    }

    /// etcd's apply-time check of a request fenced with `f`, against this
    /// state: nothing while auth is disabled (`isOpPermitted` and
    /// `IsAdminPermitted` return at once); else a user is needed, a
    /// root-only request needs that user to hold root now, and any other
    /// request the revision it was checked at (etcd compares it before it
    /// looks at roles, so root's writes too).
    pub fn admits(&self, f: &AuthFence) -> std::result::Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if f.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if f.admin {
            return self.check_admin(&f.user);
        }
        if f.revision != self.revision {
            return Err(AuthError::AuthOldRevision);
        }
        Ok(())
    }

    /// etcd's apply-time check of a lease revoke (`checkLeasePuts`): the
    /// keys the lease holds now (`keys`), each as a put (`isOpPermitted`:
    /// a user, the revision it was checked at, write permission). Nothing
    /// while auth is disabled or for a lease without keys.
    pub fn admits_lease_revoke<'k>(
        &self,
        f: &AuthFence,
        mut keys: impl Iterator<Item = &'k [u8]>,
    ) -> std::result::Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(first) = keys.next() else {
            return Ok(());
        };
        self.admits(&AuthFence {
            admin: false,
            ..f.clone()
        })?;
        if std::iter::once(first)
            .chain(keys)
            .all(|k| self.permitted(&f.user, k, &[], Access::Write))
        {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    pub fn user_roles(&self, user: &str) -> std::result::Result<Vec<String>, AuthError> {
        self.users
            .get(user)
            .map(|u| u.roles.clone())
            .ok_or(AuthError::UserNotFound)
    }

    /// A role's permissions; `root`'s is everything, as etcd shows it.
    pub fn role_permissions(&self, role: &str) -> std::result::Result<Vec<Permission>, AuthError> {
        let r = self.roles.get(role).ok_or(AuthError::RoleNotFound)?;
        if role == ROOT {
            return Ok(vec![Permission {
                perm_type: PermType::Readwrite as i32,
                key: Vec::new(),
                range_end: vec![0],
            }]);
        }
        Ok(r.key_permission.clone())
    }

    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// The stored bcrypt hash of a user who may log in with a password.
    pub fn password_hash(&self, user: &str) -> std::result::Result<&[u8], AuthError> {
        if !self.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.users.get(user) {
            Some(u) if !no_password(u) => Ok(&u.password),
            _ => Err(AuthError::AuthFailed),
        }
    }

    fn rebuild_perms(&mut self) {
        let mut perms = HashMap::with_capacity(self.users.len());
        for (name, u) in &self.users {
            let granted = u
                .roles
                .iter()
                .filter_map(|r| self.roles.get(r))
                .flat_map(|r| r.key_permission.iter());
            perms.insert(name.clone(), Arc::new(UserPerms::merge(granted)));
        }
        self.perms = perms;
    }
}

fn has_root_role(u: &User) -> bool {
    u.roles.binary_search_by(|r| r.as_str().cmp(ROOT)).is_ok()
}

fn no_password(u: &User) -> bool {
    u.options.as_ref().is_some_and(|o| o.no_password)
}

/// The auth state of one member, and its tokens.
pub struct Auth {
    state: RwLock<Arc<AuthState>>,
    /// `state`'s revision, readable without the lock: apply's fence checks
    /// it for every entry and each watch stream for every message. Written
    /// only together with `state`, under its write lock.
    revision: AtomicU64,
    tokens: Mutex<Tokens>,
}

impl Auth {
    pub fn load(db: &Db, token_ttl: Duration) -> Result<Auth> {
        let state = read_state(db)?;
        Ok(Auth {
            revision: AtomicU64::new(state.revision),
            state: RwLock::new(Arc::new(state)),
            tokens: Mutex::new(Tokens::new(token_ttl)),
        })
    }

    /// After a snapshot replaced the state on disk. Tokens are forgotten:
    /// their users may be gone.
    pub fn reload(&self, db: &Db) -> Result<()> {
        self.publish(read_state(db)?);
        self.tokens.lock().clear();
        Ok(())
    }

    pub fn state(&self) -> Arc<AuthState> {
        self.state.read().clone()
    }

    pub fn enabled(&self) -> bool {
        self.state.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Makes `s` the state readers see.
    fn publish(&self, s: AuthState) {
        let mut state = self.state.write();
        self.revision.store(s.revision, Ordering::Release);
        *state = Arc::new(s);
    }

    /// The user a token stands for, renewing it.
    pub fn token_user(&self, token: &str) -> std::result::Result<String, AuthError> {
        self.tokens
            .lock()
            .user(token, Instant::now())
            .ok_or(AuthError::InvalidAuthToken)
    }

    /// Apply's fence (`AuthState::admits`). `legacy` is the bare revision
    /// earlier versions wrote: such an entry applies, as it did then, only
    /// if nothing in the auth state changed since, so a replayed entry
    /// comes out as it did on the members that applied it first.
    pub fn check_fence(&self, legacy: Option<u64>, fence: Option<&AuthFence>) -> Result<()> {
        if legacy.is_some_and(|rev| rev != self.revision()) {
            return Err(AuthError::AuthOldRevision.into());
        }
        match fence {
            Some(f) => Ok(self.state().admits(f)?),
            None => Ok(()),
        }
    }

    /// Applies one committed auth change: the new records go into `batch`,
    /// and the new state is visible once this returns. A refused change
    /// changes nothing, on every member alike.
    pub fn apply(&self, req: &AuthRequest, batch: &mut WriteBatch, db: &Db) -> Result<()> {
        let Some(op) = &req.op else {
            return Err(StoreError::Storage(
                "auth entry without an operation".into(),
            ));
        };
        let old = self.state();
        let mut s = (*old).clone();
        let mut changes = Changes::default();
        apply_op(&mut s, op, &mut changes)?;
        match op {
            Op::TokenIssue(t) => {
                self.tokens
                    .lock()
                    .insert(token_hash(&t.token_sha256)?, &t.name, Instant::now());
                return Ok(());
            }
            Op::UserDelete(u) => self.tokens.lock().forget_user(&u.name),
            Op::UserChangePassword(u) => self.tokens.lock().forget_user(&u.name),
            Op::Disable(_) if changes.any() => self.tokens.lock().clear(),
            _ => {}
        }
        if !changes.any() {
            return Ok(());
        }
        s.revision += 1;
        s.rebuild_perms();
        check_invariants(&s);
        let meta = db.cf(CF_META);
        for name in &changes.users {
            match s.users.get(name) {
                Some(u) => batch.put_cf(meta, user_key(name), u.encode_to_vec()),
                None => batch.delete_cf(meta, user_key(name)),
            }
        }
        for name in &changes.roles {
            match s.roles.get(name) {
                Some(r) => batch.put_cf(meta, role_key(name), r.encode_to_vec()),
                None => batch.delete_cf(meta, role_key(name)),
            }
        }
        batch.put_cf(meta, META_ENABLED, [s.enabled as u8]);
        batch.put_cf(meta, META_REVISION, s.revision.to_be_bytes());
        tracing::info!(
            revision = s.revision,
            change = op_name(op),
            "auth state changed"
        );
        self.publish(s);
        Ok(())
    }
}

fn token_hash(b: &[u8]) -> Result<tokens::TokenHash> {
    b.try_into()
        .map_err(|_| StoreError::Storage("auth token entry with a malformed hash".into()))
}

/// Which records an operation changed.
#[derive(Default)]
struct Changes {
    users: Vec<String>,
    roles: Vec<String>,
    switch: bool,
}

impl Changes {
    fn any(&self) -> bool {
        self.switch || !self.users.is_empty() || !self.roles.is_empty()
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Enable(_) => "auth enable",
        Op::Disable(_) => "auth disable",
        Op::UserAdd(_) => "user add",
        Op::UserDelete(_) => "user delete",
        Op::UserChangePassword(_) => "user password change",
        Op::UserGrantRole(_) => "user grant role",
        Op::UserRevokeRole(_) => "user revoke role",
        Op::RoleAdd(_) => "role add",
        Op::RoleDelete(_) => "role delete",
        Op::RoleGrantPermission(_) => "role grant permission",
        Op::RoleRevokePermission(_) => "role revoke permission",
        Op::TokenIssue(_) => "token issued",
    }
}

fn check_name(name: &str, empty: AuthError) -> std::result::Result<(), AuthError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(AuthError::InvalidAuthMgmt);
    }
    Ok(())
}

/// etcd's auth store rules, one operation at a time, on a copy of the
/// state. Errors leave the copy to be dropped.
fn apply_op(s: &mut AuthState, op: &Op, ch: &mut Changes) -> Result<()> {
    match op {
        Op::Enable(_) => enable(s, ch),
        Op::Disable(_) => disable(s, ch),
        Op::UserAdd(r) => user_add(s, r, ch),
        Op::UserDelete(r) => user_delete(s, r, ch),
        Op::UserChangePassword(r) => user_change_password(s, r, ch),
        Op::UserGrantRole(r) => user_grant_role(s, r, ch),
        Op::UserRevokeRole(r) => user_revoke_role(s, r, ch),
        Op::RoleAdd(r) => role_add(s, r, ch),
        Op::RoleDelete(r) => role_delete(s, r, ch),
        Op::RoleGrantPermission(r) => role_grant_permission(s, r, ch),
        Op::RoleRevokePermission(r) => role_revoke_permission(s, r, ch),
        Op::TokenIssue(t) => token_issue(s, t),
    }
}

fn enable(s: &mut AuthState, ch: &mut Changes) -> Result<()> {
    use AuthError as E;
    if s.enabled {
        return Ok(()); // etcd ignores a second enable
    }
    let root = s.users.get(ROOT).ok_or(E::RootUserNotExist)?;
    if !has_root_role(root) {
        return Err(E::RootRoleNotExist.into());
    }
    s.enabled = true;
    ch.switch = true;
    Ok(())
}

fn disable(s: &mut AuthState, ch: &mut Changes) -> Result<()> {
    if s.enabled {
        s.enabled = false;
        ch.switch = true;
    }
    Ok(())
}

fn user_add(s: &mut AuthState, r: &AuthUserAddRequest, ch: &mut Changes) -> Result<()> {
    use AuthError as E;
    check_name(&r.name, E::UserEmpty)?;
    if s.users.contains_key(&r.name) {
        return Err(E::UserAlreadyExist.into());
    }
    if s.users.len() >= USERS_MAX {
        return Err(E::InvalidAuthMgmt.into());
    }
    let no_pw = r.options.as_ref().is_some_and(|o| o.no_password);
    let password = if no_pw {
        Vec::new()
    } else {
        stored_hash(&r.hashed_password)?
    };
    s.users.insert(
        r.name.clone(),
        User {
            name: r.name.clone().into_bytes(),
            password,
            roles: Vec::new(),
            options: Some(UserAddOptions { no_password: no_pw }),
        },
    );
    ch.users.push(r.name.clone());
    Ok(())
}

fn user_delete(s: &mut AuthState, r: &AuthUserDeleteRequest, ch: &mut Changes) -> Result<()> {
    use AuthError as E;
    if s.enabled && r.name == ROOT {
        return Err(E::InvalidAuthMgmt.into());
    }
    s.users.remove(&r.name).ok_or(E::UserNotFound)?;
    ch.users.push(r.name.clone());
    Ok(())
}

fn user_change_password(
    s: &mut AuthState,
    r: &AuthUserChangePasswordRequest,
    ch: &mut Changes,
) -> Result<()> {
    use AuthError as E;
    let u = s.users.get_mut(&r.name).ok_or(E::UserNotFound)?;
    if !no_password(u) {
        u.password = stored_hash(&r.hashed_password)?;
    }
    ch.users.push(r.name.clone());
    Ok(())
}

fn user_grant_role(
    s: &mut AuthState,
    r: &AuthUserGrantRoleRequest,
    ch: &mut Changes,
) -> Result<()> {
    use AuthError as E;
    let u = s.users.get(&r.user).ok_or(E::UserNotFound)?;
    if r.role != ROOT && !s.roles.contains_key(&r.role) {
        return Err(E::RoleNotFound.into());
    }
    if let Err(i) = u.roles.binary_search(&r.role) {
        s.users
            .get_mut(&r.user)
            .expect("looked up above")
            .roles
            .insert(i, r.role.clone());
        ch.users.push(r.user.clone());
    }
    Ok(())
}

fn user_revoke_role(
    s: &mut AuthState,
    r: &AuthUserRevokeRoleRequest,
    ch: &mut Changes,
) -> Result<()> {
    use AuthError as E;
    if s.enabled && r.name == ROOT && r.role == ROOT {
        return Err(E::InvalidAuthMgmt.into());
    }
    let u = s.users.get_mut(&r.name).ok_or(E::UserNotFound)?;
    let i = u
        .roles
        .binary_search(&r.role)
        .map_err(|_| E::RoleNotGranted)?;
    u.roles.remove(i);
    ch.users.push(r.name.clone());
    Ok(())
}

fn role_add(s: &mut AuthState, r: &AuthRoleAddRequest, ch: &mut Changes) -> Result<()> {
    use AuthError as E;
    check_name(&r.name, E::RoleEmpty)?;
    if s.roles.contains_key(&r.name) {
        return Err(E::RoleAlreadyExist.into());
    }
    if s.roles.len() >= ROLES_MAX {
        return Err(E::InvalidAuthMgmt.into());
    }
    s.roles.insert(
        r.name.clone(),
        Role {
            name: r.name.clone().into_bytes(),
            key_permission: Vec::new(),
        },
    );
    ch.roles.push(r.name.clone());
    Ok(())
}

fn role_delete(s: &mut AuthState, r: &AuthRoleDeleteRequest, ch: &mut Changes) -> Result<()> {
    use AuthError as E;
    if s.enabled && r.role == ROOT {
        return Err(E::InvalidAuthMgmt.into());
    }
    s.roles.remove(&r.role).ok_or(E::RoleNotFound)?;
    ch.roles.push(r.role.clone());
    for (name, u) in s.users.iter_mut() {
        if let Ok(i) = u.roles.binary_search(&r.role) {
            u.roles.remove(i);
            ch.users.push(name.clone());
        }
    }
    Ok(())
}

fn role_grant_permission(
    s: &mut AuthState,
    r: &AuthRoleGrantPermissionRequest,
    ch: &mut Changes,
) -> Result<()> {
    use AuthError as E;
    let p = r.perm.as_ref().ok_or(E::PermissionNotGiven)?;
    if !perms::is_valid_range(&p.key, &p.range_end) || PermType::try_from(p.perm_type).is_err() {
        return Err(E::InvalidAuthMgmt.into());
    }
    let role = s.roles.get_mut(&r.name).ok_or(E::RoleNotFound)?;
    let list = &mut role.key_permission;
    match list.binary_search_by(|q| (&q.key, &q.range_end).cmp(&(&p.key, &p.range_end))) {
        Ok(i) => list[i].perm_type = p.perm_type,
        Err(_) if list.len() >= ROLE_PERMISSIONS_MAX => return Err(E::InvalidAuthMgmt.into()),
        Err(i) => list.insert(i, p.clone()),
    }
    ch.roles.push(r.name.clone());
    Ok(())
}

fn role_revoke_permission(
    s: &mut AuthState,
    r: &AuthRoleRevokePermissionRequest,
    ch: &mut Changes,
) -> Result<()> {
    use AuthError as E;
    let role = s.roles.get_mut(&r.role).ok_or(E::RoleNotFound)?;
    let before = role.key_permission.len();
    role.key_permission
        .retain(|q| q.key != r.key || q.range_end != r.range_end);
    if role.key_permission.len() == before {
        return Err(E::PermissionNotGranted.into());
    }
    ch.roles.push(r.role.clone());
    Ok(())
}

fn token_issue(s: &mut AuthState, t: &AuthTokenIssue) -> Result<()> {
    use AuthError as E;
    if !s.enabled {
        return Err(E::AuthNotEnabled.into());
    }
    let Some(u) = s.users.get(&t.name) else {
        return Err(E::AuthFailed.into());
    };
    if !t.password_sha256.is_empty() && password_digest(&u.password) != t.password_sha256[..] {
        return Err(E::AuthFailed.into());
    }
    Ok(())
}

/// What a token issue names a user's stored password by
/// (`AuthTokenIssue.password_sha256`): a digest of the bcrypt hash.
pub fn password_digest(stored_hash: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(stored_hash).into()
}

/// A password hash as the proposer sent it: etcd 3.5's `hashedPassword`,
/// base64 of a bcrypt hash.
fn stored_hash(hashed: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let h = base64::engine::general_purpose::STANDARD
        .decode(hashed)
        .map_err(|_| StoreError::Auth(AuthError::InvalidAuthMgmt))?;
    if bcrypt_cost(&h).is_none() {
        return Err(StoreError::Auth(AuthError::InvalidAuthMgmt));
    }
    Ok(h)
}

/// The cost of a bcrypt hash (`$2a$10$…`), if it is one.
pub fn bcrypt_cost(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    let mut parts = s.split('$');
    let (empty, version, cost, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok = empty.is_empty()
        && matches!(version, "2a" | "2b" | "2y")
        && rest.len() == 53
        && parts.next().is_none();
    let cost: u32 = cost.parse().ok()?;
    (ok && (4..=31).contains(&cost)).then_some(cost)
}

/// Does `password` match the stored bcrypt hash? Slow on purpose (the
/// hash's cost): call it off the async runtime.
pub fn verify_password(password: &str, hash: &[u8]) -> bool {
    std::str::from_utf8(hash)
        .ok()
        .and_then(|h| bcrypt::verify(password, h).ok())
        .unwrap_or(false)
}

/// A bcrypt hash of `password` at `cost`, base64 as etcd 3.5 proposes it.
pub fn hash_password(password: &str, cost: u32) -> Result<String> {
    use base64::Engine;
    let h = bcrypt::hash(password, cost)
        .map_err(|e| StoreError::InvalidArgument(format!("cannot hash the password: {e}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(h))
}

fn check_invariants(s: &AuthState) {
    for (name, u) in &s.users {
        assert!(
            !name.is_empty() && u.name == name.as_bytes(),
            "user record names its key"
        );
        assert!(u.roles.windows(2).all(|w| w[0] < w[1]), "user roles sorted");
    }
    for (name, r) in &s.roles {
        assert!(
            !name.is_empty() && r.name == name.as_bytes(),
            "role record names its key"
        );
    }
    if s.enabled {
        assert!(s.is_root(ROOT), "auth enabled without root");
    }
}

pub fn user_key(name: &str) -> Vec<u8> {
    [USER_PREFIX, name.as_bytes()].concat()
}

pub fn role_key(name: &str) -> Vec<u8> {
    [ROLE_PREFIX, name.as_bytes()].concat()
}

fn corrupt(what: &str, k: &[u8]) -> StoreError {
    StoreError::Storage(format!(
        "corrupt auth record {:?}: {what}",
        String::from_utf8_lossy(k)
    ))
}

/// Reads the auth state back from disk, checking each record as it was
/// checked before it was written.
fn read_state(db: &Db) -> Result<AuthState> {
    let mut s = AuthState {
        revision: 1, // etcd's auth revision starts at 1
        ..Default::default()
    };
    for item in db.iterator_cf(
        db.cf(CF_META),
        IteratorMode::From(META_PREFIX, Direction::Forward),
    ) {
        let (k, v) = item?;
        if !k.starts_with(META_PREFIX) {
            break;
        }
        if &*k == META_ENABLED {
            s.enabled = match &*v {
                [0] => false,
                [1] => true,
                _ => return Err(corrupt("not 0 or 1", &k)),
            };
        } else if &*k == META_REVISION {
            let b: [u8; 8] = (*v).try_into().map_err(|_| corrupt("not 8 bytes", &k))?;
            s.revision = u64::from_be_bytes(b);
        } else if let Some(name) = k.strip_prefix(USER_PREFIX) {
            let u = User::decode(&*v).map_err(|e| corrupt(&e.to_string(), &k))?;
            let ok = u.name == name
                && !name.is_empty()
                && u.roles.windows(2).all(|w| w[0] < w[1])
                && (no_password(&u) || bcrypt_cost(&u.password).is_some());
            if !ok {
                return Err(corrupt("user record does not hold", &k));
            }
            let name =
                String::from_utf8(name.to_vec()).map_err(|_| corrupt("name not UTF-8", &k))?;
            s.users.insert(name, u);
        } else if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
            let r = Role::decode(&*v).map_err(|e| corrupt(&e.to_string(), &k))?;
            if r.name != name || name.is_empty() {
                return Err(corrupt("role record does not hold", &k));
            }
            let name =
                String::from_utf8(name.to_vec()).map_err(|_| corrupt("name not UTF-8", &k))?;
            s.roles.insert(name, r);
        } else {
            return Err(corrupt("unknown auth record", &k));
        }
    }
    if s.enabled && !s.is_root(ROOT) {
        return Err(StoreError::Storage(
            "corrupt auth state: auth is enabled but user root with role root is missing".into(),
        ));
    }
    s.rebuild_perms();
    Ok(s)
}

#[cfg(test)]
mod tests;
