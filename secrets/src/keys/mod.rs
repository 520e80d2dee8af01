//! This member's copy of the cluster keyring, and how it stays in step with
//! the cluster's.
//!
//! Raft knows KEK generations only by number and verifier ([`KekRecord`]);
//! key material never enters the log. A member seals with the newest
//! registered generation and opens with any it holds. A generation it lacks
//! is fetched from a peer that holds it (`Raft.FetchKek`) and checked
//! against its verifier before use. Retired generations (after a rotation,
//! `rotation.rs`) are destroyed by every member.
//!
//! The first secret creates generation 1: the member that seals it
//! generates a key, saves it, and registers its verifier with a txn that
//! only succeeds if no generation 1 exists. Two members racing both save a
//! key, one registers; the other finds its key fails the registered
//! verifier, replaces it with the winner's, and seals again.
//!
//! On disk, one of two forms ([`Wrap`]):
//! - default: `keys/wrap.key` (32 random bytes, 0600) wraps `keys/keyring`.
//!   That protects RocksDB files, raft snapshots and backups that leave the
//!   member without its `keys/` directory; it does not protect against
//!   someone who can read the whole data directory.
//! - autolock (`lock.rs`): `keys/keyring.locked` is sealed under the
//!   cluster's unlock key, which is never on disk. A restarted member is
//!   locked until an operator gives it the key.

mod disk;
mod lock;
mod peers;
mod rotation;
mod wake;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prost::Message;
use secretd_crypto::{Cipher, Context, Key, Keyring, SealedHeader, SecretBytes};
use secretd_store::node::Node;
use secretd_store::pb::etcdserverpb::{Compare, RangeRequest, RequestOp};

use crate::layout;
use crate::pb::records::{KekRecord, LockRecord};
use crate::txns::{absent, del, put};
use crate::{Error, Result};
use disk::{remove_file, write_file, KEYRING_FILE, LOCKED_KEYRING_FILE, WRAP_KEY_FILE};
pub use peers::{InProcessPeers, KekPeers, PeerKek};
pub use rotation::Rotated;

/// Background sync period: how soon a member picks up a new generation it
/// has not needed yet (so it still has it if the creator dies), destroys a
/// retired one, and follows an autolock change.
const SYNC_INTERVAL_MS: u64 = 500;
/// How long a member waits for a quorum to hold a new KEK generation
/// before it refuses to seal under it, and how often it looks.
const QUORUM_HELD_WAIT_MS: u64 = 10_000;
const QUORUM_HELD_POLL_MS: u64 = 100;
/// Deletes per txn when forgetting a former member (within etcd's
/// default `--max-txn-ops`, 128).
const FORGET_OPS_PER_TXN_MAX: usize = 64;

/// What protects the keyring on disk.
pub(crate) enum Wrap {
    /// `keys/wrap.key` wraps `keys/keyring`.
    File(Key),
    /// Autolock, unlocked: `keys/keyring.locked` is sealed under this
    /// unlock key, of this epoch.
    Unlock { key: Key, epoch: u64 },
    /// Autolock, and no unlock key given yet: no keyring in memory.
    Locked,
}

pub(crate) struct State {
    pub wrap: Wrap,
    pub ring: Option<Keyring>,
}

pub struct Keys {
    pub(crate) node: Arc<Node>,
    peers: Arc<dyn KekPeers>,
    pub(crate) dir: PathBuf,
    pub(crate) state: RwLock<State>,
    /// One create, fetch, lock change or rotation at a time per member.
    pub(crate) changing: tokio::sync::Mutex<()>,
    /// Generations this member has recorded in raft as held (`kekheld/`).
    acked: parking_lot::Mutex<std::collections::BTreeSet<u32>>,
    /// Generations a quorum of voters is known to hold (`kekheld/`).
    quorum_held: parking_lot::Mutex<std::collections::BTreeSet<u32>>,
    /// The generation the last full check before a seal found newest, held
    /// here and by a quorum: later seals use it without reading the
    /// registry and the lock record again. Safe because every seal's txn
    /// carries its guard (no newer generation registered): after a
    /// rotation that txn fails, its caller forgets this
    /// ([`Keys::forget_sealing`]), and the next seal checks in full. Every
    /// change to this member's keyring forgets it too.
    sealing: parking_lot::Mutex<Option<u32>>,
    /// Full syncs run under `changing` so far (what a burst of first
    /// creates must not multiply).
    syncs_locked: std::sync::atomic::AtomicU64,
}

