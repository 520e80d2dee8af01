//! Key verifiers: a known payload sealed under a key. The cluster records
//! each KEK generation's verifier, and the unlock key's, in raft, so a
//! member that receives a key from a peer (or from an operator typing an
//! unlock key) can tell whether it is the cluster's key, without the key
//! itself ever entering the log.

use crate::sealed::{self, Context, KekId};
use crate::{Cipher, CryptoError, Key, SecretBytes};

const CHECK_PAYLOAD: &[u8] = b"secretd key-encryption key check v1";

/// What a verifier checks: the purposes are bound into the seal's context,
/// so a KEK verifier can never pass as an unlock key's and the other way
/// round.
const KEK_PURPOSE: &str = "kek-check";
const UNLOCK_PURPOSE: &str = "unlock-key-check";

fn verifier(purpose: &str, id: u64, key: &Key) -> Result<Vec<u8>, CryptoError> {
    let ctx = Context {
        kind: purpose,
        object_id: "",
        version: id,
    };
    // The header's KEK field only has 32 bits; the id lives in the context.
    sealed::seal(
        Cipher::XChaCha20Poly1305,
        id as u32,
        key,
        &ctx,
        CHECK_PAYLOAD,
    )
}

fn verify(purpose: &str, id: u64, key: &Key, verifier: &[u8]) -> Result<(), CryptoError> {
    let ctx = Context {
        kind: purpose,
        object_id: "",
        version: id,
    };
    let parts = sealed::split(verifier)?;
    if u64::from(parts.header.kek_id) != id & u64::from(u32::MAX) {
        return Err(CryptoError::UnknownKey(parts.header.kek_id));
    }
    let dek = sealed::unwrap_dek(&parts, key, &ctx)?;
    let plain = SecretBytes::new(sealed::open_payload(&parts, &dek, &ctx)?);
    if plain.expose() != CHECK_PAYLOAD {
        return Err(CryptoError::Authentication);
    }
    Ok(())
}

/// Seals the check payload under `key` as KEK generation `id`.
pub fn kek_verifier(id: KekId, key: &Key) -> Result<Vec<u8>, CryptoError> {
    verifier(KEK_PURPOSE, u64::from(id), key)
}

/// Ok if `key` is the key that made `verifier` for generation `id`.
pub fn verify_kek(id: KekId, key: &Key, verifier: &[u8]) -> Result<(), CryptoError> {
    verify(KEK_PURPOSE, u64::from(id), key, verifier)
}

/// Seals the check payload under an unlock key of epoch `epoch`.
pub fn unlock_verifier(epoch: u64, key: &Key) -> Result<Vec<u8>, CryptoError> {
    verifier(UNLOCK_PURPOSE, epoch, key)
}

/// Ok if `key` is the unlock key that made `verifier` for `epoch`.
pub fn verify_unlock_key(epoch: u64, key: &Key, verifier: &[u8]) -> Result<(), CryptoError> {
    verify(UNLOCK_PURPOSE, epoch, key, verifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_bind_key_id_and_purpose() {
        let k = Key::generate();
        let v = kek_verifier(3, &k).unwrap();
        assert!(verify_kek(3, &k, &v).is_ok());
        assert!(verify_kek(4, &k, &v).is_err());
        assert!(verify_kek(3, &Key::generate(), &v).is_err());
        assert!(verify_unlock_key(3, &k, &v).is_err());
        let u = unlock_verifier(7, &k).unwrap();
        assert!(verify_unlock_key(7, &k, &u).is_ok());
        assert!(verify_unlock_key(8, &k, &u).is_err());
        assert!(verify_kek(7, &k, &u).is_err());
    }
}
