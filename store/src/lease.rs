//! Leases: TTLs that delete their keys when they run out.
//!
//! Grant, renew (keep-alive) and revoke are raft entries, applied by every
//! member in log order, so a keep-alive through a follower is ordered
//! against a revoke like any write. Every member tracks an expiry from when
//! it applied the grant or renewal; only the leader acts on expiry, by
//! proposing revokes. On becoming leader a member first extends every lease
//! to a full TTL from now, so a leader change never expires a lease early.
//!
//! Lease records (id → granted TTL, and the raft index of the lease's last
//! renewal) live in the meta column family under `lease/`, so they are
//! part of snapshots; which keys a lease holds is rebuilt from the keyspace
//! at start. The leader's revoke of an expired lease names the index it
//! decided at, and is skipped where the lease was renewed after it
//! (`Lessor::renewed_after`): renewals are entries proposed by any member,
//! so one can be committed between the leader's decision and its revoke.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub const META_PREFIX: &[u8] = crate::schema::meta::LEASE_PREFIX;
/// etcd's largest TTL.
pub const TTL_MAX_SECS: i64 = 9_000_000_000;

pub fn meta_key(id: i64) -> Vec<u8> {
    let mut k = META_PREFIX.to_vec();
    k.extend_from_slice(&(id as u64).to_be_bytes());
    k
}

/// A lease record as stored: the granted TTL, then the index of the last
/// renewal (0: never renewed). Records written before the renewal index
/// existed hold the TTL alone.
pub fn encode_record(ttl_secs: i64, renewed_index: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&(ttl_secs as u64).to_be_bytes());
    v[8..].copy_from_slice(&renewed_index.to_be_bytes());
    v
}

/// (TTL, last renewal index) of a stored record, or why it is damaged.
pub fn decode_record(v: &[u8]) -> Result<(i64, u64), String> {
    let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
    match v.len() {
        8 => Ok((word(v) as i64, 0)),
        16 => Ok((word(&v[..8]) as i64, word(&v[8..]))),
        n => Err(format!("lease record of {n} bytes (8 or 16 expected)")),
    }
}

#[derive(Clone, Debug)]
pub struct Lease {
    pub ttl_secs: i64,
    pub expiry: Instant,
    pub keys: BTreeSet<Vec<u8>>,
    /// The raft index of the last renewal applied (0: none): replicated,
    /// so every member decides `renewed_after` alike.
    pub renewed_index: u64,
}

#[derive(Default)]
pub struct Lessor {
    leases: BTreeMap<i64, Lease>,
    /// The lease each leased key is attached to (keys without one are absent).
    key_lease: std::collections::HashMap<Vec<u8>, i64>,
    /// Revokes proposed for expired leases and not yet applied.
    revoking: BTreeSet<i64>,
}

impl Lessor {
    pub fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn grant(&mut self, id: i64, ttl_secs: i64, now: Instant) {
        self.restore(id, ttl_secs, 0, now);
    }

    /// A lease read back from its record at start.
    pub fn restore(&mut self, id: i64, ttl_secs: i64, renewed_index: u64, now: Instant) {
        self.leases.insert(
            id,
            Lease {
                ttl_secs,
                expiry: now + secs(ttl_secs),
                keys: BTreeSet::new(),
                renewed_index,
            },
        );
    }

    /// Renews by the entry at raft index `index`; returns the TTL, or None
    /// if the lease does not exist.
    pub fn renew(&mut self, id: i64, now: Instant, index: u64) -> Option<i64> {
        let l = self.leases.get_mut(&id)?;
        l.expiry = now + secs(l.ttl_secs);
        l.renewed_index = l.renewed_index.max(index);
        Some(l.ttl_secs)
    }

    /// Whether the lease was renewed by an entry after raft index `index`
    /// (the leader decided it expired there): then its revoke is skipped,
    /// and the leader may decide again later.
    pub fn renewed_after(&mut self, id: i64, index: u64) -> bool {
        let renewed = self
            .leases
            .get(&id)
            .is_some_and(|l| l.renewed_index > index);
        if renewed {
            self.revoking.remove(&id);
        }
        renewed
    }

