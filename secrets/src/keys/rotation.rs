//! KEK rotation: a new generation, every stored DEK re-wrapped under it in
//! bounded txns, then the older generations retired (every member destroys
//! its copy). No downtime: secrets stay readable throughout, because a
//! member opens with any generation it holds until the retirement.
//!
//! Why nothing sealed under an old generation survives: a seal's txn
//! carries the guard "generation g+1 is not registered" ([`super::Sealed`]),
//! so once g+1 is registered no new g blob can commit, and the re-wrap
//! scan, which starts after that, sees every g blob there is. Each re-wrap
//! is guarded by the blob's mod revision, so a concurrent rotate or remove
//! wins and the scan simply looks again.
//!
//! Interrupted rotations resume: `rotate` on a cluster whose newest
//! generation still has live older ones finishes that rotation instead of
//! starting another.

use prost::Message;
use secretd_crypto::{Cipher, Key, SealedHeader};
use secretd_store::pb::etcdserverpb::{Compare, RangeRequest, RequestOp};

use super::Keys;
use crate::layout;
use crate::pb::records::{KekRecord, LockRecord};
use crate::txns::{put, unchanged};
use crate::{aad, now_ns, Error, Result};

/// Blobs re-wrapped per txn: bounds the raft entry (a blob is at most
/// ~512 KB; most are small) and the time one txn holds the apply loop.
const REWRAP_BATCH_MAX: usize = 64;
/// Bytes of blobs per txn, whichever limit comes first.
const REWRAP_BATCH_BYTES_MAX: usize = 1 << 20;
/// Keys read per scan page.
const SCAN_PAGE_MAX: i64 = 256;
/// Full scans before giving up (each pass only finds blobs that changed
/// under it: a busy cluster converges in two or three).
const PASSES_MAX: usize = 8;

pub struct Rotated {
    pub generation: u32,
    pub retired: Vec<u32>,
    pub rewrapped: u64,
}

impl Keys {
    /// Adds a generation (unless resuming one), re-wraps every DEK under
    /// it, reseals the unlock key under it, and retires the older ones.
    pub async fn rotate(&self) -> Result<Rotated> {
        if self.is_locked() {
            return Err(Error::Locked);
        }
        self.sync(true).await?;
        let _guard = self.changing.lock().await;
        self.forget_sealing();
        self.sync_locked(false).await?;
        let registry = self.registry(true).await?;
        let live: Vec<&KekRecord> = registry.iter().filter(|r| !r.retired).collect();
        let newest = live
            .iter()
            .map(|r| r.generation)
            .max()
            .ok_or_else(|| Error::internal("no key-encryption key to rotate"))?;
        let newest = if live.len() > 1 && self.abandoned(newest).await? {
            tracing::warn!(
                generation = newest,
                "replacing a KEK generation no member holds with a new one"
            );
            self.add_generation(newest).await?
        } else if live.len() > 1 {
            tracing::info!(generation = newest, "resuming an interrupted KEK rotation");
            newest
        } else {
            self.add_generation(newest).await?
        };
        // Nothing moves under the new generation until a quorum holds it
        // (this member recorded it when it registered it): the old ones are
        // destroyed at the end.
        self.ack_held(&self.registry(true).await?).await?;
        self.await_quorum_held(newest).await?;
        let rewrapped = self.rewrap_all(newest).await?;
        self.reseal_unlock_key(newest).await?;
        let retired = self.retire_older(newest).await?;
        tracing::warn!(
            generation = newest,
            ?retired,
            rewrapped,
            "KEK rotation complete"
        );
        Ok(Rotated {
            generation: newest,
            retired,
            rewrapped,
        })
    }

    /// Generates `current + 1`, saves it, registers its verifier.
    async fn add_generation(&self, current: u32) -> Result<u32> {
        let generation = current
            .checked_add(1)
            .ok_or_else(|| Error::internal("KEK generations exhausted"))?;
        let key = Key::generate();
        let verifier = secretd_crypto::kek_verifier(generation, &key).map_err(Error::internal)?;
        {
            let mut st = self.state.write();
            let ring = st.ring.as_mut().ok_or(Error::Locked)?;
            ring.insert(generation, key).map_err(Error::internal)?;
            // Saved before it is registered, as generation 1 is.
            self.persist(&st)?;
        }
        self.dump_for_tests();
        let record = KekRecord {
            generation,
            verifier,
            created_by: self.node.id(),
            created_at_ns: now_ns(),
            retired: false,
        };
        if !self.register(&record).await? {
            return Err(Error::Conflict(
                "another member started a KEK rotation meanwhile; run rotate-key again to finish it".into(),
            ));
        }
        tracing::warn!(generation, "registered a new key-encryption key generation");
        Ok(generation)
    }

    /// Re-wraps every stored secret version not sealed under `newest`.
    async fn rewrap_all(&self, newest: u32) -> Result<u64> {
        let mut total = 0u64;
        for _ in 0..PASSES_MAX {
            let (found, done) = self.rewrap_pass(newest).await?;
            total += done;
            if found == 0 {
                return Ok(total);
            }
        }
        Err(Error::Conflict(format!(
            "secrets kept changing during {PASSES_MAX} re-wrap passes; run rotate-key again to finish"
        )))
    }

