//! Secrets in the simulation: each member runs the real `secrets` object
//! store and keyring (sealing, KEK generations, rotation, autolock) over
//! its simulated node. KEK fetches between members are direct calls
//! ([`SimPeers`]), not messages on the simulated network; keyring files
//! live on the real file system under the run's temporary folder.

use std::collections::BTreeMap;

use secretd_secrets::keys::InProcessPeers;

/// Every member's keyring, by raft id, for peers to fetch from.
pub type SimPeers = InProcessPeers;

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