/// A sealed secret version, and the compare its txn must carry: the blob
/// commits only while its KEK generation is still the newest, so a
/// rotation's re-wrap scan (which starts after the next generation is
/// registered) cannot miss it.
pub struct Sealed {
    pub blob: Vec<u8>,
    pub guard: Compare,
}

/// Once per process: keys that could not be locked in RAM may be swapped.
fn warn_if_unlocked() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if secretd_crypto::key_lock_failures() > 0
        && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "cannot lock key pages in RAM (raise RLIMIT_MEMLOCK); keys may be written to swap"
        );
    }
}

#[cfg(debug_assertions)]
mod debug_dump;

impl Keys {
    /// Opens (or creates) `<data_dir>/keys`. A keyring that the key file
    /// cannot open is a fatal error, never silently replaced: it would
    /// orphan every secret this member holds. A locked keyring makes a
    /// locked member.
    pub fn load(
        node: Arc<Node>,
        peers: Arc<dyn KekPeers>,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<Keys>> {
        #[cfg(debug_assertions)]
        debug_dump::install();
        let dir = data_dir.join("keys");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let state = if dir.join(LOCKED_KEYRING_FILE).exists() {
            // A switch to autolock writes the locked keyring before it
            // removes the plain one; finish one that a crash interrupted.
            for stale in [KEYRING_FILE, WRAP_KEY_FILE] {
                if dir.join(stale).exists() {
                    tracing::warn!(
                        file = stale,
                        "removing a key file left by an interrupted switch to autolock"
                    );
                    remove_file(&dir, stale)?;
                }
            }
            tracing::warn!("autolock is on: this member is locked; run secretctl cluster unlock");
            State {
                wrap: Wrap::Locked,
                ring: None,
            }
        } else {
            let wrap = secretd_crypto::load_or_create_key_file(&dir.join(WRAP_KEY_FILE))?;
            let path = dir.join(KEYRING_FILE);
            let ring = match std::fs::read(&path) {
                Ok(blob) => Some(Keyring::import(&wrap, &blob).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: cannot open the keyring with {}: {e}",
                        path.display(),
                        dir.join(WRAP_KEY_FILE).display()
                    )
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
            };
            State {
                wrap: Wrap::File(wrap),
                ring,
            }
        };
        warn_if_unlocked();
        let keys = Arc::new(Keys {
            node,
            peers,
            dir,
            state: RwLock::new(state),
            changing: tokio::sync::Mutex::new(()),
            acked: parking_lot::Mutex::new(Default::default()),
            syncs_locked: Default::default(),
            quorum_held: parking_lot::Mutex::new(Default::default()),
            sealing: parking_lot::Mutex::new(None),
        });
        keys.dump_for_tests();
        Ok(keys)
    }

    /// Test builds: every held KEK goes to the debug dump (if asked for).
    pub(crate) fn dump_for_tests(&self) {
        #[cfg(debug_assertions)]
        {
            let st = self.state.read();
            if let Some(r) = &st.ring {
                for g in r.generations() {
                    if let Some(k) = r.key(g) {
                        debug_dump::kek(g, k.expose());
                    }
                }
            }
            if let Wrap::Unlock { key, .. } = &st.wrap {
                debug_dump::unlock_key(key.expose());
            }
        }
    }

    pub fn is_locked(&self) -> bool {
        matches!(self.state.read().wrap, Wrap::Locked)
    }

    /// Writes the keyring the way the current [`Wrap`] says, atomically
    /// (temp file, fsync, rename, fsync dir). A locked member has nothing
    /// to write.
    pub(crate) fn persist(&self, st: &State) -> Result<()> {
        let Some(ring) = &st.ring else {
            return Ok(());
        };
        match &st.wrap {
            Wrap::File(k) => {
                let blob = ring.export(k).map_err(Error::internal)?;
                write_file(&self.dir, KEYRING_FILE, &blob)
            }
            Wrap::Unlock { key, epoch } => {
                let mut blob = epoch.to_be_bytes().to_vec();
                blob.extend_from_slice(&ring.export(key).map_err(Error::internal)?);
                write_file(&self.dir, LOCKED_KEYRING_FILE, &blob)
            }
            Wrap::Locked => Ok(()),
        }
    }

    /// Generations raft knows, oldest first, retired ones included.
    /// A serializable (local) read is enough to know what this member
    /// already holds; deciding to create or fetch re-reads linearizably.
    pub(crate) async fn registry(&self, linearizable: bool) -> Result<Vec<KekRecord>> {
        let prefix = layout::kek_prefix();
        let resp = self
            .node
            .range(RangeRequest {
                range_end: layout::prefix_end(&prefix),
                key: prefix,
                serializable: !linearizable,
                ..Default::default()
            })
            .await?;
        resp.kvs
            .iter()
            .map(|kv| {
                KekRecord::decode(kv.value.as_slice())
                    .map_err(|e| Error::internal(format!("stored KEK record is corrupt: {e}")))
            })
            .collect()
    }

    /// The autolock record and its mod revision (0: never written).
    pub(crate) async fn lock_record(&self, linearizable: bool) -> Result<(LockRecord, i64)> {
        let resp = self
            .node
            .range(RangeRequest {
                key: layout::lock_key(),
                serializable: !linearizable,
                ..Default::default()
            })
            .await?;
        match resp.kvs.first() {
            Some(kv) => Ok((
                LockRecord::decode(kv.value.as_slice())
                    .map_err(|e| Error::internal(format!("stored lock record is corrupt: {e}")))?,
                kv.mod_revision,
            )),
            None => Ok((LockRecord::default(), 0)),
        }
    }

    fn holds_verified(&self, rec: &KekRecord) -> bool {
        let st = self.state.read();
        st.ring
            .as_ref()
            .is_some_and(|r| r.verify(rec.generation, &rec.verifier))
    }

    fn holds(&self, generation: u32) -> bool {
        let st = self.state.read();
        st.ring
            .as_ref()
            .is_some_and(|r| r.key(generation).is_some())
    }

    /// Nothing to do: every live generation held, no retired one held,
    /// and the keyring wrapped the way the lock record says.
    fn in_step(&self, registry: &[KekRecord], lock: &LockRecord) -> bool {
        let live_held = registry
            .iter()
            .filter(|r| !r.retired)
            .all(|r| self.holds_verified(r));
        let retired_gone = registry
            .iter()
            .filter(|r| r.retired)
            .all(|r| !self.holds(r.generation));
        let wrap_ok = match (&self.state.read().wrap, lock.autolock) {
            (Wrap::File(_), false) => true,
            (Wrap::Unlock { epoch, .. }, true) => *epoch == lock.epoch,
            _ => false,
        };
        // A member restored from a backup with an old member's keys/ holds
        // every generation under a new member id: it must still record
        // that it does (`ack_held`), or a one-member cluster never counts a
        // quorum holding the key and every seal stalls.
        let acked = {
            let acked = self.acked.lock();
            registry
                .iter()
                .filter(|r| !r.retired)
                .all(|r| acked.contains(&r.generation))
        };
        live_held && retired_gone && wrap_ok && acked
    }

    /// Brings this member in step with the cluster: fetches every live
    /// generation it lacks (checked against its verifier), destroys retired
    /// ones, follows autolock changes; creates generation 1 if there is
    /// none and `create`. Returns the newest live generation.
    pub(crate) async fn sync(&self, create: bool) -> Result<Option<u32>> {
        if let Some(newest) = self.in_step_now().await? {
            return Ok(Some(newest));
        }
        let _guard = self.changing.lock().await;
        // Whoever held the lock may have brought this member in step: a
        // first burst of creates synced once per create, the last ~100 ms on.
        if let Some(newest) = self.in_step_now().await? {
            return Ok(Some(newest));
        }
        self.sync_locked(create).await
    }

    /// Full syncs this member has run under its `changing` lock.
    pub fn syncs_locked(&self) -> u64 {
        self.syncs_locked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The newest live generation, if this member already holds every
    /// live one and follows the lock record (read here, serializably).
    async fn in_step_now(&self) -> Result<Option<u32>> {
        let registry = self.registry(false).await?;
        let (lock, _) = self.lock_record(false).await?;
        if registry.iter().any(|r| !r.retired) && self.in_step(&registry, &lock) {
            return Ok(newest_live(&registry));
        }
        Ok(None)
    }

    /// [`Keys::sync`] for a caller that holds `changing`.
    pub(crate) async fn sync_locked(&self, create: bool) -> Result<Option<u32>> {
        self.syncs_locked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.forget_sealing();
        let (lock, _) = self.lock_record(true).await?;
        if lock.autolock && self.is_locked() {
            return Err(Error::Locked);
        }
        let mut registry = self.registry(true).await?;
        if registry.iter().all(|r| r.retired) {
            if !create {
                return Ok(None);
            }
            if !registry.is_empty() {
                return Err(Error::internal("every KEK generation is retired"));
            }
            self.create_first().await?;
            registry = self.registry(true).await?;
        }
        for rec in registry.iter().filter(|r| !r.retired) {
            if !self.holds_verified(rec) {
                if let Err(e) = self.fetch(rec, &lock).await {
                    if !self.abandoned(rec.generation).await? {
                        return Err(e);
                    }
                    tracing::warn!(
                        generation = rec.generation,
                        "key-encryption key generation held by no member (its creator left \
                         the cluster before the others fetched it); the next rotate-key replaces it"
                    );
                }
            }
        }
        self.destroy_retired(&registry)?;
        self.follow_lock(&lock)?;
        self.ack_held(&registry).await?;
        Ok(newest_live(&registry))
    }

    /// Records in raft that this member holds each live generation, once:
    /// switching autolock on waits for every member's record, because a
    /// member without the KEK at that moment could only get it with the
    /// unlock key.
    async fn ack_held(&self, registry: &[KekRecord]) -> Result<()> {
        let me = self.node.id();
        for rec in registry.iter().filter(|r| !r.retired) {
            if self.acked.lock().contains(&rec.generation) || !self.holds_verified(rec) {
                continue;
            }
            let k = layout::kek_held_key(rec.generation, me);
            self.txn(vec![absent(k.clone())], vec![put(k, Vec::new())])
                .await?;
            self.acked.lock().insert(rec.generation);
        }
        Ok(())
    }

    /// Waits until a majority of the voting members have recorded holding
    /// `generation`. Until then the key lives on too few disks: a blob
    /// sealed under it, acknowledged, would be lost with the disk of its
    /// creator (found by the simulation: a member removed and wiped right
    /// after it created the cluster's first KEK took every secret with it).
    pub(crate) async fn await_quorum_held(&self, generation: u32) -> Result<()> {
        if self.quorum_held.lock().contains(&generation) {
            return Ok(());
        }
        let clock = self.node.clock().clone();
        // Registered before the first look, so a record applied between
        // the look and the wait still ends the wait.
        let mut wake = wake::Wake::on(self.node.hub(), layout::kek_held_prefix(generation));
        let started = clock.now();
        loop {
            let (held, voters) = self.holders(generation).await?;
            if held * 2 > voters {
                self.quorum_held.lock().insert(generation);
                return Ok(());
            }
            if clock.now().saturating_duration_since(started)
                >= Duration::from_millis(QUORUM_HELD_WAIT_MS)
            {
                return Err(Error::Unavailable(format!(
                    "key-encryption key generation {generation} is held by {held} of {voters} \
                     voting members, fewer than a quorum; members fetch it within a second, \
                     unless they are down or partitioned: try again"
                )));
            }
            wake.wait(&clock, Duration::from_millis(QUORUM_HELD_POLL_MS))
                .await;
        }
    }

    /// Refuses to remove member `id` if a live KEK generation would then be
    /// held by fewer than a quorum of the remaining voting members: the
    /// secrets sealed under it must outlive a minority of disks. Found by
    /// the simulation: members removed and re-added one after another, each
    /// removal just before the new member synced, drained every copy of
    /// the KEK (etcd's strict reconfiguration check guards the log the
    /// same way).
    pub async fn check_member_removal(&self, id: u64) -> Result<()> {
        let registry = self.registry(true).await?;
        let remaining: Vec<u64> = self
            .node
            .members()
            .iter()
            .filter(|m| !m.is_learner && m.id != id)
            .map(|m| m.id)
            .collect();
        for rec in registry.iter().filter(|r| !r.retired) {
            let held = self.held_by(rec.generation).await?;
            let count = remaining.iter().filter(|m| held.contains(m)).count();
            if held.contains(&id) && remaining.is_empty() {
                return Err(Error::Precondition(format!(
                    "member {id:x} is the last voting member and holds key-encryption key \
                     generation {}: removing it would lose every secret",
                    rec.generation
                )));
            }
            if held.contains(&id) && count * 2 <= remaining.len() {
                return Err(Error::Precondition(format!(
                    "removing member {id:x} would leave key-encryption key generation {} on \
                     {count} of the {} remaining voting members, fewer than a quorum; wait \
                     until the others have synced their keyrings (within a second) and retry",
                    rec.generation,
                    remaining.len()
                )));
            }
        }
        Ok(())
    }

    /// Deletes the `kekheld` records of `id`, which must not be a member:
    /// called before a member is added. Member ids derive from peer URLs,
    /// so a member added back where a removed one was (or one lost when
    /// `--force-new-cluster` removed it) has the old one's id, and the old
    /// records would count its empty keyring as a copy of every KEK: a
    /// seal or a removal could then go ahead with fewer real copies than a
    /// quorum. Returns how many records it deleted.
    pub async fn forget_member(&self, id: u64) -> Result<usize> {
        if self.node.members().iter().any(|m| m.id == id) {
            return Err(Error::Precondition(format!(
                "member {id:x} is a member: its records of holding key-encryption keys stay"
            )));
        }
        let mut stale = Vec::new();
        for rec in self.registry(true).await? {
            if self.held_by(rec.generation).await?.contains(&id) {
                stale.push(layout::kek_held_key(rec.generation, id));
            }
        }
        for chunk in stale.chunks(FORGET_OPS_PER_TXN_MAX) {
            let ops = chunk.iter().map(|k| del(k.clone(), Vec::new())).collect();
            self.txn(Vec::new(), ops).await?;
        }
        if !stale.is_empty() {
            tracing::info!(
                member = format_args!("{id:x}"),
                records = stale.len(),
                "forgot a former member's records of holding key-encryption keys"
            );
        }
        Ok(stale.len())
    }

    /// The members that recorded holding `generation`.
    async fn held_by(&self, generation: u32) -> Result<std::collections::BTreeSet<u64>> {
        let prefix = layout::kek_held_prefix(generation);
        let resp = self
            .node
            .range(RangeRequest {
                range_end: layout::prefix_end(&prefix),
                key: prefix,
                keys_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| layout::member_of_kek_held_key(generation, &kv.key))
            .collect())
    }

    /// (voting members that recorded holding `generation`, voting members).
    async fn holders(&self, generation: u32) -> Result<(usize, usize)> {
        let held = self.held_by(generation).await?;
        let voters: Vec<u64> = self
            .node
            .members()
            .iter()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect();
        let count = voters.iter().filter(|id| held.contains(id)).count();
        Ok((count, voters.len()))
    }

    /// Members (by name) that have not recorded holding every live
    /// generation.
    pub(crate) async fn members_without_kek(&self) -> Result<Vec<String>> {
        let registry = self.registry(true).await?;
        let mut missing = Vec::new();
        for rec in registry.iter().filter(|r| !r.retired) {
            let held = self.held_by(rec.generation).await?;
            for m in self.node.members() {
                if !held.contains(&m.id) {
                    let name = if m.name.is_empty() {
                        format!("{:x}", m.id)
                    } else {
                        m.name.clone()
                    };
                    if !missing.contains(&name) {
                        missing.push(name);
                    }
                }
            }
        }
        Ok(missing)
    }

    /// Zeroizes the keys of retired generations and saves the keyring
    /// without them.
    fn destroy_retired(&self, registry: &[KekRecord]) -> Result<()> {
        let mut st = self.state.write();
        let Some(ring) = st.ring.as_mut() else {
            return Ok(());
        };
        let mut destroyed = Vec::new();
        for rec in registry.iter().filter(|r| r.retired) {
            if ring.key(rec.generation).is_some() && ring.current() != rec.generation {
                ring.retire(rec.generation).map_err(Error::internal)?;
                destroyed.push(rec.generation);
            }
        }
        if destroyed.is_empty() {
            return Ok(());
        }
        self.persist(&st)?;
        tracing::info!(generations = ?destroyed, "destroyed retired key-encryption keys");
        Ok(())
    }

    /// Generates generation 1, saves it, then registers its verifier unless
    /// another member got there first.
    async fn create_first(&self) -> Result<()> {
        let key = Key::generate();
        warn_if_unlocked();
        let verifier = secretd_crypto::kek_verifier(1, &key).map_err(Error::internal)?;
        {
            let mut st = self.state.write();
            let next = match st.ring.take() {
                Some(mut r) => r.insert(1, key).map(|()| r),
                None => Ok(Keyring::with_generation(1, key, Cipher::XChaCha20Poly1305)),
            }
            .map_err(Error::internal)?;
            st.ring = Some(next);
            // Saved before it can be registered: a registered key this
            // member lost in a crash would orphan what it sealed.
            self.persist(&st)?;
        }
        self.dump_for_tests();
        let record = KekRecord {
            generation: 1,
            verifier,
            created_by: self.node.id(),
            created_at_ns: crate::now_ns(),
            retired: false,
        };
        let won = self.register(&record).await?;
        if won {
            tracing::info!("created the cluster's key-encryption key, generation 1");
        }
        Ok(())
    }

    /// Registers a generation's verifier if that generation is new;
    /// Returns whether it was registered.
    ///
    /// The registration records that this member holds the generation in
    /// the same txn: a generation no current voter holds is then one whose
    /// every holder left the cluster, never one whose creator is merely
    /// slow (see [`Keys::abandoned`]).
    pub(crate) async fn register(&self, record: &KekRecord) -> Result<bool> {
        let k = layout::kek_key(record.generation);
        let held = layout::kek_held_key(record.generation, self.node.id());
        let won = self
            .txn(
                vec![absent(k.clone())],
                vec![put(k, record.encode_to_vec()), put(held, Vec::new())],
            )
            .await?;
        if won {
            self.acked.lock().insert(record.generation);
        }
        Ok(won)
    }

    /// Whether `generation` is registered but held by no current voting
    /// member and not by this one: its creator left the cluster (removed,
    /// its disk gone) before anyone fetched it. Nothing was sealed under
    /// it (seals wait for a quorum of holders), so it can be skipped and
    /// replaced by the next rotation.
    pub(crate) async fn abandoned(&self, generation: u32) -> Result<bool> {
        if self.holds(generation) {
            return Ok(false);
        }
        let (held, _) = self.holders(generation).await?;
        Ok(held == 0)
    }

    /// One txn with these compares; whether they held (and it was applied).
    pub(crate) async fn txn(&self, compare: Vec<Compare>, success: Vec<RequestOp>) -> Result<bool> {
        Ok(crate::txns::run(&self.node, compare, success)
            .await?
            .succeeded)
    }

    /// Asks each other member (through [`KekPeers`]) for a generation until
    /// one gives a key that passes the verifier.
    async fn fetch(&self, rec: &KekRecord, lock: &LockRecord) -> Result<()> {
        let me = self.node.id();
        let mut errors = Vec::new();
        for m in self.node.members().into_iter().filter(|m| m.id != me) {
            let Some(url) = m.peer_ur_ls.first() else {
                continue;
            };
            let key = match self.peers.fetch(&m, rec.generation).await {
                Ok(resp) => match self.unwrap_fetched(rec.generation, resp) {
                    Ok(k) => k,
                    Err(Error::Locked) => return Err(Error::Locked),
                    Err(e) => {
                        errors.push(format!("{url}: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    errors.push(format!("{url}: {e}"));
                    continue;
                }
            };
            if secretd_crypto::verify_kek(rec.generation, &key, &rec.verifier).is_err() {
                errors.push(format!(
                    "{url} gave a key that does not match generation {}'s verifier",
                    rec.generation
                ));
                continue;
            }
            {
                let mut st = self.state.write();
                let next = match st.ring.take() {
                    Some(mut r) => r.insert(rec.generation, key).map(|()| r),
                    None => Ok(Keyring::with_generation(
                        rec.generation,
                        key,
                        Cipher::XChaCha20Poly1305,
                    )),
                }
                .map_err(Error::internal)?;
                st.ring = Some(next);
                self.persist(&st)?;
            }
            self.dump_for_tests();
            tracing::info!(
                generation = rec.generation,
                from = format_args!("{:x}", m.id),
                "received the cluster's key-encryption key"
            );
            return Ok(());
        }
        if lock.autolock && self.state.read().ring.is_none() {
            // A new member of an autolocked cluster: peers only hand out
            // keys sealed under the unlock key.
            self.state.write().wrap = Wrap::Locked;
            return Err(Error::Locked);
        }
        Err(Error::Precondition(format!(
            "this member does not hold key-encryption key generation {} and no peer gave it ({})",
            rec.generation,
            if errors.is_empty() {
                "no other members".to_string()
            } else {
                errors.join("; ")
            }
        )))
    }

    /// Seals a secret version with the newest registered generation.
    pub async fn seal(
        &self,
        cipher: Cipher,
        ctx: &Context<'_>,
        plaintext: &SecretBytes,
    ) -> Result<Sealed> {
        if self.is_locked() {
            return Err(Error::Locked);
        }
        let cached = *self.sealing.lock();
        if let Some(generation) = cached {
            if let Some(sealed) = self.seal_under(generation, cipher, ctx, plaintext)? {
                return Ok(sealed);
            }
        }
        let newest = self
            .sync(true)
            .await?
            .ok_or_else(|| Error::internal("no key-encryption key after creating one"))?;
        self.await_quorum_held(newest).await?;
        if !self.holds(newest) && self.abandoned(newest).await? {
            return Err(Error::Unavailable(format!(
                "key-encryption key generation {newest} is registered but no member holds it \
                 (its creator left the cluster before the others fetched it): run \
                 `secretctl cluster rotate-key` to replace it"
            )));
        }
        match self.seal_under(newest, cipher, ctx, plaintext)? {
            Some(sealed) => {
                *self.sealing.lock() = Some(newest);
                Ok(sealed)
            }
            None => {
                let mine = self.state.read().ring.as_ref().map_or(0, |r| r.current());
                Err(Error::Unavailable(format!(
                    "this member's newest key-encryption key is generation {mine}, the cluster's is {newest}; try again"
                )))
            }
        }
    }

    /// Seals under `generation` if it is this member's newest; `None` if
    /// it is not (the ring moved since it was chosen).
    fn seal_under(
        &self,
        generation: u32,
        cipher: Cipher,
        ctx: &Context<'_>,
        plaintext: &SecretBytes,
    ) -> Result<Option<Sealed>> {
        let st = self.state.read();
        let ring = st.ring.as_ref().ok_or(Error::Locked)?;
        if ring.current() != generation {
            return Ok(None);
        }
        let blob = ring
            .seal_with(cipher, ctx, plaintext.expose())
            .map_err(Error::internal)?;
        Ok(Some(Sealed {
            blob,
            guard: absent(layout::kek_key(generation + 1)),
        }))
    }

    /// A seal's txn failed (its guard, or anything else it compared): the
    /// next seal checks the registry in full.
    pub fn forget_sealing(&self) {
        *self.sealing.lock() = None;
    }

    /// Opens a sealed secret version, fetching its generation if needed.
    pub async fn open(&self, ctx: &Context<'_>, blob: &[u8]) -> Result<SecretBytes> {
        if self.is_locked() {
            return Err(Error::Locked);
        }
        let header = SealedHeader::parse(blob).map_err(Error::internal)?;
        if !self.holds(header.kek_id) {
            self.sync(false).await?;
        }
        let st = self.state.read();
        st.ring
            .as_ref()
            .ok_or_else(|| {
                Error::Precondition("this member holds no key-encryption key yet".into())
            })?
            .open(ctx, blob)
            .map_err(|e| {
                Error::internal(format!(
                    "cannot open {} {} version {}: {e}",
                    ctx.kind, ctx.object_id, ctx.version
                ))
            })
    }

    /// (live registered, held) generations, for status.
    pub async fn status(&self) -> Result<(Vec<u32>, Vec<u32>)> {
        let registered: Vec<KekRecord> = self
            .registry(true)
            .await?
            .into_iter()
            .filter(|r| !r.retired)
            .collect();
        let held = self
            .state
            .read()
            .ring
            .as_ref()
            .map(|r| r.generations())
            .unwrap_or_default();
        Ok((registered.iter().map(|r| r.generation).collect(), held))
    }

    /// One round of what [`Keys::spawn_sync`] does every few seconds, for a
    /// driver that owns time itself (the deterministic simulation).
    pub async fn sync_once(&self) -> Result<Option<u32>> {
        self.sync(false).await
    }

    /// Keeps this member in step in the background, so every member holds
    /// the KEK before it needs it and destroys retired ones promptly.
    pub fn spawn_sync(self: &Arc<Self>) {
        let keys = Arc::downgrade(self);
        // A new or retired generation is picked up when it is applied here,
        // not at the next period.
        let mut wake = wake::Wake::on(self.node.hub(), layout::kek_prefix());
        let clock = self.node.clock().clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                wake.wait(&clock, Duration::from_millis(SYNC_INTERVAL_MS))
                    .await;
                let Some(k) = keys.upgrade() else { return };
                match k.sync(false).await {
                    Ok(_) => warned = false,
                    Err(Error::Locked) => {}
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "cannot sync the keyring yet");
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

fn newest_live(registry: &[KekRecord]) -> Option<u32> {
    registry
        .iter()
        .filter(|r| !r.retired)
        .map(|r| r.generation)
        .max()
}
