//! Errors the store hands to its callers. Each variant maps to exactly one
//! etcd gRPC error (code + message) in `api`, so clients print what they
//! would print against etcd.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader to a member that is not a voter (unknown, or a learner).
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: the member has been permanently removed from the cluster")]
    Removed,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised: the keyspace is refused until an operator
    /// repairs the member and disarms it (etcd's ErrCorrupt).
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// This member's own keyspace was found damaged: it serves no reads,
    /// and clients with other endpoints move on (UNAVAILABLE).
    #[error("etcdserver: this member's data is damaged (CORRUPT alarm); ask another member")]
    MemberDamaged,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Past `mvcc::txn_checks::TXN_NESTING_MAX` (etcd has no such limit; prost's
    /// decoder does).
    #[error(
        "etcdserver: txn request nested too deeply (at most {} levels)",
        crate::mvcc::txn_checks::TXN_NESTING_MAX
    )]
    TxnTooDeep,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A read's answer would pass the member's bytes for answers in
    /// flight (`answers`): why, and what to do.
    #[error("etcdserver: {0}")]
    AnswersOverBudget(String),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: {0}")]
    InvalidArgument(String),
    /// A request older members could not apply, while some may run an
    /// older release (a rolling upgrade not finished, or a member not
    /// reached since this one started). Names those members.
    #[error("etcdserver: not while members {0} may run an older release (finish the upgrade, or wait until every member is reachable)")]
    OlderMembers(String),
    /// Refused by etcd's users and roles (`auth`).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Storage failed underneath us (I/O error, corrupt record). The member
    /// stops serving rather than guess.
    #[error("etcdserver: storage error: {0}")]
    Storage(String),
}

/// etcd's auth errors, with the text etcd's server sends.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Storage(e.into_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
