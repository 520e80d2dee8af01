//! The encryption contexts (AEAD associated data) of everything secretd
//! seals, built in this one place. A context binds a sealed blob to what it
//! is: a blob moved to another object, version or purpose fails to open.
//! Changing a context here changes what every stored blob must carry, so
//! it is a change of the sealed format (ARCHITECTURE.md: "changing the
//! sealed format").

use secretd_crypto::Context;

/// A secret's version `version` (`data/<id>/<version>`).
pub fn secret_version(object_id: &str, version: u64) -> Context<'_> {
    Context {
        kind: "secret",
        object_id,
        version,
    }
}

/// The cluster's unlock key of epoch `epoch`, sealed under the newest KEK
/// in the lock record.
pub fn unlock_key(epoch: u64) -> Context<'static> {
    Context {
        kind: "unlock-key",
        object_id: "",
        version: epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contexts are part of the sealed format: a change here would
    /// make every stored blob unreadable.
    #[test]
    fn contexts_are_stable() {
        let c = secret_version("abc", 7);
        assert_eq!((c.kind, c.object_id, c.version), ("secret", "abc", 7));
        let c = unlock_key(3);
        assert_eq!((c.kind, c.object_id, c.version), ("unlock-key", "", 3));
    }
}
