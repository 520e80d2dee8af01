//! Key material and plaintexts: zeroized on drop, never formatted.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

pub const KEY_BYTES: usize = 32;

/// Keys whose page could not be locked in memory (`mlock`), so far.
static LOCK_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many keys could not be locked in RAM (so might reach swap): a
/// process reports this once, as a warning.
pub fn key_lock_failures() -> u64 {
    LOCK_FAILURES.load(Ordering::Relaxed)
}

/// A 256-bit symmetric key (KEK, DEK or key-file key). It lives on the
/// heap, in a page locked in RAM where the OS allows, and is zeroized on
/// drop. (Pages are not unlocked on drop: `mlock` does not count, and the
/// page may hold another key.)
pub struct Key(Box<[u8; KEY_BYTES]>);

impl Key {
    fn boxed(mut arr: [u8; KEY_BYTES]) -> Key {
        let b = Box::new(arr);
        arr.zeroize();
        // SAFETY: mlock on memory we own, for its exact length.
        if unsafe { libc::mlock(b.as_ptr().cast(), KEY_BYTES) } != 0 {
            LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        Key(b)
    }

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Key {
        let mut k = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Key::boxed(k)
    }

    pub fn from_slice(b: &[u8]) -> Result<Key, CryptoError> {
        let arr: [u8; KEY_BYTES] = b.try_into().map_err(|_| CryptoError::KeyLength {
            want: KEY_BYTES,
            got: b.len(),
        })?;
        Ok(Key::boxed(arr))
    }

    /// The raw bytes, for the cipher. Callers must not copy them out.
    pub fn expose(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        Key::boxed(*self.0)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

/// Plaintext secret data.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let k = Key::from_slice(&[0xab; 32]).unwrap();
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{k:?}"), "Key([REDACTED])");
        assert_eq!(format!("{s:?}"), "SecretBytes([REDACTED; 7 bytes])");
        assert!(Key::from_slice(&[1; 31]).is_err());
        assert_ne!(Key::generate().expose(), Key::generate().expose());
    }
}
