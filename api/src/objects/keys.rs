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

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use prost::Message;
use secretd_crypto::{Cipher, Context, Key, Keyring, SealedHeader, SecretBytes};
use secretd_store::node::Node;
use tonic::Status;
use zeroize::Zeroize;

use super::layout;
use super::txns::{absent, put};
use crate::pb::etcdserverpb::{Compare, RangeRequest, RequestOp, TxnRequest};
use crate::pb::raftpb::{raft_client::RaftClient, FetchKekRequest, FetchKekResponse};
use crate::pb::records::{KekRecord, LockRecord};

/// How long one peer gets to answer a KEK fetch.
const FETCH_TIMEOUT_MS: u64 = 3000;
/// Background sync period: how soon a member picks up a new generation it
/// has not needed yet (so it still has it if the creator dies), destroys a
/// retired one, and follows an autolock change.
const SYNC_INTERVAL_MS: u64 = 2000;

pub(super) const KEYRING_FILE: &str = "keyring";
pub(super) const LOCKED_KEYRING_FILE: &str = "keyring.locked";
pub(super) const WRAP_KEY_FILE: &str = "wrap.key";

/// The sentence every secret operation on a locked member fails with.
pub const LOCKED_MESSAGE: &str = "member is locked; run secretctl cluster unlock";

pub(super) fn locked() -> Status {
    Status::failed_precondition(LOCKED_MESSAGE)
}

/// What protects the keyring on disk.
pub(super) enum Wrap {
    /// `keys/wrap.key` wraps `keys/keyring`.
    File(Key),
    /// Autolock, unlocked: `keys/keyring.locked` is sealed under this
    /// unlock key, of this epoch.
    Unlock { key: Key, epoch: u64 },
    /// Autolock, and no unlock key given yet: no keyring in memory.
    Locked,
}

pub(super) struct State {
    pub wrap: Wrap,
    pub ring: Option<Keyring>,
}

pub struct Keys {
    pub(super) node: Arc<Node>,
    pub(super) dir: PathBuf,
    pub(super) state: RwLock<State>,
    /// One create, fetch, lock change or rotation at a time per member.
    pub(super) changing: tokio::sync::Mutex<()>,
    /// Generations this member has recorded in raft as held (`kekheld/`).
    acked: parking_lot::Mutex<std::collections::BTreeSet<u32>>,
}

/// A sealed secret version, and the compare its txn must carry: the blob
/// commits only while its KEK generation is still the newest, so a
/// rotation's re-wrap scan (which starts after the next generation is
/// registered) cannot miss it.
pub struct Sealed {
    pub blob: Vec<u8>,
    pub guard: Compare,
}

pub(super) fn internal(msg: impl std::fmt::Display) -> Status {
    Status::internal(msg.to_string())
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

/// Test builds only: where the debug hook writes key material, so the
/// canary test can look for KEK and DEK bytes on disk. Release builds do
/// not contain the hook.
#[cfg(debug_assertions)]
mod debug_dump {
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    pub const ENV: &str = "SECRETD_TEST_KEY_DUMP";
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

    fn dir() -> Option<&'static PathBuf> {
        DIR.get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
            .as_ref()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn append(name: &str, bytes: &[u8]) {
        if let Some(d) = dir() {
            let _ = std::fs::create_dir_all(d);
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(name))
            {
                // One write per line: members append to the same files.
                let _ = f.write_all(format!("{}\n", hex(bytes)).as_bytes());
            }
        }
    }

    fn dek(b: &[u8]) {
        append("dek.hex", b);
    }

    pub fn install() {
        if dir().is_some() {
            tracing::warn!("{ENV} is set: key material is written in the clear (tests only)");
            secretd_crypto::set_dek_observer(dek);
        }
    }

    pub fn kek(generation: u32, b: &[u8]) {
        append(&format!("kek-{generation}.hex"), b);
    }

    pub fn unlock_key(b: &[u8]) {
        append("unlock.hex", b);
    }
}

