//! secretstore.v1 over gRPC: the services over `secretd_secrets` (the
//! objects and the keyring live there), the one mapping of its errors to
//! gRPC statuses, and the gRPC way members fetch KEK generations.
//!
//! - `service`: Secrets, Configs, Tasks and Admin.
//! - `agent`: the node agent's stream and fetch, bound to its certificate.
//! - `kek_peers`: `Raft.FetchKek` as the keyring's [`KekPeers`].
//!
//! [`KekPeers`]: secretd_secrets::keys::KekPeers

pub mod agent;
pub mod kek_peers;
pub mod service;

use secretd_client::reason::Reason;
use secretd_secrets::Error;
use tonic::{Code, Status};

/// A secrets error as the status clients get: the code each variant
/// stands for, the message as the error says it, and for the structured
/// ones the reason clients match on (`secretd_client::reason`).
pub fn status(e: Error) -> Status {
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
            return crate::errors::status(s);
        }
    };
    let mut s = Status::new(code, e.to_string());
    if let Some(r) = reason {
        r.attach(s.metadata_mut());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_messages_and_reasons() {
        let s = status(Error::NotFound {
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
        let s = status(Error::Locked);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), secretd_secrets::LOCKED_MESSAGE);
        assert_eq!(Reason::of(&s), Some(Reason::Locked));
        let s = status(Error::Store(secretd_store::StoreError::NoLeader));
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "etcdserver: no leader")
        );
        assert_eq!(Reason::of(&s), None);
    }
}
