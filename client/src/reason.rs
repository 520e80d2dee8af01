//! Why secretd refused, in a form clients match on instead of message
//! text: the server puts a reason (and, for a missing object, its kind and
//! name) in the status's metadata, and clients read it here. The message
//! stays the human sentence, in Docker's or etcd's words.

use tonic::metadata::{MetadataMap, MetadataValue};

/// The reason, one of the words below.
pub const REASON_KEY: &str = "secretd-reason";
/// A missing object's kind ("secret", "config", "task").
pub const KIND_KEY: &str = "secretd-kind";
/// A missing object's name or id as asked (binary: it may be any text).
pub const NAME_KEY: &str = "secretd-name-bin";

/// A structured refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The secret, config or task asked for does not exist.
    NotFound { kind: String, name: String },
    /// The member's keyring is locked until `secretctl cluster unlock`.
    Locked,
    /// Unlock was asked of a member that is not locked.
    NotLocked,
    /// Autolock is already in the state asked for.
    AutolockAlready,
    /// An ID prefix matched several objects.
    Ambiguous,
}

impl Reason {
    fn word(&self) -> &'static str {
        match self {
            Reason::NotFound { .. } => "not-found",
            Reason::Locked => "locked",
            Reason::NotLocked => "not-locked",
            Reason::AutolockAlready => "autolock-already",
            Reason::Ambiguous => "ambiguous",
        }
    }

    /// Writes the reason into a status's metadata (the server side).
    pub fn attach(&self, md: &mut MetadataMap) {
        md.insert(REASON_KEY, MetadataValue::from_static(self.word()));
        if let Reason::NotFound { kind, name } = self {
            if let Ok(v) = MetadataValue::try_from(kind.as_str()) {
                md.insert(KIND_KEY, v);
            }
            md.insert_bin(NAME_KEY, MetadataValue::from_bytes(name.as_bytes()));
        }
    }

    /// The reason a status carries, if any (the client side).
    pub fn of(s: &tonic::Status) -> Option<Reason> {
        let md = s.metadata();
        let word = md.get(REASON_KEY)?.to_str().ok()?;
        Some(match word {
            "not-found" => Reason::NotFound {
                kind: md.get(KIND_KEY)?.to_str().ok()?.to_string(),
                name: String::from_utf8_lossy(&md.get_bin(NAME_KEY)?.to_bytes().ok()?).into_owned(),
            },
            "locked" => Reason::Locked,
            "not-locked" => Reason::NotLocked,
            "autolock-already" => Reason::AutolockAlready,
            "ambiguous" => Reason::Ambiguous,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata() {
        for r in [
            Reason::NotFound {
                kind: "secret".into(),
                name: "db pw\n\u{e9}".into(),
            },
            Reason::Locked,
            Reason::NotLocked,
            Reason::AutolockAlready,
            Reason::Ambiguous,
        ] {
            let mut s = tonic::Status::not_found("x");
            r.attach(s.metadata_mut());
            // As a client sees it: through the wire's header map.
            let http = s.into_http::<()>();
            let back = tonic::Status::from_header_map(http.headers()).unwrap();
            assert_eq!(Reason::of(&back), Some(r));
        }
        assert_eq!(
            Reason::of(&tonic::Status::not_found("secret x not found")),
            None
        );
    }
}
