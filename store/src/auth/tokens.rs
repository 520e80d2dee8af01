//! Simple tokens (etcd's `--auth-token simple`): random strings that stand
//! for a user for a while.
//!
//! The member that checks a password makes the token and proposes only its
//! SHA-256, so every member learns it when the entry is applied and a
//! client may take its token to any member, as with etcd, while no usable
//! token is ever written to the raft log or anywhere else on disk. Tokens
//! live in memory: a restarted member has forgotten them, and its clients
//! authenticate again on "invalid auth token", as etcd's clients do.
//!
//! A token is the random part, a dot, and the raft index of the entry that
//! issued it (etcd's format). The log carries the random part's hash; the
//! index lets a member that has not applied that entry yet wait for it
//! instead of refusing a token another member just issued.
//!
//! A token lives `ttl` after its last use (etcd's `--auth-token-ttl`,
//! renewed on use as etcd does) and dies with its user, a password change
//! or `auth disable`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Tokens one member remembers. Past it, the token closest to expiry is
/// forgotten first (its client authenticates again).
pub const TOKENS_MAX: usize = 64 * 1024;
/// A token longer than this is not one of ours (and is not hashed).
pub const TOKEN_BYTES_MAX: usize = 256;
/// Random characters in a token: 32 of 62 is 190 bits.
const TOKEN_CHARS: usize = 32;

pub type TokenHash = [u8; 32];

pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The random part of a token (what the log's hash is of) and the raft
/// index that issued it, when the token has one.
pub fn split(token: &str) -> (&str, Option<u64>) {
    match token.rsplit_once('.') {
        Some((random, index)) => match index.parse() {
            Ok(i) => (random, Some(i)),
            Err(_) => (token, None),
        },
        None => (token, None),
    }
}

/// A new random token.
pub fn generate() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(TOKEN_CHARS)
        .map(char::from)
        .collect()
}

struct Entry {
    user: String,
    expires: Instant,
}

pub struct Tokens {
    ttl: Duration,
    by_hash: HashMap<TokenHash, Entry>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            ttl,
            by_hash: HashMap::new(),
        }
    }

    pub fn insert(&mut self, hash: TokenHash, user: &str, now: Instant) {
        if self.by_hash.len() >= TOKENS_MAX {
            self.by_hash.retain(|_, e| e.expires > now);
        }
        if self.by_hash.len() >= TOKENS_MAX {
            let soonest = self
                .by_hash
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(h, _)| *h);
            if let Some(h) = soonest {
                self.by_hash.remove(&h);
            }
        }
        self.by_hash.insert(
            hash,
            Entry {
                user: user.to_string(),
                expires: now + self.ttl,
            },
        );
        assert!(self.by_hash.len() <= TOKENS_MAX);
    }

    /// The user a live token stands for; using it restarts its TTL.
    pub fn user(&mut self, token: &str, now: Instant) -> Option<String> {
        if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
            return None;
        }
        let h = hash(split(token).0);
        let e = self.by_hash.get_mut(&h)?;
        if e.expires <= now {
            self.by_hash.remove(&h);
            return None;
        }
        e.expires = now + self.ttl;
        Some(e.user.clone())
    }

    pub fn forget_user(&mut self, user: &str) {
        self.by_hash.retain(|_, e| e.user != user);
    }

    pub fn clear(&mut self) {
        self.by_hash.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_renew_and_die_with_their_user() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut t = Tokens::new(ttl);
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        t.insert(hash(&a), "alice", t0);
        t.insert(hash(&b), "bob", t0);
        assert_eq!(
            t.user(&a, t0 + Duration::from_secs(9)).as_deref(),
            Some("alice")
        );
        // Renewed at 9 s: alive at 18 s, gone at 19 s + 1.
        assert_eq!(
            t.user(&a, t0 + Duration::from_secs(18)).as_deref(),
            Some("alice")
        );
        assert_eq!(t.user(&b, t0 + Duration::from_secs(10)), None, "expired");
        assert_eq!(t.user(&b, t0), None, "forgotten once expired");
        t.forget_user("alice");
        assert_eq!(t.user(&a, t0), None);
        assert_eq!(t.user("", t0), None);
        assert_eq!(t.user(&"x".repeat(TOKEN_BYTES_MAX + 1), t0), None);
        // The index suffix names the entry; the hash is of the random part.
        let c = generate();
        t.insert(hash(&c), "carol", t0);
        assert_eq!(t.user(&format!("{c}.42"), t0).as_deref(), Some("carol"));
        assert_eq!(split(&format!("{c}.42")), (c.as_str(), Some(42)));
        assert_eq!(split("abc.x"), ("abc.x", None));
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut t = Tokens::new(Duration::from_secs(3600));
        for i in 0..TOKENS_MAX + 10 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            t.insert(h, "u", t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.by_hash.len(), TOKENS_MAX);
    }
}
