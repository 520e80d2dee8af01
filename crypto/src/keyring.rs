//! The cluster keyring: every generation of the key-encryption key (KEK)
//! still in use. New data is sealed with the newest generation; any held
//! generation opens data. A rotation adds a generation, re-wraps every DEK
//! (`rewrap`), then retires the old generation, after which nothing it
//! sealed can be opened with this keyring.
//!
//! How the keyring itself is protected (a key file in the data directory,
//! or an unlock key under autolock) is the caller's choice: `export` seals
//! it under any wrapping key, so the sealed data format never depends on it.

use std::collections::BTreeMap;

use crate::cipher::Cipher;
use crate::kek_check;
use crate::sealed::{self, Context, KekId};
use crate::{CryptoError, Key, SecretBytes, KEY_BYTES};

const EXPORT_MAGIC: &[u8; 4] = b"SDKR";
const EXPORT_VERSION: u8 = 1;
/// Generations one keyring may hold (a rotation needs two at a time).
const GENERATIONS_MAX: usize = 16;

pub struct Keyring {
    keks: BTreeMap<KekId, Key>,
    cipher: Cipher,
    /// Per generation, the verifier its key last matched (`verify`): a
    /// member checks its keys against the cluster's records before every
    /// seal, and the check (an AEAD open) cost as much as the seal itself.
    /// An entry goes whenever its generation's key changes or goes.
    verified: std::sync::Mutex<BTreeMap<KekId, Vec<u8>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring {{ generations: {:?}, cipher: {} }}",
            self.keks.keys().collect::<Vec<_>>(),
            self.cipher.name()
        )
    }
}

