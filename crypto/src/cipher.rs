//! The AEADs a sealed blob may use, behind one small interface.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand::RngCore;

use crate::{CryptoError, Key};

pub const TAG_BYTES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// The default: a 192-bit random nonce never realistically repeats.
    XChaCha20Poly1305,
    /// For deployments that require NIST algorithms.
    Aes256Gcm,
}

impl Cipher {
    pub fn id(self) -> u8 {
        match self {
            Cipher::XChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    pub fn from_id(id: u8) -> Result<Cipher, CryptoError> {
        match id {
            1 => Ok(Cipher::XChaCha20Poly1305),
            2 => Ok(Cipher::Aes256Gcm),
            other => Err(CryptoError::UnknownCipher(other)),
        }
    }

    pub fn nonce_bytes(self) -> usize {
        match self {
            Cipher::XChaCha20Poly1305 => 24,
            Cipher::Aes256Gcm => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "xchacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Parses a cipher name as `name` prints it.
    pub fn from_name(name: &str) -> Result<Cipher, CryptoError> {
        match name {
            "xchacha20-poly1305" => Ok(Cipher::XChaCha20Poly1305),
            "aes-256-gcm" => Ok(Cipher::Aes256Gcm),
            other => Err(CryptoError::Keyring(format!(
                "unknown cipher {other:?}: use xchacha20-poly1305 or aes-256-gcm"
            ))),
        }
    }

    pub fn random_nonce(self) -> Vec<u8> {
        let mut n = vec![0u8; self.nonce_bytes()];
        rand::rngs::OsRng.fill_bytes(&mut n);
        n
    }

    /// Encrypts; returns ciphertext followed by the 16-byte tag.
    pub fn seal(
        self,
        key: &Key,
        nonce: &[u8],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        debug_assert_eq!(nonce.len(), self.nonce_bytes());
        let payload = Payload { msg, aad };
        let out = match self {
            Cipher::XChaCha20Poly1305 => {
                let c = XChaCha20Poly1305::new_from_slice(key.expose())
                    .map_err(|_| CryptoError::KeyLength { want: 32, got: 0 })?;
                c.encrypt(
                    nonce.try_into().map_err(|_| CryptoError::Authentication)?,
                    payload,
                )
            }
            Cipher::Aes256Gcm => {
                let c = Aes256Gcm::new_from_slice(key.expose())
                    .map_err(|_| CryptoError::KeyLength { want: 32, got: 0 })?;
                c.encrypt(
                    nonce.try_into().map_err(|_| CryptoError::Authentication)?,
                    payload,
                )
            }
        };
        // Encryption fails only past the AEAD's length limit (GiBs).
        out.map_err(|_| CryptoError::TooLong {
            what: "plaintext",
            len: msg.len(),
            max: u32::MAX as usize,
        })
    }

    /// Decrypts and authenticates `ct` (ciphertext followed by tag).
    pub fn open(
        self,
        key: &Key,
        nonce: &[u8],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if nonce.len() != self.nonce_bytes() {
            return Err(CryptoError::Authentication);
        }
        let payload = Payload { msg: ct, aad };
        let out = match self {
            Cipher::XChaCha20Poly1305 => XChaCha20Poly1305::new_from_slice(key.expose())
                .map_err(|_| CryptoError::Authentication)?
                .decrypt(
                    nonce.try_into().map_err(|_| CryptoError::Authentication)?,
                    payload,
                ),
            Cipher::Aes256Gcm => Aes256Gcm::new_from_slice(key.expose())
                .map_err(|_| CryptoError::Authentication)?
                .decrypt(
                    nonce.try_into().map_err(|_| CryptoError::Authentication)?,
                    payload,
                ),
        };
        out.map_err(|_| CryptoError::Authentication)
    }
}
