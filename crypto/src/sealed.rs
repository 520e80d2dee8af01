//! The sealed format, version 1. Every field a reader needs is in the blob:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SDSE"
//! 4       1     format version (1)
//! 5       1     cipher: 1 = XChaCha20-Poly1305, 2 = AES-256-GCM
//! 6       4     KEK generation that wraps the DEK (u32, big-endian)
//! 10      N     nonce of the DEK wrap (N = 24 or 12, by cipher)
//! 10+N    48    the DEK (32 bytes) sealed by the KEK, with its tag
//! 58+N    N     nonce of the payload
//! 58+2N   *     the payload sealed by the DEK, with its 16-byte tag
//! ```
//!
//! Associated data binds both seals to what the blob is: the object's kind,
//! id and version ([`Context`]). The DEK wrap also binds the header (so the
//! KEK generation cannot be edited); the payload binds the header minus the
//! KEK generation, so a KEK rotation re-wraps the DEK without touching the
//! payload.

use crate::cipher::{Cipher, TAG_BYTES};
use crate::{CryptoError, Key, KEY_BYTES};

pub const FORMAT_VERSION: u8 = 1;

/// A KEK generation number. Generations only grow. Defined with the
/// format, whose header carries it, so that the keyring and the key
/// verifiers both build on the format rather than on each other.
pub type KekId = u32;
const MAGIC: &[u8; 4] = b"SDSE";
const HEADER_BYTES: usize = 10;
const WRAPPED_DEK_BYTES: usize = KEY_BYTES + TAG_BYTES;
/// Longest kind or object id a context may carry.
const CONTEXT_FIELD_MAX: usize = 255;

/// What a sealed blob belongs to. A blob opened with a different context
/// fails to authenticate, so ciphertexts cannot be swapped between records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    pub kind: &'a str,
    pub object_id: &'a str,
    pub version: u64,
}

impl Context<'_> {
    fn encode(&self, domain: &[u8], header: &[u8]) -> Result<Vec<u8>, CryptoError> {
        for (what, v) in [
            ("context kind", self.kind),
            ("context object id", self.object_id),
        ] {
            if v.len() > CONTEXT_FIELD_MAX {
                return Err(CryptoError::TooLong {
                    what,
                    len: v.len(),
                    max: CONTEXT_FIELD_MAX,
                });
            }
        }
        let mut aad = Vec::with_capacity(
            domain.len() + header.len() + self.kind.len() + self.object_id.len() + 10,
        );
        aad.extend_from_slice(domain);
        aad.extend_from_slice(header);
        aad.push(self.kind.len() as u8);
        aad.extend_from_slice(self.kind.as_bytes());
        aad.push(self.object_id.len() as u8);
        aad.extend_from_slice(self.object_id.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        Ok(aad)
    }
}

/// The parsed fixed part of a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    pub cipher: Cipher,
    pub kek_id: KekId,
}

/// The parts of a blob, borrowed from it.
pub(crate) struct Parts<'a> {
    pub header: SealedHeader,
    pub header_bytes: &'a [u8],
    pub wrap_nonce: &'a [u8],
    pub wrapped_dek: &'a [u8],
    pub payload_nonce: &'a [u8],
    pub payload: &'a [u8],
}

pub(crate) fn min_len(cipher: Cipher) -> usize {
    HEADER_BYTES + 2 * cipher.nonce_bytes() + WRAPPED_DEK_BYTES + TAG_BYTES
}

impl SealedHeader {
    /// Reads the header, checking magic, version, cipher and length.
    pub fn parse(blob: &[u8]) -> Result<SealedHeader, CryptoError> {
        split(blob).map(|p| p.header)
    }
}

pub(crate) fn split(blob: &[u8]) -> Result<Parts<'_>, CryptoError> {
    if blob.len() < HEADER_BYTES {
        return Err(CryptoError::Truncated {
            len: blob.len(),
            min: HEADER_BYTES,
        });
    }
    if &blob[..4] != MAGIC {
        return Err(CryptoError::NotSealed);
    }
    if blob[4] != FORMAT_VERSION {
        return Err(CryptoError::UnsupportedVersion(blob[4]));
    }
    let cipher = Cipher::from_id(blob[5])?;
    let kek_id = u32::from_be_bytes([blob[6], blob[7], blob[8], blob[9]]);
    let min = min_len(cipher);
    if blob.len() < min {
        return Err(CryptoError::Truncated {
            len: blob.len(),
            min,
        });
    }
    let n = cipher.nonce_bytes();
    let (wrap_nonce, rest) = blob[HEADER_BYTES..].split_at(n);
    let (wrapped_dek, rest) = rest.split_at(WRAPPED_DEK_BYTES);
    let (payload_nonce, payload) = rest.split_at(n);
    Ok(Parts {
        header: SealedHeader { cipher, kek_id },
        header_bytes: &blob[..HEADER_BYTES],
        wrap_nonce,
        wrapped_dek,
        payload_nonce,
        payload,
    })
}

