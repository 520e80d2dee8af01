//! The auth state machine against etcd's rules, and its records read back
//! from disk after each change.

use super::*;
use crate::pb::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
};
use crate::pb::internal::AuthTokenIssue;

/// bcrypt's minimum cost: these tests check rules, not hashing strength.
const COST: u32 = 4;

struct H {
    _dir: tempfile::TempDir,
    db: Arc<Db>,
    auth: Auth,
}

impl H {
    fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let auth = Auth::load(&db, Duration::from_secs(60)).unwrap();
        H {
            _dir: dir,
            db,
            auth,
        }
    }

    fn apply(&self, op: Op) -> Result<()> {
        let mut b = WriteBatch::default();
        let r = self
            .auth
            .apply(&AuthRequest { op: Some(op) }, &mut b, &self.db);
        self.db.write_sync(b).unwrap();
        // What is on disk is what is in memory.
        let back = read_state(&self.db).unwrap();
        let now = self.auth.state();
        assert_eq!((back.enabled, back.revision), (now.enabled, now.revision));
        assert_eq!(back.users, now.users);
        assert_eq!(back.roles, now.roles);
        r
    }

    fn err(&self, op: Op) -> AuthError {
        match self.apply(op) {
            Err(StoreError::Auth(e)) => e,
            other => panic!("expected an auth error, got {other:?}"),
        }
    }
}

fn user_add(name: &str, pw: &str) -> Op {
    Op::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: hash_password(pw, COST).unwrap(),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Op {
    Op::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn role_add(name: &str) -> Op {
    Op::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn grant_perm(role: &str, t: PermType, key: &[u8], end: &[u8]) -> Op {
    Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: t as i32,
            key: key.to_vec(),
            range_end: end.to_vec(),
        }),
    })
}

fn enable() -> Op {
    Op::Enable(AuthEnableRequest {})
}

#[test]
fn enable_needs_root_with_the_root_role() {
    let h = H::new();
    assert_eq!(h.auth.revision(), 1);
    assert_eq!(h.err(enable()), AuthError::RootUserNotExist);
    h.apply(user_add("root", "pw")).unwrap();
    assert_eq!(h.err(enable()), AuthError::RootRoleNotExist);
    // The root role need not exist as a role to be granted.
    h.apply(grant_role("root", ROOT)).unwrap();
    let before = h.auth.revision();
    h.apply(enable()).unwrap();
    assert!(h.auth.enabled());
    assert!(h.auth.revision() > before, "enabling changes the revision");
    let rev = h.auth.revision();
    h.apply(enable()).unwrap();
    assert_eq!(h.auth.revision(), rev, "a second enable is a no-op");
    // Root cannot lose root while auth is on.
    assert_eq!(
        h.err(Op::UserDelete(AuthUserDeleteRequest {
            name: "root".into()
        })),
        AuthError::InvalidAuthMgmt
    );
    assert_eq!(
        h.err(Op::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into()
        })),
        AuthError::InvalidAuthMgmt
    );
    h.apply(Op::Disable(AuthDisableRequest {})).unwrap();
    assert!(!h.auth.enabled());
    h.apply(Op::UserDelete(AuthUserDeleteRequest {
        name: "root".into(),
    }))
    .unwrap();
}

