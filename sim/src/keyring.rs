//! Secrets in the simulation: each member runs the real `secrets` object
//! store and keyring (sealing, KEK generations, rotation, autolock) over
//! its simulated node. KEK fetches between members are direct calls
//! ([`SimPeers`]), not messages on the simulated network; keyring files
//! live on the real file system under the run's temporary folder.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use secretd_secrets::keys::{KekPeers, Keys, PeerKek};
use secretd_store::pb::etcdserverpb::Member;

/// Every member's keyring, by raft id, for peers to fetch from.
#[derive(Clone, Default)]
pub struct SimPeers {
    keys: Arc<Mutex<BTreeMap<u64, Weak<Keys>>>>,
}

impl SimPeers {
    pub fn register(&self, id: u64, keys: &Arc<Keys>) {
        self.keys
            .lock()
            .expect("peers lock")
            .insert(id, Arc::downgrade(keys));
    }
}

impl KekPeers for SimPeers {
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

/// What the secrets client knows was acknowledged: version → plaintext.
#[derive(Default)]
pub struct Acked {
    pub id: Option<String>,
    pub versions: BTreeMap<u64, Vec<u8>>,
    /// The data of every create whose answer was lost: any of them may
    /// still make the secret (a lookup that finds nothing does not mean a
    /// create still in the log will not land later).
    pub create_unknown: Vec<Vec<u8>>,
    /// A lost create is waiting for a lookup before the client creates
    /// again.
    pub lookup_due: bool,
}