fn header_bytes(cipher: Cipher, kek_id: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(MAGIC);
    h[4] = FORMAT_VERSION;
    h[5] = cipher.id();
    h[6..].copy_from_slice(&kek_id.to_be_bytes());
    h
}

fn wrap_aad(ctx: &Context<'_>, header: &[u8]) -> Result<Vec<u8>, CryptoError> {
    ctx.encode(b"secretd/dek\0", header)
}

fn payload_aad(ctx: &Context<'_>, header: &[u8]) -> Result<Vec<u8>, CryptoError> {
    // Magic, version and cipher; not the KEK generation (see module doc).
    ctx.encode(b"secretd/payload\0", &header[..6])
}

/// Seals `plaintext` under a fresh DEK wrapped by `kek`.
pub(crate) fn seal(
    cipher: Cipher,
    kek_id: u32,
    kek: &Key,
    ctx: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let header = header_bytes(cipher, kek_id);
    let dek = Key::generate();
    #[cfg(debug_assertions)]
    observe_dek(&dek);
    let wrap_nonce = cipher.random_nonce();
    let wrapped = cipher.seal(kek, &wrap_nonce, &wrap_aad(ctx, &header)?, dek.expose())?;
    let payload_nonce = cipher.random_nonce();
    let payload = cipher.seal(&dek, &payload_nonce, &payload_aad(ctx, &header)?, plaintext)?;
    let mut out = Vec::with_capacity(min_len(cipher) + plaintext.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&payload_nonce);
    out.extend_from_slice(&payload);
    debug_assert_eq!(out.len(), min_len(cipher) + plaintext.len());
    Ok(out)
}

/// Test builds only: a function that sees every DEK generated, so the
/// canary test can look for DEK bytes on disk. Release builds do not
/// contain it.
#[cfg(debug_assertions)]
static DEK_OBSERVER: std::sync::OnceLock<fn(&[u8])> = std::sync::OnceLock::new();

#[cfg(debug_assertions)]
pub fn set_dek_observer(f: fn(&[u8])) {
    let _ = DEK_OBSERVER.set(f);
}

#[cfg(debug_assertions)]
fn observe_dek(dek: &Key) {
    if let Some(f) = DEK_OBSERVER.get() {
        f(dek.expose());
    }
}

/// Unwraps the DEK of a blob with the KEK it names.
pub(crate) fn unwrap_dek(
    parts: &Parts<'_>,
    kek: &Key,
    ctx: &Context<'_>,
) -> Result<Key, CryptoError> {
    let c = parts.header.cipher;
    let mut raw = c.open(
        kek,
        parts.wrap_nonce,
        &wrap_aad(ctx, parts.header_bytes)?,
        parts.wrapped_dek,
    )?;
    let dek = Key::from_slice(&raw);
    zeroize::Zeroize::zeroize(&mut raw);
    dek
}

pub(crate) fn open_payload(
    parts: &Parts<'_>,
    dek: &Key,
    ctx: &Context<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let c = parts.header.cipher;
    c.open(
        dek,
        parts.payload_nonce,
        &payload_aad(ctx, parts.header_bytes)?,
        parts.payload,
    )
}

/// A blob whose DEK is re-wrapped by another KEK; payload bytes unchanged.
pub(crate) fn rewrap(
    parts: &Parts<'_>,
    dek: &Key,
    new_kek_id: u32,
    new_kek: &Key,
    ctx: &Context<'_>,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = parts.header.cipher;
    let header = header_bytes(cipher, new_kek_id);
    let wrap_nonce = cipher.random_nonce();
    let wrapped = cipher.seal(new_kek, &wrap_nonce, &wrap_aad(ctx, &header)?, dek.expose())?;
    let mut out = Vec::with_capacity(min_len(cipher) + parts.payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&wrap_nonce);
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(parts.payload_nonce);
    out.extend_from_slice(parts.payload);
    Ok(out)
}