#[test]
fn users_roles_and_permissions_follow_etcd() {
    let h = H::new();
    assert_eq!(h.err(user_add("", "x")), AuthError::UserEmpty);
    h.apply(user_add("alice", "pw")).unwrap();
    assert_eq!(h.err(user_add("alice", "pw")), AuthError::UserAlreadyExist);
    assert_eq!(h.err(grant_role("alice", "ops")), AuthError::RoleNotFound);
    assert_eq!(h.err(grant_role("bob", "ops")), AuthError::UserNotFound);
    assert_eq!(h.err(role_add("")), AuthError::RoleEmpty);
    h.apply(role_add("ops")).unwrap();
    assert_eq!(h.err(role_add("ops")), AuthError::RoleAlreadyExist);
    h.apply(grant_role("alice", "ops")).unwrap();
    let rev = h.auth.revision();
    h.apply(grant_role("alice", "ops")).unwrap();
    assert_eq!(
        h.auth.revision(),
        rev,
        "granting a held role changes nothing"
    );

    assert_eq!(
        h.err(grant_perm("ops", PermType::Read, b"b", b"a")),
        AuthError::InvalidAuthMgmt
    );
    assert_eq!(
        h.err(Op::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: "ops".into(),
            perm: None
        })),
        AuthError::PermissionNotGiven
    );
    h.apply(grant_perm("ops", PermType::Read, b"app/", b"app0"))
        .unwrap();
    let s = h.auth.state();
    assert!(s.permitted("alice", b"app/x", b"", Access::Read));
    assert!(!s.permitted("alice", b"app/x", b"", Access::Write));
    assert!(!s.permitted("alice", b"app/", b"\0", Access::Read));
    assert!(!s.permitted("nobody", b"app/x", b"", Access::Read));
    // Granting the same range again updates its type.
    h.apply(grant_perm("ops", PermType::Readwrite, b"app/", b"app0"))
        .unwrap();
    assert_eq!(h.auth.state().role_permissions("ops").unwrap().len(), 1);
    assert!(h
        .auth
        .state()
        .permitted("alice", b"app/x", b"", Access::Write));

    let revoke = |k: &[u8], e: &[u8]| {
        Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "ops".into(),
            key: k.to_vec(),
            range_end: e.to_vec(),
        })
    };
    assert_eq!(h.err(revoke(b"app/", b"")), AuthError::PermissionNotGranted);
    h.apply(revoke(b"app/", b"app0")).unwrap();
    assert!(!h
        .auth
        .state()
        .permitted("alice", b"app/x", b"", Access::Read));

    assert_eq!(
        h.err(Op::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "alice".into(),
            role: "dev".into()
        })),
        AuthError::RoleNotGranted
    );
    // Deleting a role takes it from its users.
    h.apply(Op::RoleDelete(AuthRoleDeleteRequest { role: "ops".into() }))
        .unwrap();
    assert!(h.auth.state().user_roles("alice").unwrap().is_empty());
    assert_eq!(
        h.auth.state().role_permissions("ops"),
        Err(AuthError::RoleNotFound)
    );
}

#[test]
fn root_may_do_everything_and_shows_so() {
    let h = H::new();
    h.apply(user_add("root", "pw")).unwrap();
    h.apply(role_add("root")).unwrap();
    h.apply(grant_role("root", "root")).unwrap();
    let s = h.auth.state();
    assert!(s.permitted("root", b"\0", b"\0", Access::Write));
    assert_eq!(s.check_admin("root"), Ok(()));
    assert_eq!(s.check_admin("nobody"), Err(AuthError::UserNotFound));
    let p = s.role_permissions("root").unwrap();
    assert_eq!(
        (p[0].key.as_slice(), p[0].range_end.as_slice()),
        (&b""[..], &[0u8][..])
    );
}

