//! KEK generations between members. Key material never enters the raft
//! log, so a member that lacks a generation asks a peer that holds it.
//! The asking goes through [`KekPeers`] (the gRPC `Raft.FetchKek` in
//! `api::peer`, or a direct call in an in-process cluster); this module
//! decides what a member hands out and what it accepts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use secretd_crypto::{Cipher, Key, Keyring};
use secretd_store::pb::etcdserverpb::Member;
use zeroize::Zeroize;

use super::{Keys, Wrap};
use crate::{Error, Result};

/// A KEK generation as a member hands it to a peer: in the clear (only
/// over mutual TLS between members), or, when the giver is autolocked,
/// sealed under the cluster's unlock key of `unlock_epoch`. Exactly one of
/// `key` and `sealed` is non-empty. The clear key is zeroized on drop.
#[derive(Default)]
pub struct PeerKek {
    pub key: Vec<u8>,
    pub sealed: Vec<u8>,
    pub unlock_epoch: u64,
}

impl Drop for PeerKek {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl std::fmt::Debug for PeerKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerKek")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("sealed", &format_args!("<{} bytes>", self.sealed.len()))
            .field("unlock_epoch", &self.unlock_epoch)
            .finish()
    }
}

/// How a member asks another for a KEK generation. Implementations bound
/// each attempt in time; an error is "this peer did not give it" and the
/// keyring asks the next one.
pub trait KekPeers: Send + Sync + 'static {
    fn fetch<'a>(
        &'a self,
        peer: &'a Member,
        generation: u32,
    ) -> BoxFuture<'a, anyhow::Result<PeerKek>>;
}

impl Keys {
    /// The key in a peer's answer: in the clear, or sealed under the unlock
    /// key this member must hold.
    pub(super) fn unwrap_fetched(&self, generation: u32, mut resp: PeerKek) -> Result<Key> {
        if resp.sealed.is_empty() {
            let key = Key::from_slice(&resp.key).map_err(Error::internal);
            resp.key.zeroize();
            return key;
        }
        let st = self.state.read();
        let Wrap::Unlock { key, epoch } = &st.wrap else {
            return Err(Error::Locked);
        };
        if *epoch != resp.unlock_epoch {
            return Err(Error::Unavailable(format!(
                "the peer sealed the key under unlock key epoch {}, this member holds epoch {epoch}",
                resp.unlock_epoch
            )));
        }
        let ring = Keyring::import(key, &resp.sealed)
            .map_err(|e| Error::internal(format!("cannot open the key a peer sent: {e}")))?;
        let k = ring.key(generation).ok_or_else(|| {
            Error::internal(format!(
                "a peer sent a keyring without generation {generation}"
            ))
        })?;
        Key::from_slice(k.expose()).map_err(Error::internal)
    }

    /// A generation's key for a peer member (`Raft.FetchKek`): in the
    /// clear for a mutual-TLS channel, or sealed under the unlock key when
    /// this member is autolocked.
    pub fn key_for_peer(&self, generation: u32) -> Result<PeerKek> {
        let st = self.state.read();
        let key = st
            .ring
            .as_ref()
            .and_then(|r| r.key(generation))
            .ok_or_else(|| match st.wrap {
                Wrap::Locked => Error::Locked,
                _ => Error::Missing(format!(
                    "this member does not hold key-encryption key generation {generation}"
                )),
            })?;
        match &st.wrap {
            Wrap::Unlock { key: unlock, epoch } => {
                let one = Keyring::with_generation(
                    generation,
                    Key::from_slice(key.expose()).map_err(Error::internal)?,
                    Cipher::XChaCha20Poly1305,
                );
                Ok(PeerKek {
                    key: Vec::new(),
                    sealed: one.export(unlock).map_err(Error::internal)?,
                    unlock_epoch: *epoch,
                })
            }
            _ => Ok(PeerKek {
                key: key.expose().to_vec(),
                sealed: Vec::new(),
                unlock_epoch: 0,
            }),
        }
    }
}

/// Members' keyrings in one process, by raft id, fetched from by direct
/// call instead of over the network: the simulation's members and the
/// fast tests' in-memory cluster use it. Weak, so a stopped member's
/// keyring is gone (its peers get "member is down") rather than kept alive.
#[derive(Clone, Default)]
pub struct InProcessPeers {
    keys: Arc<Mutex<BTreeMap<u64, Weak<Keys>>>>,
}

impl InProcessPeers {
    /// Makes `keys` member `id`'s keyring, replacing an earlier one (a
    /// restart).
    pub fn register(&self, id: u64, keys: &Arc<Keys>) {
        self.keys
            .lock()
            .expect("peers lock")
            .insert(id, Arc::downgrade(keys));
    }
}

impl KekPeers for InProcessPeers {
    fn fetch<'a>(
        &'a self,
        peer: &'a Member,
        generation: u32,
    ) -> BoxFuture<'a, anyhow::Result<PeerKek>> {
        let keys = self
            .keys
            .lock()
            .expect("peers lock")
            .get(&peer.id)
            .and_then(Weak::upgrade);
        Box::pin(async move {
            let keys = keys.ok_or_else(|| anyhow::anyhow!("member {:x} is down", peer.id))?;
            Ok(keys.key_for_peer(generation)?)
        })
    }
}