impl Keys {
    /// Opens (or creates) `<data_dir>/keys`. A keyring that the key file
    /// cannot open is a fatal error, never silently replaced: it would
    /// orphan every secret this member holds. A locked keyring makes a
    /// locked member.
    pub fn load(node: Arc<Node>, data_dir: &Path) -> anyhow::Result<Arc<Keys>> {
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
                    remove_file(&dir, stale).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
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
            dir,
            state: RwLock::new(state),
            changing: tokio::sync::Mutex::new(()),
            acked: parking_lot::Mutex::new(Default::default()),
        });
        keys.dump_for_tests();
        Ok(keys)
    }

    /// Test builds: every held KEK goes to the debug dump (if asked for).
    pub(super) fn dump_for_tests(&self) {
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
    pub(super) fn persist(&self, st: &State) -> Result<(), Status> {
        let Some(ring) = &st.ring else {
            return Ok(());
        };
        match &st.wrap {
            Wrap::File(k) => {
                let blob = ring.export(k).map_err(internal)?;
                write_file(&self.dir, KEYRING_FILE, &blob)
            }
            Wrap::Unlock { key, epoch } => {
                let mut blob = epoch.to_be_bytes().to_vec();
                blob.extend_from_slice(&ring.export(key).map_err(internal)?);
                write_file(&self.dir, LOCKED_KEYRING_FILE, &blob)
            }
            Wrap::Locked => Ok(()),
        }
    }

    /// Generations raft knows, oldest first, retired ones included.
    /// A serializable (local) read is enough to know what this member
    /// already holds; deciding to create or fetch re-reads linearizably.
    pub(super) async fn registry(&self, linearizable: bool) -> Result<Vec<KekRecord>, Status> {
        let prefix = layout::kek_prefix();
        let resp = self
            .node
            .range(RangeRequest {
                range_end: layout::prefix_end(&prefix),
                key: prefix,
                serializable: !linearizable,
                ..Default::default()
            })
            .await
            .map_err(crate::errors::status)?;
        resp.kvs
            .iter()
            .map(|kv| {
                KekRecord::decode(kv.value.as_slice())
                    .map_err(|e| internal(format!("stored KEK record is corrupt: {e}")))
            })
            .collect()
    }

    /// The autolock record and its mod revision (0: never written).
    pub(super) async fn lock_record(
        &self,
        linearizable: bool,
    ) -> Result<(LockRecord, i64), Status> {
        let resp = self
            .node
            .range(RangeRequest {
                key: layout::lock_key(),
                serializable: !linearizable,
                ..Default::default()
            })
            .await
            .map_err(crate::errors::status)?;
        match resp.kvs.first() {
            Some(kv) => Ok((
                LockRecord::decode(kv.value.as_slice())
                    .map_err(|e| internal(format!("stored lock record is corrupt: {e}")))?,
                kv.mod_revision,
            )),
            None => Ok((LockRecord::default(), 0)),
        }
    }

    fn holds_verified(&self, rec: &KekRecord) -> bool {
        let st = self.state.read();
        st.ring
            .as_ref()
            .and_then(|r| r.key(rec.generation))
            .is_some_and(|k| secretd_crypto::verify_kek(rec.generation, k, &rec.verifier).is_ok())
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
        live_held && retired_gone && wrap_ok
    }

    /// Brings this member in step with the cluster: fetches every live
    /// generation it lacks (checked against its verifier), destroys retired
    /// ones, follows autolock changes; creates generation 1 if there is
    /// none and `create`. Returns the newest live generation.
    pub(super) async fn sync(&self, create: bool) -> Result<Option<u32>, Status> {
        let registry = self.registry(false).await?;
        let (lock, _) = self.lock_record(false).await?;
        if registry.iter().any(|r| !r.retired) && self.in_step(&registry, &lock) {
            return Ok(newest_live(&registry));
        }
        let _guard = self.changing.lock().await;
        self.sync_locked(create).await
    }

    /// [`Keys::sync`] for a caller that holds `changing`.
    pub(super) async fn sync_locked(&self, create: bool) -> Result<Option<u32>, Status> {
        let (lock, _) = self.lock_record(true).await?;
        if lock.autolock && self.is_locked() {
            return Err(locked());
        }
        let mut registry = self.registry(true).await?;
        if registry.iter().all(|r| r.retired) {
            if !create {
                return Ok(None);
            }
            if !registry.is_empty() {
                return Err(internal("every KEK generation is retired"));
            }
            self.create_first().await?;
            registry = self.registry(true).await?;
        }
        for rec in registry.iter().filter(|r| !r.retired) {
            if !self.holds_verified(rec) {
                self.fetch(rec, &lock).await?;
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
    async fn ack_held(&self, registry: &[KekRecord]) -> Result<(), Status> {
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

    /// Members (by name) that have not recorded holding every live
    /// generation.
    pub(super) async fn members_without_kek(&self) -> Result<Vec<String>, Status> {
        let registry = self.registry(true).await?;
        let mut missing = Vec::new();
        for rec in registry.iter().filter(|r| !r.retired) {
            let prefix = layout::kek_held_prefix(rec.generation);
            let resp = self
                .node
                .range(RangeRequest {
                    range_end: layout::prefix_end(&prefix),
                    key: prefix,
                    keys_only: true,
                    ..Default::default()
                })
                .await
                .map_err(crate::errors::status)?;
            let held: std::collections::BTreeSet<u64> = resp
                .kvs
                .iter()
                .filter_map(|kv| layout::member_of_kek_held_key(rec.generation, &kv.key))
                .collect();
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
    fn destroy_retired(&self, registry: &[KekRecord]) -> Result<(), Status> {
        let mut st = self.state.write();
        let Some(ring) = st.ring.as_mut() else {
            return Ok(());
        };
        let mut destroyed = Vec::new();
        for rec in registry.iter().filter(|r| r.retired) {
            if ring.key(rec.generation).is_some() && ring.current() != rec.generation {
                ring.retire(rec.generation).map_err(internal)?;
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
    async fn create_first(&self) -> Result<(), Status> {
        let key = Key::generate();
        warn_if_unlocked();
        let verifier = secretd_crypto::kek_verifier(1, &key).map_err(internal)?;
        {
            let mut st = self.state.write();
            let next = match st.ring.take() {
                Some(mut r) => r.insert(1, key).map(|()| r),
                None => Ok(Keyring::with_generation(1, key, Cipher::XChaCha20Poly1305)),
            }
            .map_err(internal)?;
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
            created_at_ns: super::now_ns(),
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
    pub(super) async fn register(&self, record: &KekRecord) -> Result<bool, Status> {
        let k = layout::kek_key(record.generation);
        self.txn(
            vec![absent(k.clone())],
            vec![put(k, record.encode_to_vec())],
        )
        .await
    }

    /// One txn with these compares; whether they held (and it was applied).
    pub(super) async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<RequestOp>,
    ) -> Result<bool, Status> {
        Ok(self
            .node
            .txn(
                TxnRequest {
                    compare,
                    success,
                    failure: Vec::new(),
                },
                None,
            )
            .await
            .map_err(crate::errors::status)?
            .succeeded)
    }

    /// Asks each other member for a generation until one gives a key that
    /// passes the verifier.
    async fn fetch(&self, rec: &KekRecord, lock: &LockRecord) -> Result<(), Status> {
        let me = self.node.id();
        let mut errors = Vec::new();
        for m in self.node.members().into_iter().filter(|m| m.id != me) {
            let Some(url) = m.peer_ur_ls.first() else {
                continue;
            };
            let key = match self.fetch_from(url, rec.generation).await {
                Ok(resp) => match self.unwrap_fetched(rec.generation, resp) {
                    Ok(k) => k,
                    Err(e) if e.code() == tonic::Code::FailedPrecondition => return Err(e),
                    Err(e) => {
                        errors.push(format!("{url}: {}", e.message()));
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
                .map_err(internal)?;
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
            return Err(locked());
        }
        Err(Status::failed_precondition(format!(
            "this member does not hold key-encryption key generation {} and no peer gave it ({})",
            rec.generation,
            if errors.is_empty() {
                "no other members".to_string()
            } else {
                errors.join("; ")
            }
        )))
    }

    /// The key in a peer's answer: in the clear (mutual TLS), or sealed
    /// under the unlock key this member must hold.
    fn unwrap_fetched(&self, generation: u32, mut resp: FetchKekResponse) -> Result<Key, Status> {
        if resp.sealed.is_empty() {
            let key = Key::from_slice(&resp.key).map_err(internal);
            resp.key.zeroize();
            return key;
        }
        let st = self.state.read();
        let Wrap::Unlock { key, epoch } = &st.wrap else {
            return Err(locked());
        };
        if *epoch != resp.unlock_epoch {
            return Err(Status::unavailable(format!(
                "the peer sealed the key under unlock key epoch {}, this member holds epoch {epoch}",
                resp.unlock_epoch
            )));
        }
        let ring = Keyring::import(key, &resp.sealed)
            .map_err(|e| internal(format!("cannot open the key a peer sent: {e}")))?;
        let k = ring.key(generation).ok_or_else(|| {
            internal(format!(
                "a peer sent a keyring without generation {generation}"
            ))
        })?;
        Key::from_slice(k.expose()).map_err(internal)
    }

    async fn fetch_from(&self, url: &str, generation: u32) -> anyhow::Result<FetchKekResponse> {
        let ch = crate::tls::peer_endpoint(url)?
            .connect_timeout(Duration::from_millis(FETCH_TIMEOUT_MS))
            .timeout(Duration::from_millis(FETCH_TIMEOUT_MS))
            .connect()
            .await?;
        Ok(RaftClient::new(ch)
            .fetch_kek(FetchKekRequest {
                cluster_id: self.node.cluster_id(),
                from: self.node.id(),
                generation,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner())
    }

    /// Seals a secret version with the newest registered generation.
    pub async fn seal(
        &self,
        cipher: Cipher,
        ctx: &Context<'_>,
        plaintext: &SecretBytes,
    ) -> Result<Sealed, Status> {
        if self.is_locked() {
            return Err(locked());
        }
        let newest = self
            .sync(true)
            .await?
            .ok_or_else(|| internal("no key-encryption key after creating one"))?;
        let st = self.state.read();
        let ring = st.ring.as_ref().ok_or_else(locked)?;
        if ring.current() != newest {
            return Err(Status::unavailable(format!(
                "this member's newest key-encryption key is generation {}, the cluster's is {newest}; try again",
                ring.current()
            )));
        }
        let blob = ring
            .seal_with(cipher, ctx, plaintext.expose())
            .map_err(internal)?;
        Ok(Sealed {
            blob,
            guard: absent(layout::kek_key(newest + 1)),
        })
    }

    /// Opens a sealed secret version, fetching its generation if needed.
    pub async fn open(&self, ctx: &Context<'_>, blob: &[u8]) -> Result<SecretBytes, Status> {
        if self.is_locked() {
            return Err(locked());
        }
        let header = SealedHeader::parse(blob).map_err(internal)?;
        if !self.holds(header.kek_id) {
            self.sync(false).await?;
        }
        let st = self.state.read();
        st.ring
            .as_ref()
            .ok_or_else(|| {
                Status::failed_precondition("this member holds no key-encryption key yet")
            })?
            .open(ctx, blob)
            .map_err(|e| {
                internal(format!(
                    "cannot open {} {} version {}: {e}",
                    ctx.kind, ctx.object_id, ctx.version
                ))
            })
    }

    /// A generation's key for a peer member (`Raft.FetchKek`): in the
    /// clear for a mutual-TLS channel, or sealed under the unlock key when
    /// this member is autolocked.
    pub fn key_for_peer(&self, generation: u32) -> Result<FetchKekResponse, Status> {
        let st = self.state.read();
        let key = st
            .ring
            .as_ref()
            .and_then(|r| r.key(generation))
            .ok_or_else(|| match st.wrap {
                Wrap::Locked => locked(),
                _ => Status::not_found(format!(
                    "this member does not hold key-encryption key generation {generation}"
                )),
            })?;
        match &st.wrap {
            Wrap::Unlock { key: unlock, epoch } => {
                let one = Keyring::with_generation(
                    generation,
                    Key::from_slice(key.expose()).map_err(internal)?,
                    Cipher::XChaCha20Poly1305,
                );
                Ok(FetchKekResponse {
                    key: Vec::new(),
                    sealed: one.export(unlock).map_err(internal)?,
                    unlock_epoch: *epoch,
                })
            }
            _ => Ok(FetchKekResponse {
                key: key.expose().to_vec(),
                sealed: Vec::new(),
                unlock_epoch: 0,
            }),
        }
    }

    /// (live registered, held) generations, for status.
    pub async fn status(&self) -> Result<(Vec<u32>, Vec<u32>), Status> {
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

    /// Keeps this member in step in the background, so every member holds
    /// the KEK before it needs it and destroys retired ones promptly.
    pub fn spawn_sync(self: &Arc<Self>) {
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                tokio::time::sleep(Duration::from_millis(SYNC_INTERVAL_MS)).await;
                let Some(k) = keys.upgrade() else { return };
                match k.sync(false).await {
                    Ok(_) => warned = false,
                    Err(e) if e.message() == LOCKED_MESSAGE => {}
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e.message(), "cannot sync the keyring yet");
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

/// Writes `dir/name` atomically: temp file (0600), fsync, rename, fsync dir.
pub(super) fn write_file(dir: &Path, name: &str, blob: &[u8]) -> Result<(), Status> {
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(blob)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| internal(format!("cannot save {name}: {e}")))
}

/// Overwrites a small key file with zeros before unlinking it (a best
/// effort on copy-on-write file systems), then fsyncs the directory.
pub(super) fn remove_file(dir: &Path, name: &str) -> Result<(), Status> {
    let p = dir.join(name);
    let run = || -> std::io::Result<()> {
        match std::fs::metadata(&p) {
            Ok(m) => {
                let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
                f.write_all(&vec![0u8; m.len() as usize])?;
                f.sync_all()?;
                std::fs::remove_file(&p)?;
                std::fs::File::open(dir)?.sync_all()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    run().map_err(|e| internal(format!("cannot remove {}: {e}", p.display())))
}
