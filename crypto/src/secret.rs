//! Key material and plaintexts: zeroized on drop, never formatted.

use std::cell::RefCell;
use std::fmt;
use std::mem::ManuallyDrop;
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
/// page may hold another key. A dropped key's box, zeroed, is kept for the
/// same thread's next key: `SPARE_BOXES`.)
pub struct Key(ManuallyDrop<Box<[u8; KEY_BYTES]>>);

/// Spare boxes a thread keeps at most.
const SPARE_BOXES_MAX: usize = 16;

thread_local! {
    /// Boxes of keys this thread dropped: zeroed, still locked in RAM, for
    /// its next keys. Every seal makes a DEK and every open unwraps one, so
    /// without them each would cost an `mlock` system call.
    // Boxes, not keys by value: a box's address is what was `mlock`ed.
    #[allow(clippy::vec_box)]
    static SPARE_BOXES: RefCell<Vec<Box<[u8; KEY_BYTES]>>> = const { RefCell::new(Vec::new()) };
}

impl Key {
    fn boxed(mut arr: [u8; KEY_BYTES]) -> Key {
        let spare = SPARE_BOXES
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
            .ok()
            .flatten();
        let b = match spare {
            Some(mut b) => {
                *b = arr;
                b
            }
            None => {
                let b = Box::new(arr);
                // SAFETY: mlock on memory we own, for its exact length.
                if unsafe { libc::mlock(b.as_ptr().cast(), KEY_BYTES) } != 0 {
                    LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
                }
                b
            }
        };
        arr.zeroize();
        Key(ManuallyDrop::new(b))
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
        Key::boxed(**self.0)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
        // SAFETY: the box is taken once, here, and `self` is not used after.
        let b = unsafe { ManuallyDrop::take(&mut self.0) };
        // Kept for this thread's next key, or freed (zeroed) past the bound
        // or while the thread exits.
        let _ = SPARE_BOXES.try_with(move |s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.len() < SPARE_BOXES_MAX {
                    s.push(b);
                }
            }
        });
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

    #[test]
    fn a_dropped_keys_box_is_zeroed_and_kept_for_the_next_key() {
        // A thread of its own: its spare boxes are this test's alone.
        std::thread::spawn(|| {
            let first = Key::from_slice(&[0xcd; KEY_BYTES]).unwrap();
            let at = first.expose().as_ptr();
            drop(first);
            SPARE_BOXES.with(|s| {
                let s = s.borrow();
                assert_eq!(s.len(), 1);
                assert_eq!(**s.last().unwrap(), [0; KEY_BYTES], "a spare box is zeroed");
            });
            let next = Key::generate();
            assert_eq!(next.expose().as_ptr(), at, "the spare box is used again");
            assert_ne!(*next.expose(), [0; KEY_BYTES]);
            let copy = next.clone();
            assert_eq!(copy.expose(), next.expose());
            // No more spare boxes kept than the bound.
            let many: Vec<Key> = (0..3 * SPARE_BOXES_MAX).map(|_| Key::generate()).collect();
            drop(many);
            SPARE_BOXES.with(|s| assert_eq!(s.borrow().len(), SPARE_BOXES_MAX));
        })
        .join()
        .unwrap();
    }
}