#[test]
fn passwords_tokens_and_the_fence() {
    let h = H::new();
    h.apply(user_add("root", "secret")).unwrap();
    h.apply(grant_role("root", "root")).unwrap();
    let issue = |t: &str| {
        Op::TokenIssue(AuthTokenIssue {
            name: "root".into(),
            token_sha256: tokens::hash(t).to_vec(),
            password_sha256: Vec::new(),
        })
    };
    assert_eq!(h.err(issue("t0")), AuthError::AuthNotEnabled);
    assert_eq!(
        h.auth.state().password_hash("root"),
        Err(AuthError::AuthNotEnabled)
    );
    h.apply(enable()).unwrap();
    let hash = h.auth.state().password_hash("root").unwrap().to_vec();
    assert!(verify_password("secret", &hash));
    assert!(!verify_password("Secret", &hash));
    let rev = h.auth.revision();
    h.apply(issue("t1")).unwrap();
    assert_eq!(h.auth.revision(), rev, "a token is not an auth change");
    assert_eq!(h.auth.token_user("t1").as_deref(), Ok("root"));
    assert_eq!(h.auth.token_user("t2"), Err(AuthError::InvalidAuthToken));
    let checked = h.auth.state().fence(Some("root"));
    h.auth.check_fence(None, Some(&checked)).unwrap();
    h.auth.check_fence(None, None).unwrap();
    // A password change kills the user's tokens and moves the revision.
    h.apply(Op::UserChangePassword(AuthUserChangePasswordRequest {
        name: "root".into(),
        hashed_password: hash_password("new", COST).unwrap(),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(h.auth.token_user("t1"), Err(AuthError::InvalidAuthToken));
    assert_eq!(
        h.auth.check_fence(None, Some(&checked)),
        Err(StoreError::Auth(AuthError::AuthOldRevision))
    );
    let hash = h.auth.state().password_hash("root").unwrap().to_vec();
    assert!(verify_password("new", &hash) && !verify_password("secret", &hash));
    // A token names the password hash it was checked against: other auth
    // changes in between do not refuse it, a password change does.
    let issue_checked = |t: &str, checked: &[u8]| {
        Op::TokenIssue(AuthTokenIssue {
            name: "root".into(),
            token_sha256: tokens::hash(t).to_vec(),
            password_sha256: password_digest(checked).to_vec(),
        })
    };
    h.apply(role_add("unrelated")).unwrap();
    h.apply(issue_checked("t4", &hash)).unwrap();
    assert_eq!(h.auth.token_user("t4").as_deref(), Ok("root"));
    assert_eq!(
        h.err(issue_checked("t5", b"the hash before the change")),
        AuthError::AuthFailed
    );
    assert_eq!(h.auth.token_user("t5"), Err(AuthError::InvalidAuthToken));
    // A token is forgotten on disable; the state survives a reload.
    h.apply(issue("t3")).unwrap();
    h.apply(Op::Disable(AuthDisableRequest {})).unwrap();
    assert_eq!(h.auth.token_user("t3"), Err(AuthError::InvalidAuthToken));
    h.auth.reload(&h.db).unwrap();
    assert!(!h.auth.enabled());
}

/// root, and alice in role `app`, which may read and write `[a, b)`.
fn root_and_alice(h: &H) {
    h.apply(user_add("root", "pw")).unwrap();
    h.apply(grant_role("root", "root")).unwrap();
    h.apply(role_add("app")).unwrap();
    h.apply(grant_perm("app", PermType::Readwrite, b"a", b"b"))
        .unwrap();
    h.apply(user_add("alice", "pw")).unwrap();
    h.apply(grant_role("alice", "app")).unwrap();
}

/// etcd's apply-time check (`isOpPermitted`, `IsAdminPermitted`): nothing
/// while auth is disabled, so user and role changes never fail unrelated
/// writes; with auth enabled, the revision for ordinary requests (root's
/// too), the root role now for root-only ones, a user for both.
#[test]
fn the_fence_checks_what_etcd_checks_at_apply() {
    let h = H::new();
    let refused = |legacy: Option<u64>, f: &AuthFence| match h.auth.check_fence(legacy, Some(f)) {
        Err(StoreError::Auth(e)) => Some(e),
        Ok(()) => None,
        Err(e) => panic!("{e:?}"),
    };
    // Auth disabled: checked with no user, then users and roles change.
    let off = h.auth.state().fence(None);
    let off_admin = h.auth.state().admin_fence(None);
    let legacy = h.auth.revision();
    root_and_alice(&h);
    assert_eq!(refused(None, &off), None);
    assert_eq!(refused(None, &off_admin), None);
    // An entry of an earlier version keeps its old rule when replayed.
    assert_eq!(
        h.auth.check_fence(Some(legacy), None),
        Err(StoreError::Auth(AuthError::AuthOldRevision))
    );
    // Checked while disabled, applied after `auth enable`: no user.
    h.apply(enable()).unwrap();
    assert_eq!(refused(None, &off), Some(AuthError::UserEmpty));
    assert_eq!(refused(None, &off_admin), Some(AuthError::UserEmpty));
    // Enabled: a write checked before a revoke and applied after it is
    // refused, root's as well (etcd compares revisions first).
    let s = h.auth.state();
    let (alice, root, root_admin) = (
        s.fence(Some("alice")),
        s.fence(Some("root")),
        s.admin_fence(Some("root")),
    );
    assert_eq!(refused(None, &alice), None);
    h.apply(Op::RoleRevokePermission(AuthRoleRevokePermissionRequest {
        role: "app".into(),
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    }))
    .unwrap();
    assert_eq!(refused(None, &alice), Some(AuthError::AuthOldRevision));
    assert_eq!(refused(None, &root), Some(AuthError::AuthOldRevision));
    // A root-only request needs root at apply, not the same revision.
    assert_eq!(refused(None, &root_admin), None);
    let alice_admin = h.auth.state().admin_fence(Some("alice"));
    assert_eq!(
        refused(None, &alice_admin),
        Some(AuthError::PermissionDenied)
    );
    let gone = h.auth.state().admin_fence(Some("nobody"));
    assert_eq!(refused(None, &gone), Some(AuthError::UserNotFound));
    // Disabled again: nothing is checked.
    h.apply(Op::Disable(AuthDisableRequest {})).unwrap();
    assert_eq!(refused(None, &alice), None);
    assert_eq!(refused(None, &alice_admin), None);
}

/// A lease revoke is checked at apply by the keys its lease holds then
/// (etcd's `checkLeasePuts`): nothing for a lease without keys or with auth
/// disabled; else each key as a put, revision first.
#[test]
fn a_lease_revoke_is_checked_by_the_keys_it_holds_at_apply() {
    let h = H::new();
    root_and_alice(&h);
    let off = h.auth.state().fence(None);
    let keys = |ks: &'static [&'static [u8]]| ks.iter().copied();
    assert_eq!(
        h.auth.state().admits_lease_revoke(&off, keys(&[b"z"])),
        Ok(())
    );
    h.apply(enable()).unwrap();
    let s = h.auth.state();
    let alice = s.fence(Some("alice"));
    assert_eq!(s.admits_lease_revoke(&alice, keys(&[])), Ok(()));
    assert_eq!(s.admits_lease_revoke(&alice, keys(&[b"a1", b"a2"])), Ok(()));
    assert_eq!(
        s.admits_lease_revoke(&alice, keys(&[b"a1", b"z"])),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        s.admits_lease_revoke(&off, keys(&[b"a1"])),
        Err(AuthError::UserEmpty)
    );
    // An auth change in between: a lease without keys still goes, one
    // with keys is refused as a put would be.
    h.apply(role_add("other")).unwrap();
    let s = h.auth.state();
    assert_eq!(s.admits_lease_revoke(&alice, keys(&[])), Ok(()));
    assert_eq!(
        s.admits_lease_revoke(&alice, keys(&[b"a1"])),
        Err(AuthError::AuthOldRevision)
    );
}

#[test]
fn a_hash_that_is_not_bcrypt_is_refused() {
    let h = H::new();
    let bad = |hp: &str| {
        Op::UserAdd(AuthUserAddRequest {
            name: "u".into(),
            hashed_password: hp.into(),
            ..Default::default()
        })
    };
    assert_eq!(h.err(bad("")), AuthError::InvalidAuthMgmt);
    assert_eq!(h.err(bad("not base64!")), AuthError::InvalidAuthMgmt);
    assert_eq!(h.err(bad("aGVsbG8=")), AuthError::InvalidAuthMgmt);
    // A user without a password needs none, and cannot log in.
    h.apply(Op::UserAdd(AuthUserAddRequest {
        name: "svc".into(),
        options: Some(UserAddOptions { no_password: true }),
        ..Default::default()
    }))
    .unwrap();
    h.apply(user_add("root", "pw")).unwrap();
    h.apply(grant_role("root", "root")).unwrap();
    h.apply(enable()).unwrap();
    assert_eq!(
        h.auth.state().password_hash("svc"),
        Err(AuthError::AuthFailed)
    );
    assert_eq!(bcrypt_cost(b"$2b$10$abc"), None);
}

#[test]
fn a_corrupt_record_stops_the_load() {
    let h = H::new();
    h.apply(user_add("alice", "pw")).unwrap();
    let mut b = WriteBatch::default();
    b.put_cf(h.db.cf(CF_META), user_key("alice"), b"\xff\xff garbage");
    h.db.write_sync(b).unwrap();
    let e = read_state(&h.db).unwrap_err().to_string();
    assert!(e.contains("corrupt auth record"), "{e}");
    let mut b = WriteBatch::default();
    b.delete_cf(h.db.cf(CF_META), user_key("alice"));
    b.put_cf(h.db.cf(CF_META), META_ENABLED, [1]);
    h.db.write_sync(b).unwrap();
    let e = read_state(&h.db).unwrap_err().to_string();
    assert!(e.contains("root"), "{e}");
}
