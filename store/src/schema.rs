//! The on-disk schema in one place: every column family, and every record
//! of the meta column family, classified as this member's own (`Local`)
//! or part of the replicated state (`Replicated`: carried by snapshots and
//! backups, hashed by `Maintenance.Hash`).
//!
//! Snapshots carry exactly the replicated class (`mvcc::for_each_state_record`
//! and `install_records` read these lists), so a record added here as
//! replicated travels without more code, and a record added anywhere else
//! fails `mem_cluster_tests::every_meta_record_is_classified`
//! instead of silently dropping out of snapshots.

/// Formerly the raft log, hard state, conf state and snapshot metadata;
/// now only read to migrate an old data directory (`log_store`): the log
/// lives in segment files (`raftlog`).
pub const CF_RAFT: &str = "raft";
/// The data directory's format version, one record (`FORMAT_KEY`, u32 BE),
/// checked and written by `Db::open`. A column family of its own, not a
/// meta record, so that releases before it (d63c56e, storage format 1),
/// which open exactly the column families they know, refuse the directory
/// (RocksDB: "Column families not opened: format") instead of misreading a
/// log they can no longer find.
pub const CF_FORMAT: &str = "format";
/// The one record of `CF_FORMAT`.
pub const FORMAT_KEY: &[u8] = b"storage";
/// The storage format this build writes, and the newest it reads.
/// 1: d63c56e (the raft log in the `raft` column family, no record).
/// 2: the raft log in segment files (`raftlog`, whose segments carry their
///    own version), the meta records below, this record.
/// 3: as 2, but its raft log may hold entries that ask apply for what
///    builds of format 2 do not do (`txn_decided_first`, peer wire 4): one
///    of them restarted on this directory would apply those entries
///    differently from its peers, so it refuses the directory instead.
///    Nothing is rewritten; opening a format 2 directory records 3.
/// Opening a directory of a newer version is refused, naming both.
pub const STORAGE_FORMAT: u32 = 3;
/// The MVCC keyspace: values by revision (`mvcc`).
pub const CF_KV: &str = "kv";
/// Everything else, by the records below.
pub const CF_META: &str = "meta";

/// Records of the meta column family.
pub mod meta {
    // This member's own: never in a snapshot.
    /// The last applied raft index.
    pub const APPLIED: &[u8] = b"applied_index";
    pub const MEMBER_ID: &[u8] = b"member_id";
    pub const CLUSTER_ID: &[u8] = b"cluster_id";
    /// Present while a snapshot is being installed: its index. A start that
    /// finds it redoes the install before anything reads the keyspace.
    pub const INSTALLING: &[u8] = b"installing_snapshot";
    /// The raft configuration as of the applied index (protobuf
    /// `ConfState`), written with the apply results that change it.
    pub const CONF_STATE: &[u8] = b"conf_state";
    /// `index term` (u64 BE each) of the newest snapshot the state machine
    /// was set to (bootstrap, install): the raft log must continue from
    /// there, and `LogStore::open` makes it so if a crash came between the
    /// install and the log's reset.
    pub const LOG_BASE: &[u8] = b"log_base";
    /// Index of the last configuration change `--force-new-cluster` wrote
    /// (u64 BE): this member made itself a one-member cluster and has not
    /// been started without the flag since. A start with the flag that
    /// finds it refuses (the flag left on would split the cluster grown
    /// back from this member); a start without it removes it.
    pub const FORCED_NEW_CLUSTER: &[u8] = b"forced_new_cluster";

    // Replicated.
    pub const CURRENT_REV: &[u8] = b"current_rev";
    pub const COMPACT_REV: &[u8] = b"compact_rev";
    /// The cluster token, needed to derive the ids of members added later.
    pub const CLUSTER_TOKEN: &[u8] = b"cluster_token";
    /// `lease/<id>`: a lease's TTL.
    pub const LEASE_PREFIX: &[u8] = b"lease/";
    /// `member/<id>`: a member's record.
    pub const MEMBER_PREFIX: &[u8] = b"member/";
    /// `alarm/<member><type>`: a raised alarm.
    pub const ALARM_PREFIX: &[u8] = b"alarm/";
    /// `auth/...`: etcd's users, roles, switch and auth revision.
    pub const AUTH_PREFIX: &[u8] = b"auth/";
    /// Whether auth is enabled (one byte, 0 or 1).
    pub const AUTH_ENABLED: &[u8] = b"auth/enabled";
    /// etcd's auth revision (u64 BE).
    pub const AUTH_REVISION: &[u8] = b"auth/revision";
    /// `auth/user/<name>`: a user (protobuf `authpb.User`).
    pub const AUTH_USER_PREFIX: &[u8] = b"auth/user/";
    /// `auth/role/<name>`: a role (protobuf `authpb.Role`).
    pub const AUTH_ROLE_PREFIX: &[u8] = b"auth/role/";
}

