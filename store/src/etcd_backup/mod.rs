//! Backups in etcd's own format, both ways: what `Maintenance.Snapshot`
//! streams (`export`, from a state snapshot file) is a bbolt database laid
//! out as etcd 3.5 lays out its backend, so `etcdutl snapshot status` and
//! `etcdutl snapshot restore` take it; and `secretd snapshot restore`
//! takes what `etcdctl snapshot save` got from etcd 3.4 or 3.5 (`plan`,
//! then `EtcdImport::install`).
//!
//! Buckets written: `key` (revision keys `main(8) '_' sub(8)` plus `t` for
//! a tombstone, values `mvccpb.KeyValue`), `meta` (`consistent_index`,
//! `term`, `confState`, and `scheduledCompactRev`/`finishedCompactRev`
//! after a compaction), `lease` (`leasepb.Lease` by id), `auth`
//! (`authEnabled`, `authRevision`), `authUsers`/`authRoles` (`authpb`
//! records, bcrypt hashes as etcd keeps them), `members` (etcd's JSON),
//! `members_removed`, `cluster` (`clusterVersion`) and `alarm` (empty), and
//! one etcd ignores, `secretd`: every replicated meta record verbatim
//! (`meta/<key>`), and a `stamp`, the sha256 of what etcd reads back as
//! secretd's state (the `auth*`, `key` and `lease` buckets, and the
//! compaction marks). A restore uses the `secretd` bucket only if the stamp
//! still matches: a file that went through etcd and changed there is
//! read as etcd's alone, never with stale secretd records over it.
//!
//! Secrets are sealed blobs under `\xff\xffsecretd/`, carried as ordinary
//! keys: etcd sees only ciphertext, and they come back as they left.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};

pub const BUCKET_KEY: &[u8] = b"key";
pub const BUCKET_META: &[u8] = b"meta";
pub const BUCKET_LEASE: &[u8] = b"lease";
pub const BUCKET_ALARM: &[u8] = b"alarm";
pub const BUCKET_CLUSTER: &[u8] = b"cluster";
pub const BUCKET_MEMBERS: &[u8] = b"members";
pub const BUCKET_MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const BUCKET_AUTH: &[u8] = b"auth";
pub const BUCKET_AUTH_USERS: &[u8] = b"authUsers";
pub const BUCKET_AUTH_ROLES: &[u8] = b"authRoles";
/// secretd's own records, which etcd keeps but never reads.
pub const BUCKET_SECRETD: &[u8] = b"secretd";

const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const TERM: &[u8] = b"term";
const CONF_STATE: &[u8] = b"confState";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const AUTH_ENABLED: &[u8] = b"authEnabled";
const AUTH_REVISION: &[u8] = b"authRevision";
const CLUSTER_VERSION: &[u8] = b"clusterVersion";
/// The cluster version written: etcd 3.5's, whose buckets these are.
const CLUSTER_VERSION_WRITTEN: &[u8] = b"3.5.0";

const SECRETD_FORMAT: &[u8] = b"format";
const SECRETD_FORMAT_VERSION: &[u8] = b"1";
const SECRETD_STAMP: &[u8] = b"stamp";
const SECRETD_META_PREFIX: &[u8] = b"meta/";

/// The buckets the stamp covers, with the compaction marks of `meta`.
const STAMPED: &[&[u8]] = &[
    BUCKET_AUTH,
    BUCKET_AUTH_ROLES,
    BUCKET_AUTH_USERS,
    BUCKET_KEY,
    BUCKET_LEASE,
];

/// The reserved range secretd keeps its objects in (`secrets::layout`).
const RESERVED_PREFIX: &[u8] = b"\xff\xffsecretd/";

/// Records read from the small buckets (everything but `key`), each.
const SMALL_BUCKET_RECORDS_MAX: usize = 1 << 20;

/// `leasepb.Lease`, etcd's lease record.
#[derive(Clone, PartialEq, prost::Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// The format of a backup file, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// secretd's own snapshot format, as secretd streamed it before it
    /// wrote etcd's (still restored).
    Secretd,
    /// A bbolt database: etcd's, or secretd's in etcd's format.
    Etcd,
}

pub fn sniff(path: &Path) -> Result<Format> {
    let mut head = [0u8; 20];
    let mut f = File::open(path).map_err(|e| io_err(path, "open", e))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| io_err(path, "read", e))?;
    if n >= 4 && &head[..4] == b"SDSN" {
        return Ok(Format::Secretd);
    }
    if n == 20 {
        let magic = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
        if magic == crate::bolt::MAGIC || magic == crate::bolt::MAGIC.swap_bytes() {
            return Ok(Format::Etcd);
        }
    }
    Err(bad(
        path,
        "neither an etcd snapshot (`etcdctl snapshot save`) nor a secretd backup",
    ))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("{}: {what}: {e}", path.display()))
}

fn bad(path: &Path, m: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidArgument(format!(
        "{} is not a usable etcd snapshot: {m}",
        path.display()
    ))
}

/// etcd's revision key of a secretd `kv` key.
fn etcd_rev_key(k: &[u8]) -> Result<Vec<u8>> {
    let (rev, tomb) = crate::revision::Rev::decode(k)?;
    Ok(etcd_key(rev.main as u64, rev.sub as u64, tomb))
}

fn etcd_key(main: u64, sub: u64, tomb: bool) -> Vec<u8> {
    let mut e = Vec::with_capacity(18);
    e.extend_from_slice(&main.to_be_bytes());
    e.push(b'_');
    e.extend_from_slice(&sub.to_be_bytes());
    if tomb {
        e.push(b't');
    }
    e
}

/// (main, sub, tombstone) of an etcd revision key.
fn parse_etcd_key(k: &[u8]) -> Option<(i64, i64, bool)> {
    let tomb = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let main = i64::try_from(u64::from_be_bytes(k[..8].try_into().ok()?)).ok()?;
    let sub = i64::try_from(u64::from_be_bytes(k[9..17].try_into().ok()?)).ok()?;
    Some((main, sub, tomb))
}

/// The sha256 of what etcd reads back as secretd's state: one digest per
/// stamped bucket, then the compaction marks.
#[derive(Default)]
struct Stamp {
    buckets: BTreeMap<Vec<u8>, Sha256>,
}

impl Stamp {
    fn pair(&mut self, bucket: &[u8], k: &[u8], v: &[u8]) {
        let h = self.buckets.entry(bucket.to_vec()).or_default();
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }

    fn finish(self, compaction: &[Option<Vec<u8>>; 2]) -> [u8; 32] {
        let mut all = Sha256::new();
        let mut buckets = self.buckets;
        for name in STAMPED {
            let d = buckets.remove(*name).unwrap_or_default().finalize();
            all.update((name.len() as u64).to_be_bytes());
            all.update(name);
            all.update(d);
        }
        for mark in compaction {
            match mark {
                Some(v) => {
                    all.update([1]);
                    all.update((v.len() as u64).to_be_bytes());
                    all.update(v);
                }
                None => all.update([0]),
            }
        }
        all.finalize().into()
    }
}

mod export;
mod import;

pub use export::export;
pub use import::{plan, EtcdImport, Summary};

#[cfg(test)]
mod tests;
