//! This member's copy of the cluster keyring, and how it stays in step with
//! the cluster's.
//!
//! Raft knows KEK generations only by number and verifier ([`KekRecord`]);
//! key material never enters the log. A member seals with the newest
//! registered generation and opens with any it holds. A generation it lacks
//! is fetched from a peer that holds it (`Raft.FetchKek`) and checked
//! against its verifier before use.
//!
//! The first secret creates generation 1: the member that seals it
//! generates a key, saves it, and registers its verifier with a txn that
//! only succeeds if no generation 1 exists. Two members racing both save a
//! key, one registers; the other finds its key fails the registered
//! verifier, replaces it with the winner's, and seals again.
//!
//! On disk (default "unlocked" mode): `keys/wrap.key` (32 random bytes,
//! 0600) wraps `keys/keyring` (crypto's exported keyring). That protects
//! RocksDB files, raft snapshots and backups that leave the member without
//! its `keys/` directory; it does not protect against someone who can read
//! the whole data directory. Autolock replaces the key file with an unlock
//! key kept off disk; the sealed format does not change.

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
use crate::pb::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::pb::raftpb::{raft_client::RaftClient, FetchKekRequest, KekRecord};

/// How long one peer gets to answer a KEK fetch.
const FETCH_TIMEOUT_MS: u64 = 3000;
/// Background sync period: how soon a member picks up a new generation it
/// has not needed yet (so it still has it if the creator dies).
const SYNC_INTERVAL_MS: u64 = 2000;

pub struct Keys {
    node: Arc<Node>,
    dir: PathBuf,
    wrap: Key,
    ring: RwLock<Option<Keyring>>,
    /// One create or fetch at a time per member.
    changing: tokio::sync::Mutex<()>,
}

