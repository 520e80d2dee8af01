//! The unlock key's text form: `SECRETD-UNLOCK-` and the 32 key bytes in
//! unpadded base64url (43 characters). Operators copy it from a terminal
//! into a password manager and back, so parsing forgives surrounding
//! whitespace and nothing else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use zeroize::Zeroize;

use crate::{CryptoError, Key, KEY_BYTES};

pub const UNLOCK_KEY_PREFIX: &str = "SECRETD-UNLOCK-";

/// The key as an operator sees it. The returned string holds key material:
/// callers zeroize it once shown.
pub fn format_unlock_key(key: &Key) -> String {
    format!(
        "{UNLOCK_KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(key.expose())
    )
}

pub fn parse_unlock_key(text: &str) -> Result<Key, CryptoError> {
    let bad = |why: &str| CryptoError::Keyring(format!("invalid unlock key: {why}"));
    let t = text.trim();
    let body = t
        .strip_prefix(UNLOCK_KEY_PREFIX)
        .ok_or_else(|| bad(&format!("it must start with {UNLOCK_KEY_PREFIX}")))?;
    let mut raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| bad("it is not in the format secretd prints"))?;
    if raw.len() != KEY_BYTES {
        raw.zeroize();
        return Err(bad("it has the wrong length"));
    }
    let key = Key::from_slice(&raw);
    raw.zeroize();
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let k = Key::generate();
        let s = format_unlock_key(&k);
        assert!(s.starts_with(UNLOCK_KEY_PREFIX));
        assert_eq!(s.len(), UNLOCK_KEY_PREFIX.len() + 43);
        assert_eq!(
            parse_unlock_key(&format!(" {s}\n")).unwrap().expose(),
            k.expose()
        );
        for bad in [
            "",
            "SECRETD-UNLOCK-",
            "SWMKEY-1-abc",
            &s[..s.len() - 1],
            &format!("{s}A"),
        ] {
            assert!(
                parse_unlock_key(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("invalid unlock key"),
                "{bad}"
            );
        }
    }
}
