//! What can go wrong opening or handling sealed data: each case is specific,
//! and none reveals key material or plaintext.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("sealed data is truncated: {len} bytes, at least {min} needed")]
    Truncated { len: usize, min: usize },
    #[error("not sealed data (bad magic bytes)")]
    NotSealed,
    #[error("sealed data has format version {0}, this build reads version 1")]
    UnsupportedVersion(u8),
    #[error("sealed data names unknown cipher {0}")]
    UnknownCipher(u8),
    #[error(
        "sealed data needs key-encryption key generation {0}, which this keyring does not hold"
    )]
    UnknownKey(u32),
    #[error("sealed data does not authenticate: wrong key, wrong object or version, or tampered")]
    Authentication,
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("key must be {want} bytes, got {got}")]
    KeyLength { want: usize, got: usize },
    #[error("{0}")]
    Keyring(String),
    #[error("{path}: {msg}")]
    KeyFile { path: PathBuf, msg: String },
}