fn internal(msg: impl std::fmt::Display) -> Status {
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

impl Keys {
    /// Opens (or creates) `<data_dir>/keys`. A keyring that the key file
    /// cannot open is a fatal error, never silently replaced: it would
    /// orphan every secret this member holds.
    pub fn load(node: Arc<Node>, data_dir: &Path) -> anyhow::Result<Arc<Keys>> {
        let dir = data_dir.join("keys");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let wrap = secretd_crypto::load_or_create_key_file(&dir.join("wrap.key"))?;
        let path = dir.join("keyring");
        let ring = match std::fs::read(&path) {
            Ok(blob) => Some(Keyring::import(&wrap, &blob).map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot open the keyring with {}: {e}",
                    path.display(),
                    dir.join("wrap.key").display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        warn_if_unlocked();
        Ok(Arc::new(Keys {
            node,
            dir,
            wrap,
            ring: RwLock::new(ring),
            changing: tokio::sync::Mutex::new(()),
        }))
    }

    /// Writes the keyring atomically (temp file, fsync, rename, fsync dir).
    fn persist(&self, ring: &Keyring) -> Result<(), Status> {
        let blob = ring.export(&self.wrap).map_err(internal)?;
        let tmp = self.dir.join("keyring.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&blob)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.dir.join("keyring"))?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| internal(format!("cannot save the keyring: {e}")))
    }

    /// Generations raft knows, oldest first.
    /// A serializable (local) read is enough to know what this member
    /// already holds; deciding to create or fetch re-reads linearizably.
    async fn registry(&self, linearizable: bool) -> Result<Vec<KekRecord>, Status> {
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

    fn holds_verified(&self, rec: &KekRecord) -> bool {
        let ring = self.ring.read();
        ring.as_ref()
            .and_then(|r| r.key(rec.generation))
            .is_some_and(|k| secretd_crypto::verify_kek(rec.generation, k, &rec.verifier).is_ok())
    }

    /// Makes sure this member holds every registered generation (checked
    /// against its verifier); creates generation 1 if there is none.
    /// Returns the newest registered generation.
    async fn sync(&self, create: bool) -> Result<Option<u32>, Status> {
        let registry = self.registry(false).await?;
        if !registry.is_empty() && registry.iter().all(|r| self.holds_verified(r)) {
            return Ok(registry.last().map(|r| r.generation));
        }
        let _guard = self.changing.lock().await;
        let mut registry = self.registry(true).await?;
        if registry.is_empty() {
            if !create {
                return Ok(None);
            }
            self.create_first().await?;
            registry = self.registry(true).await?;
        }
        for rec in &registry {
            if !self.holds_verified(rec) {
                self.fetch(rec).await?;
            }
        }
        Ok(registry.last().map(|r| r.generation))
    }

    /// Generates generation 1, saves it, then registers its verifier unless
    /// another member got there first.
    async fn create_first(&self) -> Result<(), Status> {
        let key = Key::generate();
        warn_if_unlocked();
        let verifier = secretd_crypto::kek_verifier(1, &key).map_err(internal)?;
        {
            let mut ring = self.ring.write();
            let mut next = match ring.take() {
                Some(mut r) => {
                    let replaced = r.insert(1, key);
                    replaced.map(|()| r)
                }
                None => Ok(Keyring::with_generation(1, key, Cipher::XChaCha20Poly1305)),
            }
            .map_err(internal)?;
            // Saved before it can be registered: a registered key this
            // member lost in a crash would orphan what it sealed.
            let saved = self.persist(&next);
            next.set_cipher(Cipher::XChaCha20Poly1305);
            *ring = Some(next);
            saved?;
        }
        let record = KekRecord {
            generation: 1,
            verifier,
            created_by: self.node.id(),
            created_at_ns: super::now_ns(),
        };
        let k = layout::kek_key(1);
        let won = self
            .node
            .txn(TxnRequest {
                compare: vec![Compare {
                    key: k.clone(),
                    target: compare::CompareTarget::Create as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    range_end: Vec::new(),
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: k,
                        value: record.encode_to_vec(),
                        ..Default::default()
                    })),
                }],
                failure: Vec::new(),
            })
            .await
            .map_err(crate::errors::status)?
            .succeeded;
        if won {
            tracing::info!("created the cluster's key-encryption key, generation 1");
        }
        Ok(())
    }

    /// Asks each other member for a generation until one gives a key that
    /// passes the verifier.
    async fn fetch(&self, rec: &KekRecord) -> Result<(), Status> {
        let me = self.node.id();
        let mut errors = Vec::new();
        for m in self.node.members().into_iter().filter(|m| m.id != me) {
            let Some(url) = m.peer_ur_ls.first() else {
                continue;
            };
            match self.fetch_from(url, rec.generation).await {
                Ok(key) => match secretd_crypto::verify_kek(rec.generation, &key, &rec.verifier) {
                    Ok(()) => {
                        let mut ring = self.ring.write();
                        let next = match ring.take() {
                            Some(mut r) => r.insert(rec.generation, key).map(|()| r),
                            None => Ok(Keyring::with_generation(
                                rec.generation,
                                key,
                                Cipher::XChaCha20Poly1305,
                            )),
                        };
                        let next = next.map_err(internal)?;
                        let saved = self.persist(&next);
                        *ring = Some(next);
                        saved?;
                        tracing::info!(
                            generation = rec.generation,
                            from = format_args!("{:x}", m.id),
                            "received the cluster's key-encryption key"
                        );
                        return Ok(());
                    }
                    Err(_) => errors.push(format!(
                        "{url} gave a key that does not match generation {}'s verifier",
                        rec.generation
                    )),
                },
                Err(e) => errors.push(format!("{url}: {e}")),
            }
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

    async fn fetch_from(&self, url: &str, generation: u32) -> anyhow::Result<Key> {
        let ch = crate::tls::peer_endpoint(url)?
            .connect_timeout(Duration::from_millis(FETCH_TIMEOUT_MS))
            .timeout(Duration::from_millis(FETCH_TIMEOUT_MS))
            .connect()
            .await?;
        let mut resp = RaftClient::new(ch)
            .fetch_kek(FetchKekRequest {
                cluster_id: self.node.cluster_id(),
                from: self.node.id(),
                generation,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner();
        let key = Key::from_slice(&resp.key);
        resp.key.zeroize();
        Ok(key?)
    }

    /// Seals a secret version with the newest registered generation.
    pub async fn seal(
        &self,
        cipher: Cipher,
        ctx: &Context<'_>,
        plaintext: &SecretBytes,
    ) -> Result<Vec<u8>, Status> {
        let newest = self
            .sync(true)
            .await?
            .ok_or_else(|| internal("no key-encryption key after creating one"))?;
        let ring = self.ring.read();
        let ring = ring
            .as_ref()
            .ok_or_else(|| internal("keyring missing after sync"))?;
        if ring.current() != newest {
            return Err(Status::failed_precondition(format!(
                "this member's newest key-encryption key is generation {}, the cluster's is {newest}; try again",
                ring.current()
            )));
        }
        ring.seal_with(cipher, ctx, plaintext.expose())
            .map_err(internal)
    }

    /// Opens a sealed secret version, fetching its generation if needed.
    pub async fn open(&self, ctx: &Context<'_>, blob: &[u8]) -> Result<SecretBytes, Status> {
        let header = SealedHeader::parse(blob).map_err(internal)?;
        let held = self
            .ring
            .read()
            .as_ref()
            .is_some_and(|r| r.key(header.kek_id).is_some());
        if !held {
            self.sync(false).await?;
        }
        let ring = self.ring.read();
        ring.as_ref()
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

    /// A generation's key for a peer member (`Raft.FetchKek`).
    pub fn key_for_peer(&self, generation: u32) -> Option<Vec<u8>> {
        self.ring
            .read()
            .as_ref()
            .and_then(|r| r.key(generation))
            .map(|k| k.expose().to_vec())
    }

    /// (registered, held) generations, for status.
    pub async fn status(&self) -> Result<(Vec<u32>, Vec<u32>), Status> {
        let registered = self.registry(true).await?;
        let held = registered
            .iter()
            .filter(|r| self.holds_verified(r))
            .map(|r| r.generation)
            .collect();
        Ok((registered.iter().map(|r| r.generation).collect(), held))
    }

    /// Fetches registered generations this member lacks, in the background,
    /// so every member holds the KEK before it needs it.
    pub fn spawn_sync(self: &Arc<Self>) {
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                tokio::time::sleep(Duration::from_millis(SYNC_INTERVAL_MS)).await;
                let Some(k) = keys.upgrade() else { return };
                match k.sync(false).await {
                    Ok(_) => warned = false,
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
