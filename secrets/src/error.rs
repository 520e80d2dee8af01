//! What an object or keyring operation can fail with. Each variant is one
//! way a caller must react, so callers match on variants, never on
//! message text; `api` maps each to a gRPC code (and the structured ones to
//! metadata clients read, `secretd_client::reason`).

use secretd_store::StoreError;

/// The sentence every secret operation on a locked member fails with.
pub const LOCKED_MESSAGE: &str = "member is locked; run secretctl cluster unlock";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; the message is Docker's wording where Docker
    /// has one (InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// A secret, config or task that does not exist, named as asked
    /// (NotFound). `kind` is Docker's word: "secret", "config", "task".
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// An ID prefix that matches several objects (InvalidArgument), in
    /// Docker's words: "secret ab is ambiguous (2 matches found)".
    #[error("{0}")]
    Ambiguous(String),
    /// Something inside an existing object that does not exist, e.g. a
    /// secret version no longer kept (NotFound).
    #[error("{0}")]
    Missing(String),
    /// A name or id already taken (AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// This member's keyring is locked until an operator unlocks it.
    #[error("{LOCKED_MESSAGE}")]
    Locked,
    /// Unlock on a member that is not locked.
    #[error("member is not locked")]
    NotLocked,
    /// Switching autolock to the state it is already in.
    #[error("{}", if *.on {
        "autolock is already on; `secretctl cluster unlock-key` shows the key"
    } else {
        "autolock is already off"
    })]
    AutolockAlready { on: bool },
    /// The cluster is not in a state that allows this (FailedPrecondition).
    #[error("{0}")]
    Precondition(String),
    /// Something changed concurrently too many times; the operation can be
    /// run again (Aborted).
    #[error("{0}")]
    Conflict(String),
    /// Transient: try again shortly (Unavailable).
    #[error("{0}")]
    Unavailable(String),
    /// The caller may not do or see this (PermissionDenied).
    #[error("{0}")]
    Denied(String),
    /// The store refused or failed (its own etcd-shaped error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A broken invariant or unreadable stored state (Internal).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn internal(msg: impl std::fmt::Display) -> Error {
        Error::Internal(msg.to_string())
    }

    pub fn invalid(msg: impl Into<String>) -> Error {
        Error::Invalid(msg.into())
    }

    /// A stored record that does not decode: stored state is damaged.
    pub fn corrupt(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("stored {what} record is corrupt: {e}"))
    }
}
