//! secretd's encryption at rest: envelope encryption of secret versions.
//!
//! Each secret version is sealed with its own random 256-bit data key (DEK);
//! the DEK is wrapped by the cluster's key-encryption key (KEK). The sealed
//! blob is self-describing (format version, cipher, KEK generation, nonces),
//! so ciphers and KEK generations can coexist during a rotation.
//!
//! A leaf crate: it knows nothing of raft, RocksDB or gRPC. Keys and
//! plaintexts live in types that zeroize on drop and never print their bytes.

mod cipher;
mod error;
mod kek_check;
mod keyfile;
mod keyring;
mod sealed;
mod secret;
mod unlock_key;

pub use cipher::Cipher;
pub use error::CryptoError;
pub use kek_check::{kek_verifier, unlock_verifier, verify_kek, verify_unlock_key};
pub use keyfile::{create_whole, load_or_create_key_file};
pub use keyring::Keyring;
#[cfg(debug_assertions)]
pub use sealed::set_dek_observer;
pub use sealed::{Context, KekId, SealedHeader, FORMAT_VERSION};
pub use secret::{key_lock_failures, Key, SecretBytes, KEY_BYTES};
pub use unlock_key::{format_unlock_key, parse_unlock_key, UNLOCK_KEY_PREFIX};
