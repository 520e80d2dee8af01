//! The AEADs we build on, against published test vectors: RFC 8439 §2.8.2
//! (ChaCha20-Poly1305), draft-irtf-cfrg-xchacha A.1 (XChaCha20-Poly1305) and
//! a NIST CAVS AES-256-GCM case. Run through the same calls our sealing uses.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, XChaCha20Poly1305};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const KEY: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
const AAD: &str = "50515253c0c1c2c3c4c5c6c7";
const PLAINTEXT: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";

fn check<C: KeyInit + Aead>(key: &[u8], nonce: &[u8], aad: &[u8], pt: &[u8], ct_and_tag: &[u8]) {
    let c = C::new_from_slice(key).unwrap();
    let n = nonce.try_into().unwrap();
    assert_eq!(c.encrypt(n, Payload { msg: pt, aad }).unwrap(), ct_and_tag);
    assert_eq!(
        c.decrypt(
            n,
            Payload {
                msg: ct_and_tag,
                aad
            }
        )
        .unwrap(),
        pt
    );
    let mut bad = ct_and_tag.to_vec();
    bad[0] ^= 1;
    assert!(c.decrypt(n, Payload { msg: &bad, aad }).is_err());
}

#[test]
fn rfc8439_chacha20_poly1305() {
    let ct = hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116
                  1ae10b594f09e26a7e902ecbd0600691");
    check::<ChaCha20Poly1305>(
        &hex(KEY),
        &hex("070000004041424344454647"),
        &hex(AAD),
        PLAINTEXT,
        &ct,
    );
}

#[test]
fn xchacha20_poly1305_draft_vector() {
    let ct = hex("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e
                  c0875924c1c7987947deafd8780acf49");
    check::<XChaCha20Poly1305>(
        &hex(KEY),
        &hex("404142434445464748494a4b4c4d4e4f5051525354555657"),
        &hex(AAD),
        PLAINTEXT,
        &ct,
    );
}

#[test]
fn nist_cavs_aes256_gcm() {
    let ct = hex("8995ae2e6df3dbf96fac7b7137bae67f eca5aa77d51d4a0a14d9c51e1da474ab");
    check::<Aes256Gcm>(
        &hex("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b"),
        &hex("ac93a1a6145299bde902f21a"),
        &hex("1e0889016f67601c8ebea4943bc23ad6"),
        &hex("2d71bcfa914e4ac045b2aa60955fad24"),
        &ct,
    );
}
