//! Store errors as etcd's gRPC statuses: the same code and message etcd
//! sends, so `etcdctl` and client libraries react as they do against etcd.

use secretd_store::auth::AuthError;
use secretd_store::StoreError;
use tonic::{Code, Status};

pub fn status(e: StoreError) -> Status {
    let code = match &e {
        StoreError::Compacted { .. } | StoreError::FutureRevision => Code::OutOfRange,
        StoreError::EmptyKey
        | StoreError::KeyNotFound
        | StoreError::ValueProvided
        | StoreError::LeaseProvided
        | StoreError::TooManyOps
        | StoreError::TxnTooDeep
        | StoreError::DuplicateKey
        | StoreError::RequestTooLarge
        | StoreError::InvalidArgument(_) => Code::InvalidArgument,
        StoreError::LeaseNotFound => Code::NotFound,
        StoreError::LeaseExists => Code::FailedPrecondition,
        StoreError::MemberNotFound => Code::NotFound,
        StoreError::MemberExists
        | StoreError::PeerUrlExists
        | StoreError::MemberNotLearner
        | StoreError::LearnerNotReady
        | StoreError::BadLeaderTransferee
        | StoreError::NotLeader
        | StoreError::OlderMembers(_) => Code::FailedPrecondition,
        StoreError::Removed | StoreError::MemberDamaged => Code::Unavailable,
        StoreError::LeaseTtlTooLarge => Code::OutOfRange,
        StoreError::TooManyRequests | StoreError::NoSpace => Code::ResourceExhausted,
        StoreError::NoLeader | StoreError::Timeout | StoreError::Stopped => Code::Unavailable,
        StoreError::Storage(_) => Code::Internal,
        StoreError::Corrupt => Code::DataLoss,
        StoreError::Auth(a) => auth_code(*a),
    };
    Status::new(code, e.to_string())
}

/// etcd's gRPC code for each auth error (`rpctypes/error.go`).
pub fn auth_code(e: AuthError) -> Code {
    use AuthError as E;
    match e {
        E::UserEmpty
        | E::RoleEmpty
        | E::AuthFailed
        | E::PermissionNotGiven
        | E::InvalidAuthMgmt
        | E::AuthOldRevision => Code::InvalidArgument,
        E::PermissionDenied => Code::PermissionDenied,
        E::InvalidAuthToken => Code::Unauthenticated,
        E::RootUserNotExist
        | E::RootRoleNotExist
        | E::UserAlreadyExist
        | E::UserNotFound
        | E::RoleAlreadyExist
        | E::RoleNotFound
        | E::RoleNotGranted
        | E::PermissionNotGranted
        | E::AuthNotEnabled => Code::FailedPrecondition,
    }
}

pub fn auth_status(e: AuthError) -> Status {
    status(StoreError::Auth(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_codes_and_messages() {
        let s = status(StoreError::Compacted {
            compact_revision: 3,
        });
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = status(StoreError::RequestTooLarge);
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "etcdserver: request is too large")
        );
        assert_eq!(
            status(StoreError::NoLeader).message(),
            "etcdserver: no leader"
        );
        assert_eq!(
            status(StoreError::FutureRevision).message(),
            "etcdserver: mvcc: required revision is a future revision"
        );
    }
}