impl Keyring {
    /// A new keyring with one random generation (1).
    pub fn generate(cipher: Cipher) -> Keyring {
        let mut keks = BTreeMap::new();
        keks.insert(1, Key::generate());
        Keyring {
            keks,
            cipher,
            verified: Default::default(),
        }
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// New seals use this cipher; existing blobs keep theirs.
    pub fn set_cipher(&mut self, cipher: Cipher) {
        self.cipher = cipher;
    }

    pub fn current(&self) -> KekId {
        *self
            .keks
            .keys()
            .next_back()
            .expect("a keyring is never empty")
    }

    pub fn generations(&self) -> Vec<KekId> {
        self.keks.keys().copied().collect()
    }

    /// Adds a fresh newest generation and returns its id.
    pub fn add_generation(&mut self) -> Result<KekId, CryptoError> {
        if self.keks.len() >= GENERATIONS_MAX {
            return Err(CryptoError::Keyring(format!(
                "keyring already holds {GENERATIONS_MAX} generations; retire old ones first"
            )));
        }
        let id = self
            .current()
            .checked_add(1)
            .ok_or_else(|| CryptoError::Keyring("KEK generations exhausted".into()))?;
        self.keks.insert(id, Key::generate());
        self.forget_verified(id);
        Ok(id)
    }

    /// Destroys a generation (its key is zeroized). The newest cannot go.
    pub fn retire(&mut self, id: KekId) -> Result<(), CryptoError> {
        if id == self.current() {
            return Err(CryptoError::Keyring(format!(
                "generation {id} is the newest; add a generation before retiring it"
            )));
        }
        self.forget_verified(id);
        self.keks
            .remove(&id)
            .map(drop)
            .ok_or(CryptoError::UnknownKey(id))
    }

    fn forget_verified(&mut self, id: KekId) {
        self.verified
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Whether this keyring holds generation `id` and its key is the one
    /// `verifier` (from the cluster's KEK record) was made with. Remembers
    /// a match, so a repeated check of an unchanged record is a compare.
    pub fn verify(&self, id: KekId, verifier: &[u8]) -> bool {
        let Some(key) = self.keks.get(&id) else {
            return false;
        };
        let mut known = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if known.get(&id).is_some_and(|v| v.as_slice() == verifier) {
            return true;
        }
        let ok = kek_check::verify_kek(id, key, verifier).is_ok();
        if ok {
            known.insert(id, verifier.to_vec());
        }
        ok
    }

    pub fn seal(&self, ctx: &Context<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = self.current();
        sealed::seal(self.cipher, id, &self.keks[&id], ctx, plaintext)
    }

    /// Seals with the newest generation under a cipher chosen per call (the
    /// cluster setting), leaving the keyring's default alone.
    pub fn seal_with(
        &self,
        cipher: Cipher,
        ctx: &Context<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let id = self.current();
        sealed::seal(cipher, id, &self.keks[&id], ctx, plaintext)
    }

    /// A keyring holding one given generation: a member that received the
    /// cluster's KEK from a peer.
    pub fn with_generation(id: KekId, key: Key, cipher: Cipher) -> Keyring {
        let mut keks = BTreeMap::new();
        keks.insert(id, key);
        Keyring {
            keks,
            cipher,
            verified: Default::default(),
        }
    }

    /// Adds (or replaces) a generation received from elsewhere. Replacing
    /// is how a member drops a KEK it generated but lost the race to
    /// register.
    pub fn insert(&mut self, id: KekId, key: Key) -> Result<(), CryptoError> {
        if !self.keks.contains_key(&id) && self.keks.len() >= GENERATIONS_MAX {
            return Err(CryptoError::Keyring(format!(
                "keyring already holds {GENERATIONS_MAX} generations; retire old ones first"
            )));
        }
        self.keks.insert(id, key);
        self.forget_verified(id);
        Ok(())
    }

    /// The key of one generation, to hand to a peer member (over an
    /// authenticated channel only).
    pub fn key(&self, id: KekId) -> Option<&Key> {
        self.keks.get(&id)
    }

    pub fn open(&self, ctx: &Context<'_>, blob: &[u8]) -> Result<SecretBytes, CryptoError> {
        let parts = sealed::split(blob)?;
        let kek = self
            .keks
            .get(&parts.header.kek_id)
            .ok_or(CryptoError::UnknownKey(parts.header.kek_id))?;
        let dek = sealed::unwrap_dek(&parts, kek, ctx)?;
        sealed::open_payload(&parts, &dek, ctx).map(SecretBytes::new)
    }

    /// Re-wraps a blob's DEK under the newest generation. The payload is
    /// authenticated first, so a tampered blob is never blessed anew.
    pub fn rewrap(&self, ctx: &Context<'_>, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parts = sealed::split(blob)?;
        let old = self
            .keks
            .get(&parts.header.kek_id)
            .ok_or(CryptoError::UnknownKey(parts.header.kek_id))?;
        let dek = sealed::unwrap_dek(&parts, old, ctx)?;
        drop(SecretBytes::new(sealed::open_payload(&parts, &dek, ctx)?));
        let id = self.current();
        sealed::rewrap(&parts, &dek, id, &self.keks[&id], ctx)
    }

    /// The keyring sealed under `wrapping` (a key file's key, or an unlock
    /// key): `SDKR`, version, cipher, count, then (id, key) pairs, all
    /// sealed as one payload.
    pub fn export(&self, wrapping: &Key) -> Result<Vec<u8>, CryptoError> {
        let mut buf = Vec::with_capacity(self.keks.len() * (4 + KEY_BYTES) + 2);
        buf.push(self.cipher.id());
        buf.push(self.keks.len() as u8);
        for (id, k) in &self.keks {
            buf.extend_from_slice(&id.to_be_bytes());
            buf.extend_from_slice(k.expose());
        }
        // From here the serialized keys are zeroized when `plain` drops.
        let plain = SecretBytes::new(buf);
        let cipher = Cipher::XChaCha20Poly1305;
        let nonce = cipher.random_nonce();
        let mut out = Vec::new();
        out.extend_from_slice(EXPORT_MAGIC);
        out.push(EXPORT_VERSION);
        out.extend_from_slice(&nonce);
        let aad = out.clone();
        out.extend_from_slice(&cipher.seal(wrapping, &nonce, &aad, plain.expose())?);
        Ok(out)
    }

    pub fn import(wrapping: &Key, blob: &[u8]) -> Result<Keyring, CryptoError> {
        let cipher = Cipher::XChaCha20Poly1305;
        let head = EXPORT_MAGIC.len() + 1 + cipher.nonce_bytes();
        if blob.len() < head + 16 {
            return Err(CryptoError::Truncated {
                len: blob.len(),
                min: head + 16,
            });
        }
        if &blob[..4] != EXPORT_MAGIC {
            return Err(CryptoError::NotSealed);
        }
        if blob[4] != EXPORT_VERSION {
            return Err(CryptoError::UnsupportedVersion(blob[4]));
        }
        let plain = SecretBytes::new(cipher.open(
            wrapping,
            &blob[5..head],
            &blob[..head],
            &blob[head..],
        )?);
        let p = plain.expose();
        let corrupt = || CryptoError::Keyring("exported keyring is malformed".into());
        let (&cid, rest) = p.split_first().ok_or_else(corrupt)?;
        let (&count, rest) = rest.split_first().ok_or_else(corrupt)?;
        if count == 0 || rest.len() != count as usize * (4 + KEY_BYTES) {
            return Err(corrupt());
        }
        let mut keks = BTreeMap::new();
        for chunk in rest.chunks_exact(4 + KEY_BYTES) {
            let id = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if keks.insert(id, Key::from_slice(&chunk[4..])?).is_some() {
                return Err(corrupt());
            }
        }
        Ok(Keyring {
            keks,
            cipher: Cipher::from_id(cid)?,
            verified: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyring file of another format version is refused with both
    /// versions named, before any key is read.
    #[test]
    fn a_keyring_file_of_another_version_is_refused() {
        let wrap = Key::generate();
        let ring = Keyring::generate(Cipher::XChaCha20Poly1305);
        let mut blob = ring.export(&wrap).unwrap();
        assert!(Keyring::import(&wrap, &blob).is_ok());
        blob[4] = EXPORT_VERSION + 1;
        let e = Keyring::import(&wrap, &blob).unwrap_err();
        assert_eq!(e, CryptoError::UnsupportedVersion(EXPORT_VERSION + 1));
        let msg = e.to_string();
        assert!(
            msg.contains("version 2") && msg.contains("reads version 1"),
            "{msg}"
        );
    }

    const CTX: Context<'static> = Context {
        kind: "secret",
        object_id: "abc",
        version: 1,
    };

    /// `verify` remembers a match, and forgets it when the generation's
    /// key is replaced or retired: a replaced key never passes on the old
    /// key's record.
    #[test]
    fn verify_follows_the_generations_key() {
        let mut ring = Keyring::generate(Cipher::XChaCha20Poly1305);
        let v1 = crate::kek_verifier(1, ring.key(1).unwrap()).unwrap();
        assert!(ring.verify(1, &v1));
        assert!(ring.verify(1, &v1), "remembered");
        assert!(!ring.verify(1, b"not a verifier"));
        assert!(!ring.verify(2, &v1), "a generation it does not hold");
        ring.insert(1, Key::generate()).unwrap();
        assert!(!ring.verify(1, &v1), "replaced key, old record");
        let v1b = crate::kek_verifier(1, ring.key(1).unwrap()).unwrap();
        assert!(ring.verify(1, &v1b));
        let g2 = ring.add_generation().unwrap();
        let v2 = crate::kek_verifier(g2, ring.key(g2).unwrap()).unwrap();
        assert!(ring.verify(g2, &v2));
        ring.retire(1).unwrap();
        assert!(!ring.verify(1, &v1b), "retired");
    }

    #[test]
    fn both_ciphers_round_trip_and_bind_their_context() {
        for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let ring = Keyring::generate(cipher);
            let blob = ring.seal(&CTX, b"s3cret").unwrap();
            assert_eq!(
                crate::SealedHeader::parse(&blob).unwrap(),
                crate::SealedHeader { cipher, kek_id: 1 }
            );
            assert_eq!(ring.open(&CTX, &blob).unwrap().expose(), b"s3cret");
            for other in [
                Context { version: 2, ..CTX },
                Context {
                    object_id: "abd",
                    ..CTX
                },
                Context {
                    kind: "config",
                    ..CTX
                },
            ] {
                assert_eq!(
                    ring.open(&other, &blob).unwrap_err(),
                    CryptoError::Authentication
                );
            }
            // Another cluster's keyring cannot open it.
            assert_eq!(
                Keyring::generate(cipher).open(&CTX, &blob).unwrap_err(),
                CryptoError::Authentication
            );
        }
    }

    #[test]
    fn rotation_rewraps_and_retired_keys_open_nothing() {
        let mut ring = Keyring::generate(Cipher::XChaCha20Poly1305);
        let old = ring.seal(&CTX, b"v1").unwrap();
        ring.add_generation().unwrap();
        assert_eq!(ring.open(&CTX, &old).unwrap().expose(), b"v1"); // old data stays readable
        let new = ring.rewrap(&CTX, &old).unwrap();
        assert_eq!(crate::SealedHeader::parse(&new).unwrap().kek_id, 2);
        assert_eq!(new[new.len() - 20..], old[old.len() - 20..]); // payload untouched
        assert!(ring.retire(2).is_err());
        ring.retire(1).unwrap();
        assert_eq!(ring.open(&CTX, &new).unwrap().expose(), b"v1");
        assert_eq!(
            ring.open(&CTX, &old).unwrap_err(),
            CryptoError::UnknownKey(1)
        );
        // Editing the KEK generation in the header breaks authentication.
        let mut forged = new.clone();
        forged[9] = 1;
        assert!(ring.open(&CTX, &forged).is_err());
    }

    #[test]
    fn export_import_round_trip_and_wrong_wrapping_key() {
        let mut ring = Keyring::generate(Cipher::Aes256Gcm);
        ring.add_generation().unwrap();
        let blob = ring.seal(&CTX, b"x").unwrap();
        let w = Key::generate();
        let exported = ring.export(&w).unwrap();
        let back = Keyring::import(&w, &exported).unwrap();
        assert_eq!(back.generations(), vec![1, 2]);
        assert_eq!(back.cipher(), Cipher::Aes256Gcm);
        assert_eq!(back.open(&CTX, &blob).unwrap().expose(), b"x");
        assert_eq!(
            Keyring::import(&Key::generate(), &exported).unwrap_err(),
            CryptoError::Authentication
        );
        assert!(Keyring::import(&w, &exported[..10]).is_err());
        assert!(format!("{back:?}").contains("generations: [1, 2]"));
    }

    #[test]
    fn received_generations_open_what_the_sender_sealed() {
        let sender = Keyring::generate(Cipher::XChaCha20Poly1305);
        let blob = sender.seal_with(Cipher::Aes256Gcm, &CTX, b"p").unwrap();
        assert_eq!(
            crate::SealedHeader::parse(&blob).unwrap().cipher,
            Cipher::Aes256Gcm
        );
        let key = Key::from_slice(sender.key(1).unwrap().expose()).unwrap();
        let check = crate::kek_verifier(1, &key).unwrap();
        let mut receiver = Keyring::with_generation(1, key, Cipher::XChaCha20Poly1305);
        assert_eq!(receiver.open(&CTX, &blob).unwrap().expose(), b"p");
        assert!(crate::verify_kek(1, receiver.key(1).unwrap(), &check).is_ok());
        // A different key for the same generation fails its verifier.
        let other = Key::generate();
        assert_eq!(
            crate::verify_kek(1, &other, &check).unwrap_err(),
            CryptoError::Authentication
        );
        receiver.insert(1, other).unwrap();
        assert!(receiver.open(&CTX, &blob).is_err());
    }
}
