//! Errors as clients get them. Store errors become etcd's gRPC statuses:
//! the same code and message etcd sends, so `etcdctl` and client
//! libraries react as they do against etcd. Secrets errors become the
//! statuses (and reasons) secretd's own clients match on. And a status,
//! or a path nobody serves, becomes the answer etcd's JSON gateway gives.
//! The gate and the gateway both answer in these shapes, so they live
//! here, below both: a refusal never climbs up to a service for its body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use secretd_client::reason::Reason;
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
        StoreError::TooManyRequests | StoreError::NoSpace | StoreError::AnswersOverBudget(_) => {
            Code::ResourceExhausted
        }
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

/// A secrets error as the status clients get: the code each variant
/// stands for, the message as the error says it, and for the structured
/// ones the reason clients match on (`secretd_client::reason`).
pub fn secrets_status(e: secretd_secrets::Error) -> Status {
    use secretd_secrets::Error;
    let (code, reason) = match &e {
        Error::Invalid(_) => (Code::InvalidArgument, None),
        Error::NotFound { kind, name } => (
            Code::NotFound,
            Some(Reason::NotFound {
                kind: kind.to_string(),
                name: name.clone(),
            }),
        ),
        Error::Missing(_) => (Code::NotFound, None),
        Error::Ambiguous(_) => (Code::InvalidArgument, Some(Reason::Ambiguous)),
        Error::AlreadyExists(_) => (Code::AlreadyExists, None),
        Error::Locked => (Code::FailedPrecondition, Some(Reason::Locked)),
        Error::NotLocked => (Code::FailedPrecondition, Some(Reason::NotLocked)),
        Error::AutolockAlready { .. } => (Code::FailedPrecondition, Some(Reason::AutolockAlready)),
        Error::Precondition(_) => (Code::FailedPrecondition, None),
        Error::Conflict(_) => (Code::Aborted, None),
        Error::Unavailable(_) => (Code::Unavailable, None),
        Error::Denied(_) => (Code::PermissionDenied, None),
        Error::Internal(_) => (Code::Internal, None),
        Error::Store(_) => {
            let Error::Store(s) = e else { unreachable!() };
            return status(s);
        }
    };
    let mut s = Status::new(code, e.to_string());
    if let Some(r) = reason {
        r.attach(s.metadata_mut());
    }
    s
}

/// grpc-gateway's HTTP status for a gRPC code.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::Ok => StatusCode::OK,
        C::Cancelled => StatusCode::REQUEST_TIMEOUT,
        C::InvalidArgument | C::OutOfRange => StatusCode::BAD_REQUEST,
        // grpc-gateway 1.16, etcd 3.5's (etcd 3.4's 1.9 said 412).
        C::FailedPrecondition => StatusCode::BAD_REQUEST,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists | C::Aborted => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        C::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        C::Unknown | C::Internal | C::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn error_body(s: &Status) -> serde_json::Value {
    // etcd 3.5's key order.
    serde_json::json!({"error": s.message(), "code": s.code() as i32, "message": s.message()})
}

pub(crate) fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An error as etcd's gateway answers it.
pub fn error_response(s: &Status) -> Response {
    json_response(
        http_status(s.code()),
        error_body(s).to_string().into_bytes(),
    )
}

/// "Not found", in gRPC's terms for a gRPC request, else the gateway's.
pub fn not_found(headers: &axum::http::HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return Status::unimplemented("").into_http();
    }
    go_error(StatusCode::NOT_FOUND, "Not Found\n")
}

/// What Go's `http.Error` writes: the text, as plain text, not sniffed.
pub(crate) fn go_error(code: StatusCode, text: &'static str) -> Response {
    let mut r = (code, text).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
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

    #[test]
    fn codes_messages_and_reasons() {
        use secretd_secrets::Error;
        let s = secrets_status(Error::NotFound {
            kind: "secret",
            name: "db".into(),
        });
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "secret db not found")
        );
        assert_eq!(
            Reason::of(&s),
            Some(Reason::NotFound {
                kind: "secret".into(),
                name: "db".into()
            })
        );
        let s = secrets_status(Error::Locked);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), secretd_secrets::LOCKED_MESSAGE);
        assert_eq!(Reason::of(&s), Some(Reason::Locked));
        let s = secrets_status(Error::Store(secretd_store::StoreError::NoLeader));
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        assert_eq!(Reason::of(&s), None);
    }
}