    /// Removes the lease; returns the keys it held.
    pub fn revoke(&mut self, id: i64) -> Option<BTreeSet<Vec<u8>>> {
        self.revoking.remove(&id);
        let keys = self.leases.remove(&id)?.keys;
        for k in &keys {
            self.key_lease.remove(k);
        }
        Some(keys)
    }

    /// The lease `key`'s newest record names (0: none).
    pub fn key_lease(&self, key: &[u8]) -> i64 {
        self.key_lease.get(key).copied().unwrap_or(0)
    }

    /// Records that `key` now holds lease `id` (0: none), moving it from
    /// any lease it held before.
    pub fn set_key_lease(&mut self, key: &[u8], id: i64) {
        // Most clusters hold no leased key: a put need not hash its key
        // to learn it had no lease.
        if id == 0 && self.key_lease.is_empty() {
            return;
        }
        let old = if id == 0 {
            self.key_lease.remove(key)
        } else {
            self.key_lease.insert(key.to_vec(), id)
        };
        if let Some(old) = old.filter(|o| *o != id) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
        if id != 0 {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_vec());
            }
        }
    }

    /// Whole seconds left (truncated, as etcd reports them: 59 just after
    /// a grant of 60), or None if unknown.
    pub fn remaining_secs(&self, id: i64, now: Instant) -> Option<i64> {
        let l = self.leases.get(&id)?;
        let left = l.expiry.saturating_duration_since(now);
        Some(left.as_secs() as i64)
    }

    /// On becoming leader: nobody may lose a lease to the election.
    pub fn promote(&mut self, now: Instant) {
        self.revoking.clear();
        for l in self.leases.values_mut() {
            l.expiry = now + secs(l.ttl_secs);
        }
    }

    /// Expired leases not yet being revoked, at most `max`; marks them.
    pub fn take_expired(&mut self, now: Instant, max: usize) -> Vec<i64> {
        let ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(id, l)| l.expiry <= now && !self.revoking.contains(id))
            .map(|(id, _)| *id)
            .take(max)
            .collect();
        self.revoking.extend(&ids);
        ids
    }

    /// A revoke proposal was lost (e.g. leadership moved): retry later.
    pub fn forget_revoking(&mut self) {
        self.revoking.clear();
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.clamp(0, TTL_MAX_SECS) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_renewal_promotion() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.grant(7, 10, t0);
        l.grant(8, 10, t0);
        l.set_key_lease(b"k", 8);
        l.set_key_lease(b"k", 7); // moves from lease 8 to lease 7
        assert!(l.get(8).unwrap().keys.is_empty());
        assert_eq!(
            l.remaining_secs(7, t0 + Duration::from_millis(2500)),
            Some(7)
        );
        assert!(l.take_expired(t0 + Duration::from_secs(9), 10).is_empty());
        assert_eq!(l.take_expired(t0 + Duration::from_secs(11), 10), vec![7, 8]);
        // Not proposed twice while the first revoke is in flight.
        assert!(l.take_expired(t0 + Duration::from_secs(12), 10).is_empty());
        // A new leader extends it: a full TTL from its promotion.
        l.promote(t0 + Duration::from_secs(12));
        assert!(l.take_expired(t0 + Duration::from_secs(21), 10).is_empty());
        assert_eq!(l.renew(7, t0 + Duration::from_secs(21), 40), Some(10));
        // Decided at 39: the renewal at 40 keeps it; decided at 40: it goes.
        assert!(l.renewed_after(7, 39));
        assert!(!l.renewed_after(7, 40));
        assert_eq!(
            l.revoke(7).unwrap().into_iter().collect::<Vec<_>>(),
            vec![b"k".to_vec()]
        );
        assert_eq!(l.renew(7, t0, 41), None);
        assert_eq!(crate::schema::lease_id(&meta_key(-5)), Some(-5));
    }

    #[test]
    fn records_old_and_new() {
        assert_eq!(decode_record(&encode_record(60, 9)), Ok((60, 9)));
        assert_eq!(decode_record(&60u64.to_be_bytes()), Ok((60, 0)));
        assert!(decode_record(&[1, 2, 3]).unwrap_err().contains("3 bytes"));
    }
}
