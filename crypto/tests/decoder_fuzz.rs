//! Property-based fuzzing of the sealed-format decoder: arbitrary bytes,
//! and single-byte mutations and truncations of valid blobs, must give a
//! specific error, never a panic, and never a plaintext. Prints how many
//! inputs ran (SECRETD_FUZZ_CASES raises the count for a long run).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use secretd_crypto::{Cipher, Context, CryptoError, Keyring, SealedHeader};

const CTX: Context<'static> = Context {
    kind: "secret",
    object_id: "id",
    version: 3,
};

fn cases() -> u32 {
    std::env::var("SECRETD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn ring(c: u8) -> Keyring {
    Keyring::generate(if c.is_multiple_of(2) {
        Cipher::XChaCha20Poly1305
    } else {
        Cipher::Aes256Gcm
    })
}

#[test]
fn decoder_rejects_garbage_mutations_and_truncations() {
    let runner = || {
        TestRunner::new(Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        })
    };
    let inputs = std::cell::Cell::new(0u64);
    let strategy = (proptest::collection::vec(any::<u8>(), 0..200), any::<u8>());
    runner()
        .run(&strategy, |(bytes, c)| {
            inputs.set(inputs.get() + 2);
            let r = ring(c);
            prop_assert!(r.open(&CTX, &bytes).is_err());
            let _ = SealedHeader::parse(&bytes);
            // Garbage behind a valid-looking header still fails cleanly.
            let mut framed = b"SDSE\x01".to_vec();
            framed.push(1 + c % 2);
            framed.extend_from_slice(&1u32.to_be_bytes());
            framed.extend_from_slice(&bytes);
            prop_assert!(r.open(&CTX, &framed).is_err());
            Ok(())
        })
        .unwrap();
    let strategy = (
        proptest::collection::vec(any::<u8>(), 1..64),
        any::<usize>(),
        1u8..=255,
        any::<usize>(),
        any::<u8>(),
    );
    runner()
        .run(&strategy, |(data, pos, flip, cut, c)| {
            inputs.set(inputs.get() + 2);
            let r = ring(c);
            let blob = r.seal(&CTX, &data).unwrap();
            let mut m = blob.clone();
            let i = pos % m.len();
            m[i] ^= flip;
            match r.open(&CTX, &m) {
                Err(
                    CryptoError::Authentication
                    | CryptoError::NotSealed
                    | CryptoError::UnsupportedVersion(_)
                    | CryptoError::UnknownCipher(_)
                    | CryptoError::UnknownKey(_)
                    | CryptoError::Truncated { .. },
                ) => {}
                other => prop_assert!(false, "mutation at {} gave {:?}", i, other.map(|p| p.len())),
            }
            prop_assert!(r.open(&CTX, &blob[..cut % blob.len()]).is_err());
            Ok(())
        })
        .unwrap();
    eprintln!(
        "sealed-format decoder fuzz: {} inputs, all rejected with a specific error",
        inputs.get()
    );
    assert!(inputs.get() >= 4 * cases() as u64);
}
