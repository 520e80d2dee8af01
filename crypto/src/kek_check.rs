//! KEK verifiers: a known payload sealed under a KEK generation. The cluster
//! records each generation's verifier in raft, so a member that receives a
//! KEK from a peer (or generated one and raced another member) can tell
//! whether it holds the cluster's key for that generation, without the key
//! itself ever entering the log.

use crate::keyring::KekId;
use crate::sealed::{self, Context};
use crate::{Cipher, CryptoError, Key, SecretBytes};

const CHECK_PAYLOAD: &[u8] = b"secretd key-encryption key check v1";

fn context(id: KekId) -> (String, u64) {
    ("kek-check".to_string(), u64::from(id))
}

/// Seals the check payload under `key` as generation `id`.
pub fn kek_verifier(id: KekId, key: &Key) -> Result<Vec<u8>, CryptoError> {
    let (kind, version) = context(id);
    let ctx = Context {
        kind: &kind,
        object_id: "",
        version,
    };
    sealed::seal(Cipher::XChaCha20Poly1305, id, key, &ctx, CHECK_PAYLOAD)
}

/// Ok if `key` is the key that made `verifier` for generation `id`.
pub fn verify_kek(id: KekId, key: &Key, verifier: &[u8]) -> Result<(), CryptoError> {
    let (kind, version) = context(id);
    let ctx = Context {
        kind: &kind,
        object_id: "",
        version,
    };
    let parts = sealed::split(verifier)?;
    if parts.header.kek_id != id {
        return Err(CryptoError::UnknownKey(parts.header.kek_id));
    }
    let dek = sealed::unwrap_dek(&parts, key, &ctx)?;
    let plain = SecretBytes::new(sealed::open_payload(&parts, &dek, &ctx)?);
    if plain.expose() != CHECK_PAYLOAD {
        return Err(CryptoError::Authentication);
    }
    Ok(())
}
