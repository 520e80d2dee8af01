//! `EmbedError`: what an embedded member and its in-process client answer
//! when they refuse, as a type the program matches on, never as text to
//! parse. Services answer with `tonic::Status`; this is the one place its
//! codes become variants (`From<Status>`), the server's message kept.

use tonic::Code;

/// Why an embedded member or its in-process client refused.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No such object, lease or member.
    #[error("not found: {0}")]
    NotFound(String),
    /// An object with that name exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The identity may not make this call (the role matrix, a node asking
    /// for another node, etcd's users and roles).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request is malformed (empty key, bad name, too many txn ops).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A revision compacted away or not yet written, a TTL too large.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A watch's start revision was compacted: it can start at
    /// `compact_revision` at the earliest.
    #[error("revision compacted: watch again from {compact_revision} or later")]
    Compacted { compact_revision: i64 },
    /// The member cancelled a watch, saying why (etcd's auth refused its
    /// range, the key was empty or reserved).
    #[error("watch cancelled: {0}")]
    WatchCanceled(String),
    /// A limit was reached: a request too large, a full queue, the quota
    /// (NOSPACE), too many watch streams.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// No leader, a timeout inside the cluster, a member removed: retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The state does not allow it (the keyring locked, an object in use).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A concurrent change won; the request may be retried.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's deadline passed (`Member::ready`).
    #[error("timed out: {0}")]
    Timeout(String),
    /// Not an RPC the member serves.
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// The member's keyspace is damaged (CORRUPT).
    #[error("data loss: {0}")]
    DataLoss(String),
    /// The member was stopped; its clients and watchers answer this.
    #[error("the member is stopped")]
    Stopped,
    /// The configuration was refused before anything started.
    #[error("configuration: {0}")]
    Config(String),
    /// A file or socket failed (a busy port, an unwritable data directory).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Any other code the services answer (internal errors).
    #[error("{code:?}: {message}")]
    Internal { code: Code, message: String },
}

impl From<tonic::Status> for EmbedError {
    fn from(s: tonic::Status) -> EmbedError {
        let m = s.message().to_string();
        match s.code() {
            Code::NotFound => EmbedError::NotFound(m),
            Code::AlreadyExists => EmbedError::AlreadyExists(m),
            Code::PermissionDenied | Code::Unauthenticated => EmbedError::PermissionDenied(m),
            Code::InvalidArgument => EmbedError::InvalidArgument(m),
            Code::OutOfRange => EmbedError::OutOfRange(m),
            Code::ResourceExhausted => EmbedError::ResourceExhausted(m),
            Code::Unavailable => EmbedError::Unavailable(m),
            Code::FailedPrecondition => EmbedError::FailedPrecondition(m),
            Code::Aborted => EmbedError::Conflict(m),
            Code::DeadlineExceeded | Code::Cancelled => EmbedError::Timeout(m),
            Code::Unimplemented => EmbedError::Unimplemented(m),
            Code::DataLoss => EmbedError::DataLoss(m),
            code => EmbedError::Internal { code, message: m },
        }
    }
}

impl EmbedError {
    /// A start that failed: an I/O error as `Io` (its context kept in the
    /// message), anything else as `Config`.
    pub(super) fn from_start(e: anyhow::Error) -> EmbedError {
        match e.downcast_ref::<std::io::Error>() {
            Some(io) => EmbedError::Io(std::io::Error::new(io.kind(), format!("{e:#}"))),
            None => EmbedError::Config(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_one_variant_and_keeps_the_message() {
        let e = EmbedError::from(tonic::Status::permission_denied("no"));
        assert!(
            matches!(&e, EmbedError::PermissionDenied(m) if m == "no"),
            "{e:?}"
        );
        let e = EmbedError::from(tonic::Status::not_found("secret x"));
        assert!(matches!(e, EmbedError::NotFound(_)));
        let e = EmbedError::from(tonic::Status::resource_exhausted("big"));
        assert!(matches!(e, EmbedError::ResourceExhausted(_)));
        let e = EmbedError::from(tonic::Status::internal("boom"));
        assert!(matches!(
            e,
            EmbedError::Internal {
                code: Code::Internal,
                ..
            }
        ));
        let e = EmbedError::from_start(anyhow::Error::from(std::io::Error::from(
            std::io::ErrorKind::AddrInUse,
        )));
        assert!(matches!(e, EmbedError::Io(ref io) if io.kind() == std::io::ErrorKind::AddrInUse));
    }
}