/// Where a meta record belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Local,
    Replicated,
}

pub const LOCAL: &[&[u8]] = &[
    meta::APPLIED,
    meta::MEMBER_ID,
    meta::CLUSTER_ID,
    meta::INSTALLING,
    meta::CONF_STATE,
    meta::LOG_BASE,
    meta::FORCED_NEW_CLUSTER,
];
/// Replicated single records.
pub const REPLICATED: &[&[u8]] = &[meta::CURRENT_REV, meta::COMPACT_REV, meta::CLUSTER_TOKEN];
/// Prefixes of replicated records (each owner checks the rest of the key).
pub const REPLICATED_PREFIXES: &[&[u8]] = &[
    meta::LEASE_PREFIX,
    meta::MEMBER_PREFIX,
    meta::ALARM_PREFIX,
    meta::AUTH_PREFIX,
];

/// The class of a meta record, or `None` for a key nothing here names.
pub fn class(k: &[u8]) -> Option<Class> {
    if LOCAL.contains(&k) {
        return Some(Class::Local);
    }
    let replicated = REPLICATED.contains(&k)
        || lease_id(k).is_some()
        || is_member_key(k)
        || is_alarm_key(k)
        || is_auth_key(k);
    replicated.then_some(Class::Replicated)
}

// The shapes of the prefixed records, here rather than with their owners
// (`lease`, `membership`, `auth`) so that the schema, which classifies
// them, depends on nothing above it.

/// The lease a `lease/<id>` record is of (id as u64 BE), if `k` is one.
pub fn lease_id(k: &[u8]) -> Option<i64> {
    let rest = k.strip_prefix(meta::LEASE_PREFIX)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?) as i64)
}

/// Whether `k` is a member's record, `member/<id>` (id as u64 BE).
pub fn is_member_key(k: &[u8]) -> bool {
    k.strip_prefix(meta::MEMBER_PREFIX)
        .is_some_and(|r| r.len() == 8)
}

/// Whether `k` is a raised alarm, `alarm/<member id><alarm type>` (u64 BE,
/// i32 BE).
pub fn is_alarm_key(k: &[u8]) -> bool {
    k.strip_prefix(meta::ALARM_PREFIX)
        .is_some_and(|r| r.len() == 12)
}

/// Whether `k` is one of auth's records: the switch, the revision, or a
/// named user or role.
pub fn is_auth_key(k: &[u8]) -> bool {
    k == meta::AUTH_ENABLED
        || k == meta::AUTH_REVISION
        || k.strip_prefix(meta::AUTH_USER_PREFIX)
            .is_some_and(|n| !n.is_empty())
        || k.strip_prefix(meta::AUTH_ROLE_PREFIX)
            .is_some_and(|n| !n.is_empty())
}

pub fn is_replicated(k: &[u8]) -> bool {
    class(k) == Some(Class::Replicated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_records_do_not_overlap() {
        for a in LOCAL.iter().chain(REPLICATED) {
            assert!(
                !REPLICATED_PREFIXES.iter().any(|p| a.starts_with(p)),
                "{:?} is under a prefix",
                String::from_utf8_lossy(a)
            );
        }
        for (i, a) in REPLICATED_PREFIXES.iter().enumerate() {
            for b in &REPLICATED_PREFIXES[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a));
            }
        }
        assert_eq!(class(b"applied_index"), Some(Class::Local));
        assert_eq!(class(b"current_rev"), Some(Class::Replicated));
        assert_eq!(class(b"lease/"), None, "a prefix alone is no record");
        assert_eq!(class(b"whatever"), None);
    }
}
