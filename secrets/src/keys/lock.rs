//! Autolock: the keyring on disk is sealed under an unlock key that is
//! never on disk, so a stolen disk (or a member restarted by a thief)
//! opens nothing until an operator gives the key.
//!
//! The cluster's unlock key lives in raft only sealed under the newest KEK
//! ([`LockRecord`]), plus a verifier. A member that holds the KEK follows a
//! change by itself (`follow_lock`, run by every sync): it opens the new
//! unlock key with its KEK and re-seals its keyring file. A member that
//! restarts has neither, and waits for `secretctl cluster unlock`.
//!
//! Switching on writes `keyring.locked` before it removes `keyring` and
//! `wrap.key`; switching off writes a new `wrap.key` and `keyring` before
//! it removes `keyring.locked`. A crash between the two steps leaves both
//! forms; `Keys::load` keeps the locked one.

use prost::Message;
use secretd_crypto::{Cipher, Key, Keyring};
use zeroize::Zeroize;

use super::disk::{remove_file, KEYRING_FILE, LOCKED_KEYRING_FILE, WRAP_KEY_FILE};
use super::{Keys, Wrap};
use crate::layout;
use crate::pb::records::LockRecord;
use crate::txns::{put, unchanged};
use crate::{aad, Error, Result};

fn invalid_key() -> Error {
    Error::invalid("invalid unlock key; the member stays locked")
}

impl Keys {
    /// Whether this member needs the unlock key before it can serve
    /// secrets: it is locked, or autolock is on and it holds no keyring (a
    /// member added since, which peers send keys only sealed under the
    /// unlock key) or is still on its key file (down when the cluster
    /// switched, and the KEK rotated since). `GetSettings` reports this as
    /// locked, so that `secretctl cluster unlock` gives the key to such a
    /// member too instead of answering that it is not locked.
    pub fn needs_unlock_key(&self, autolock: bool) -> bool {
        let st = self.state.read();
        matches!(st.wrap, Wrap::Locked)
            || (autolock && (st.ring.is_none() || matches!(st.wrap, Wrap::File(_))))
    }

    /// Whether the cluster has autolock on (this member's view).
    pub async fn autolock(&self) -> Result<bool> {
        Ok(self.lock_record(false).await?.0.autolock)
    }

    /// Makes the keyring on disk match the lock record: sealed under the
    /// current unlock key while autolock is on, under `wrap.key` while off.
    /// Needs the keyring in memory (an unlocked member); a locked member
    /// changes nothing.
    pub(crate) fn follow_lock(&self, lock: &LockRecord) -> Result<()> {
        let mut st = self.state.write();
        let Some(ring) = st.ring.as_ref() else {
            return Ok(());
        };
        match (&st.wrap, lock.autolock) {
            (Wrap::File(_), true) => {}
            (Wrap::Unlock { epoch, .. }, true) if *epoch != lock.epoch => {}
            (Wrap::Locked, true) => return Ok(()),
            (Wrap::Unlock { .. } | Wrap::Locked, false) => {
                let wrap = secretd_crypto::load_or_create_key_file(&self.dir.join(WRAP_KEY_FILE))
                    .map_err(Error::internal)?;
                st.wrap = Wrap::File(wrap);
                self.persist(&st)?;
                remove_file(&self.dir, LOCKED_KEYRING_FILE)?;
                tracing::warn!(
                    "autolock is off: this member's keyring is wrapped by keys/wrap.key"
                );
                return Ok(());
            }
            _ => return Ok(()),
        }
        let key = ring
            .open(&aad::unlock_key(lock.epoch), &lock.unlock_key_sealed)
            .map_err(|e| Error::internal(format!("cannot open the cluster's unlock key: {e}")))?;
        let key = Key::from_slice(key.expose()).map_err(Error::internal)?;
        secretd_crypto::verify_unlock_key(lock.epoch, &key, &lock.verifier)
            .map_err(|_| Error::internal("the cluster's unlock key does not match its verifier"))?;
        let was_file = matches!(st.wrap, Wrap::File(_));
        st.wrap = Wrap::Unlock {
            key,
            epoch: lock.epoch,
        };
        self.persist(&st)?;
        if was_file {
            remove_file(&self.dir, KEYRING_FILE)?;
            remove_file(&self.dir, WRAP_KEY_FILE)?;
            tracing::warn!("autolock is on: this member's keyring is sealed under the unlock key");
        } else {
            tracing::info!(
                epoch = lock.epoch,
                "re-sealed the keyring under a new unlock key"
            );
        }
        drop(st);
        self.dump_for_tests();
        Ok(())
    }