    /// One scan of `data/`: (old blobs found, re-wrapped).
    async fn rewrap_pass(&self, newest: u32) -> Result<(u64, u64)> {
        let end = layout::prefix_end(&layout::all_data_prefix());
        let mut from = layout::all_data_prefix();
        let (mut found, mut done) = (0u64, 0u64);
        loop {
            let page = self
                .node
                .range(RangeRequest {
                    key: from.clone(),
                    range_end: end.clone(),
                    limit: SCAN_PAGE_MAX,
                    ..Default::default()
                })
                .await?;
            let mut batch: Vec<(Compare, RequestOp)> = Vec::new();
            let mut batch_bytes = 0;
            for kv in &page.kvs {
                let header = SealedHeader::parse(&kv.value).map_err(|e| {
                    Error::internal(format!(
                        "stored secret version {} is corrupt: {e}",
                        String::from_utf8_lossy(&kv.key)
                    ))
                })?;
                if header.kek_id == newest {
                    continue;
                }
                found += 1;
                let (id, version) = layout::parse_data_key(&kv.key)
                    .ok_or_else(|| Error::internal("a key under data/ is not a secret version"))?;
                let ctx = aad::secret_version(&id, version);
                let blob = {
                    let st = self.state.read();
                    let ring = st.ring.as_ref().ok_or(Error::Locked)?;
                    if ring.current() != newest {
                        return Err(Error::internal("the keyring's newest generation changed"));
                    }
                    ring.rewrap(&ctx, &kv.value).map_err(|e| {
                        Error::internal(format!(
                            "cannot re-wrap secret {id} version {version}: {e}"
                        ))
                    })?
                };
                batch_bytes += blob.len();
                batch.push((
                    unchanged(kv.key.clone(), kv.mod_revision),
                    put(kv.key.clone(), blob),
                ));
                if batch.len() >= REWRAP_BATCH_MAX || batch_bytes >= REWRAP_BATCH_BYTES_MAX {
                    done += self.commit_rewraps(std::mem::take(&mut batch)).await?;
                    batch_bytes = 0;
                }
            }
            done += self.commit_rewraps(batch).await?;
            match page.kvs.last() {
                Some(last) if page.more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok((found, done)),
            }
        }
    }

    /// Commits a batch of re-wraps in one txn; if any blob changed under
    /// it, falls back to one txn each so the others still land.
    async fn commit_rewraps(&self, batch: Vec<(Compare, RequestOp)>) -> Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len() as u64;
        let (compare, success): (Vec<_>, Vec<_>) = batch.iter().cloned().unzip();
        if self.txn(compare, success).await? {
            return Ok(n);
        }
        let mut done = 0;
        for (c, op) in batch {
            if self.txn(vec![c], vec![op]).await? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Under autolock, seals the unlock key under `newest` so it survives
    /// the old generation's retirement.
    async fn reseal_unlock_key(&self, newest: u32) -> Result<()> {
        let (lock, rev) = self.lock_record(true).await?;
        if !lock.autolock || lock.kek_generation == newest {
            return Ok(());
        }
        let sealed = {
            let st = self.state.read();
            let ring = st.ring.as_ref().ok_or(Error::Locked)?;
            let ctx = aad::unlock_key(lock.epoch);
            let key = ring.open(&ctx, &lock.unlock_key_sealed).map_err(|e| {
                Error::internal(format!("cannot open the cluster's unlock key: {e}"))
            })?;
            ring.seal_with(Cipher::XChaCha20Poly1305, &ctx, key.expose())
                .map_err(Error::internal)?
        };
        let rec = LockRecord {
            unlock_key_sealed: sealed,
            kek_generation: newest,
            ..lock
        };
        self.write_lock(&rec, rev).await
    }

    /// Marks every live generation older than `newest` retired, provided
    /// the unlock key no longer depends on one, and destroys this member's
    /// copies (the others follow within a sync period).
    async fn retire_older(&self, newest: u32) -> Result<Vec<u32>> {
        let registry = self.registry(true).await?;
        let (lock, lock_rev) = self.lock_record(true).await?;
        if lock.autolock && lock.kek_generation != newest {
            return Err(Error::Conflict(
                "the unlock key changed during the rotation; run rotate-key again to finish".into(),
            ));
        }
        let old: Vec<&KekRecord> = registry
            .iter()
            .filter(|r| !r.retired && r.generation < newest)
            .collect();
        if old.is_empty() {
            return Ok(Vec::new());
        }
        // The unlock key must still be sealed under `newest` when the old
        // generations go.
        let compare = vec![unchanged(layout::lock_key(), lock_rev)];
        let mut success = Vec::new();
        for r in &old {
            success.push(put(
                layout::kek_key(r.generation),
                KekRecord {
                    retired: true,
                    ..(*r).clone()
                }
                .encode_to_vec(),
            ));
        }
        // Nothing old may remain: scan once more, then retire. No old blob
        // can commit after this scan: seals carry the generation guard.
        let (found, _) = self.rewrap_pass(newest).await?;
        if found > 0 {
            return Err(Error::Conflict(
                "secrets changed during the rotation; run rotate-key again to finish".into(),
            ));
        }
        if !self.txn(compare, success).await? {
            return Err(Error::Conflict(
                "the cluster's keys changed during the rotation; run rotate-key again to finish"
                    .into(),
            ));
        }
        let generations: Vec<u32> = old.iter().map(|r| r.generation).collect();
        self.sync_locked(false).await?;
        Ok(generations)
    }
}