    /// Writes a lock record with a fresh unlock key (autolock on, or a new
    /// key), if the record is still at `read_rev`. Returns the key.
    async fn new_unlock_key(&self, lock: &LockRecord, read_rev: i64) -> Result<Key> {
        let key = Key::generate();
        let epoch = lock.epoch + 1;
        let (sealed, generation) = {
            let st = self.state.read();
            let ring = st.ring.as_ref().ok_or(Error::Locked)?;
            (
                ring.seal_with(
                    Cipher::XChaCha20Poly1305,
                    &aad::unlock_key(epoch),
                    key.expose(),
                )
                .map_err(Error::internal)?,
                ring.current(),
            )
        };
        let rec = LockRecord {
            autolock: true,
            epoch,
            unlock_key_sealed: sealed,
            kek_generation: generation,
            verifier: secretd_crypto::unlock_verifier(epoch, &key).map_err(Error::internal)?,
        };
        self.write_lock(&rec, read_rev).await?;
        Ok(key)
    }

    pub(crate) async fn write_lock(&self, rec: &LockRecord, read_rev: i64) -> Result<()> {
        let ok = self
            .txn(
                vec![unchanged(layout::lock_key(), read_rev)],
                vec![put(layout::lock_key(), rec.encode_to_vec())],
            )
            .await?;
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict(
                "the cluster's lock settings changed meanwhile; try again".into(),
            ))
        }
    }

    /// Switches autolock on (returns the new unlock key, formatted) or off.
    pub async fn set_autolock(&self, enabled: bool) -> Result<Option<String>> {
        // A KEK must exist to seal the unlock key under.
        self.sync(enabled).await?;
        let _guard = self.changing.lock().await;
        self.forget_sealing();
        let (lock, rev) = self.lock_record(true).await?;
        if lock.autolock == enabled {
            return Err(Error::AutolockAlready { on: enabled });
        }
        if self.is_locked() {
            return Err(Error::Locked);
        }
        if enabled {
            let missing = self.members_without_kek().await?;
            if !missing.is_empty() {
                return Err(Error::Precondition(format!(
                    "cannot switch autolock on yet: {} {} not received the key-encryption key (is it running?); try again once every member is up",
                    missing.join(", "),
                    if missing.len() == 1 { "has" } else { "have" }
                )));
            }
            let key = self.new_unlock_key(&lock, rev).await?;
            let (lock, _) = self.lock_record(true).await?;
            self.follow_lock(&lock)?;
            tracing::warn!("autolock switched on");
            Ok(Some(secretd_crypto::format_unlock_key(&key)))
        } else {
            let rec = LockRecord {
                autolock: false,
                epoch: lock.epoch,
                ..Default::default()
            };
            self.write_lock(&rec, rev).await?;
            self.follow_lock(&rec)?;
            tracing::warn!("autolock switched off");
            Ok(None)
        }
    }

    /// The current unlock key, or (with `rotate`) a new one; empty when
    /// autolock is off.
    pub async fn unlock_key(&self, rotate: bool) -> Result<String> {
        let _guard = self.changing.lock().await;
        self.forget_sealing();
        let (lock, rev) = self.lock_record(true).await?;
        if !lock.autolock {
            // As Docker's daemon: without autolock the key is empty (the
            // CLI says "no unlock key is set"); there is none to rotate
            // (docker/cli's words, which it says before asking).
            if rotate {
                return Err(Error::Precondition(
                    "cannot rotate because autolock is not turned on".into(),
                ));
            }
            return Ok(String::new());
        }
        if self.is_locked() {
            return Err(Error::Locked);
        }
        if !rotate {
            // Follow first: this member may not have seen the newest key.
            self.follow_lock(&lock)?;
            let st = self.state.read();
            return match &st.wrap {
                Wrap::Unlock { key, .. } => Ok(secretd_crypto::format_unlock_key(key)),
                _ => Err(Error::Unavailable(
                    "this member has not switched to autolock yet; try again".into(),
                )),
            };
        }
        let key = self.new_unlock_key(&lock, rev).await?;
        let (lock, _) = self.lock_record(true).await?;
        self.follow_lock(&lock)?;
        tracing::warn!(epoch = lock.epoch, "unlock key rotated");
        Ok(secretd_crypto::format_unlock_key(&key))
    }

    /// Unlocks this member with an operator's key. A wrong key changes
    /// nothing: the member stays locked.
    pub async fn unlock(&self, mut text: String) -> Result<()> {
        let parsed = secretd_crypto::parse_unlock_key(&text);
        text.zeroize();
        let key = parsed.map_err(|e| Error::invalid(e.to_string()))?;
        let _guard = self.changing.lock().await;
        self.forget_sealing();
        let (lock, _) = self.lock_record(true).await?;
        // Two members need the key without being locked, both found by the
        // simulation, both told "not locked" before: one that holds no
        // keyring at all (added while autolock is on), and one still on its
        // key file after the cluster switched to autolock (it was down or
        // slow) and then rotated: its peers hand out KEKs sealed under the
        // unlock key, and the unlock key is sealed under a KEK it lacks.
        let needs_key = {
            let st = self.state.read();
            st.ring.is_none() || (lock.autolock && matches!(st.wrap, Wrap::File(_)))
        };
        if !self.is_locked() && !needs_key {
            return Err(Error::NotLocked);
        }
        let current = secretd_crypto::verify_unlock_key(lock.epoch, &key, &lock.verifier).is_ok();
        // 1. The keyring file, if this key seals it (the current key, or
        //    one the cluster replaced while this member was down).
        let from_file = self.read_locked_keyring(&key)?;
        let file_opened = from_file.is_some();
        match from_file {
            Some((ring, epoch)) => {
                let mut st = self.state.write();
                st.ring = Some(ring);
                st.wrap = Wrap::Unlock { key, epoch };
            }
            None if current => {
                // The key is right but this member's file is sealed under
                // an older one (or it has none): fetch every generation
                // from peers, sealed under this key.
                self.state.write().wrap = Wrap::Unlock {
                    key,
                    epoch: lock.epoch,
                };
            }
            None => return Err(invalid_key()),
        }
        // Fetch what is missing, follow the lock record (an older key
        // moves to the current one), save. Any failure leaves the member
        // locked, as it was.
        let synced = self.sync_locked(false).await;
        self.finish_unlock(synced, file_opened)
    }

    /// The end of `unlock`, after the sync with the cluster: the keyring
    /// saved under the unlock key, or the member locked again and why.
    /// `file_opened`: the key opened this member's own keyring file.
    fn finish_unlock(&self, synced: Result<Option<u32>>, file_opened: bool) -> Result<()> {
        match synced {
            Ok(_) if self.state.read().ring.is_some() => {
                self.persist(&self.state.read())?;
                // A member that was still on its key file: the keyring is
                // sealed under the unlock key now, as autolock wants. (If
                // autolock went off meanwhile, the sync put it back on the
                // key file, which stays.)
                if matches!(self.state.read().wrap, Wrap::Unlock { .. }) {
                    for plain in [KEYRING_FILE, WRAP_KEY_FILE] {
                        if self.dir.join(plain).exists() {
                            remove_file(&self.dir, plain)?;
                        }
                    }
                }
                self.dump_for_tests();
                tracing::warn!("member unlocked");
                Ok(())
            }
            Ok(_) => {
                self.relock();
                Err(Error::Unavailable(
                    "the unlock key is right, but no peer could send the keyring yet; try again"
                        .into(),
                ))
            }
            // Its own file is sealed under an earlier key and no member
            // that could send it the keys is unlocked (or left): only
            // that earlier key opens it. Docker's advice holds here too:
            // keep a replaced unlock key until every manager has the new.
            Err(Error::Locked) if !file_opened => {
                self.relock();
                Err(Error::invalid(
                    "this member's keyring is sealed under an earlier unlock key, and no \
                     unlocked member can send it the keys: unlock it with the unlock key that \
                     was current when it stopped",
                ))
            }
            Err(e) => {
                self.relock();
                Err(e)
            }
        }
    }

    /// The keyring in `keys/keyring.locked`, if `key` seals it, with the
    /// epoch it was sealed at.
    fn read_locked_keyring(&self, key: &Key) -> Result<Option<(Keyring, u64)>> {
        match std::fs::read(self.dir.join(LOCKED_KEYRING_FILE)) {
            Ok(blob) if blob.len() > 8 => {
                let epoch = u64::from_be_bytes(blob[..8].try_into().expect("8 bytes"));
                Ok(Keyring::import(key, &blob[8..]).ok().map(|r| (r, epoch)))
            }
            Ok(_) => Err(Error::internal(format!(
                "{} is truncated",
                self.dir.join(LOCKED_KEYRING_FILE).display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::internal(format!(
                "cannot read the locked keyring: {e}"
            ))),
        }
    }

    fn relock(&self) {
        let mut st = self.state.write();
        st.ring = None;
        st.wrap = Wrap::Locked;
    }
}
