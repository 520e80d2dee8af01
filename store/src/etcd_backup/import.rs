//! etcd's backups into secretd (`plan`, then `EtcdImport::install`): what
//! `etcdctl snapshot save` got from etcd 3.4 or 3.5, or a member's bare
//! `snap/db`, read and checked whole before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::{
    bad, io_err, parse_etcd_key, LeasePb, Stamp, AUTH_ENABLED, AUTH_REVISION, BUCKET_AUTH,
    BUCKET_AUTH_ROLES, BUCKET_AUTH_USERS, BUCKET_KEY, BUCKET_LEASE, BUCKET_META, BUCKET_SECRETD,
    FINISHED_COMPACT, RESERVED_PREFIX, SCHEDULED_COMPACT, SECRETD_FORMAT, SECRETD_FORMAT_VERSION,
    SECRETD_META_PREFIX, SECRETD_STAMP, SMALL_BUCKET_RECORDS_MAX,
};
use crate::bolt::read::{Bucket, Reader};
use crate::error::{Result, StoreError};
use crate::pb::authpb::{Role, User};
use crate::pb::mvccpb::KeyValue;
use crate::schema::{self, meta as m};
use crate::snapshot::{CF_TAG_KV, CF_TAG_META};
use crate::{auth, lease};

/// Bytes of `path` that are the database: a snapshot from `etcdctl
/// snapshot save` ends with the sha256 of the rest, checked here; a bare
/// database file (a member's `snap/db`) has no such hash and is taken as
/// it is, as `etcdutl snapshot restore --skip-hash-check` would.
fn content_bytes(path: &Path) -> Result<(u64, bool)> {
    let len = std::fs::metadata(path)
        .map_err(|e| io_err(path, "stat", e))?
        .len();
    if len % 512 == 32 {
        let content = len - 32;
        if !crate::snapshot::sha256_trailer_matches(path, content)? {
            return Err(bad(
                path,
                "sha256 mismatch: the file is damaged or truncated",
            ));
        }
        return Ok((content, true));
    }
    if len % 512 == 0 {
        return Ok((len, false));
    }
    Err(bad(
        path,
        format!(
            "{len} bytes is neither a database (pages) nor a snapshot (pages and a sha256): \
             truncated?"
        ),
    ))
}

/// What a restore from an etcd-format file will write, worked out (and
/// every record checked) before anything is written.
pub struct EtcdImport {
    path: std::path::PathBuf,
    content_bytes: u64,
    /// The replicated meta records to install.
    meta: Vec<(Vec<u8>, Vec<u8>)>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records of the `key` bucket (every revision kept, tombstones too).
    pub revisions: u64,
    pub current_revision: i64,
    pub compact_revision: i64,
    pub leases: usize,
    pub users: usize,
    pub roles: usize,
    pub auth_enabled: bool,
    /// The file carried secretd's own records, unchanged since (a secretd
    /// snapshot that did not change in etcd).
    pub secretd_records: bool,
    /// A bare database file (no sha256 to check it by).
    pub unhashed: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} key revisions up to revision {} (compacted at {}), {} leases, {} users, {} roles, \
             auth {}; {}",
            self.revisions,
            self.current_revision,
            self.compact_revision,
            self.leases,
            self.users,
            self.roles,
            if self.auth_enabled {
                "enabled"
            } else {
                "disabled"
            },
            if self.secretd_records {
                "secretd's records carried whole"
            } else {
                "etcd's records (no unchanged secretd records in the file)"
            }
        )
    }
}

fn find<'a>(buckets: &'a [(Vec<u8>, Bucket)], name: &[u8]) -> Option<&'a Bucket> {
    buckets.iter().find(|(n, _)| n == name).map(|(_, b)| b)
}

fn read_small(
    r: &Reader,
    buckets: &[(Vec<u8>, Bucket)],
    name: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(b) = find(buckets, name) {
        r.for_each(name, b, &mut |k, v| {
            if out.len() >= SMALL_BUCKET_RECORDS_MAX {
                return Err(StoreError::InvalidArgument(format!(
                    "bucket {:?} holds more than {SMALL_BUCKET_RECORDS_MAX} records",
                    String::from_utf8_lossy(name)
                )));
            }
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
    }
    Ok(out)
}

/// One `key` bucket record as secretd stores it: (kv key, value), or why
/// it is refused. Tombstones get their revision as `mod_revision`, as
/// secretd writes them (etcd's hold the key alone).
/// A `key` bucket record converted.
struct Converted {
    main: i64,
    /// secretd's `kv` key and value.
    kv_key: Vec<u8>,
    kv_value: Vec<u8>,
    /// The user's key.
    key: Vec<u8>,
}

fn convert_kv(path: &Path, k: &[u8], v: &[u8]) -> Result<Converted> {
    let Some((main, sub, tomb)) = parse_etcd_key(k) else {
        return Err(bad(path, format!("key bucket: {k:x?} is not a revision")));
    };
    if main < 1 {
        return Err(bad(path, format!("key bucket: revision {main}")));
    }
    let mut kv = KeyValue::decode(v)
        .map_err(|e| bad(path, format!("key bucket: revision {main}/{sub}: {e}")))?;
    if kv.key.is_empty() {
        return Err(bad(
            path,
            format!("key bucket: revision {main}/{sub}: no key"),
        ));
    }
    let value = if tomb {
        if kv.mod_revision == main {
            v.to_vec()
        } else {
            kv.mod_revision = main;
            kv.encode_to_vec()
        }
    } else {
        if kv.mod_revision != main || kv.create_revision < 1 || kv.create_revision > main {
            return Err(bad(
                path,
                format!(
                    "key bucket: revision {main}/{sub} holds mod revision {} and create \
                     revision {}",
                    kv.mod_revision, kv.create_revision
                ),
            ));
        }
        v.to_vec()
    };
    let rev = crate::revision::Rev::new(main, sub);
    Ok(Converted {
        main,
        kv_key: rev.key(tomb).to_vec(),
        kv_value: value,
        key: kv.key,
    })
}

fn compact_mark(path: &Path, v: Option<&Vec<u8>>) -> Result<i64> {
    match v {
        None => Ok(0),
        Some(v) => match parse_etcd_key(v) {
            Some((main, _, false)) => Ok(main),
            _ => Err(bad(path, format!("meta bucket: compaction mark {v:x?}"))),
        },
    }
}

/// Reads and checks the whole file; nothing is written.
pub fn plan(path: &Path) -> Result<EtcdImport> {
    let (content_bytes, hashed) = content_bytes(path)?;
    let r = Reader::open(path, content_bytes)?;
    let buckets = r.buckets()?;
    for need in [BUCKET_KEY, BUCKET_META] {
        if find(&buckets, need).is_none() {
            return Err(bad(
                path,
                format!(
                    "no {:?} bucket: a bbolt file, but not etcd's",
                    String::from_utf8_lossy(need)
                ),
            ));
        }
    }
    let mut p = Planner {
        path,
        r: &r,
        buckets: &buckets,
        stamp: Stamp::default(),
        records: Vec::new(),
    };
    let (compact, marks) = p.compaction()?;
    p.leases()?;
    let auth_enabled = p.auth_switch()?;
    p.users(auth_enabled)?;
    p.roles()?;
    let keyspace = p.keyspace()?;
    let digest = std::mem::take(&mut p.stamp).finish(&marks);
    let secretd_records = p.secretd(&digest, keyspace.reserved)?;
    let mut records = p.records;
    if !secretd_records {
        let current = keyspace.max_main.max(compact).max(1);
        records.push((
            m::CURRENT_REV.to_vec(),
            (current as u64).to_be_bytes().to_vec(),
        ));
        if compact > 0 {
            records.push((
                m::COMPACT_REV.to_vec(),
                (compact as u64).to_be_bytes().to_vec(),
            ));
        }
    }
    let mut summary = summarize(path, &records, &keyspace)?;
    summary.secretd_records = secretd_records;
    summary.unhashed = !hashed;
    Ok(EtcdImport {
        path: path.to_path_buf(),
        content_bytes,
        meta: records,
        summary,
    })
}

/// The file being planned, and what the plan has gathered so far: the
/// stamp over what etcd reads back, and the meta records to install.
struct Planner<'a> {
    path: &'a Path,
    r: &'a Reader,
    buckets: &'a [(Vec<u8>, Bucket)],
    stamp: Stamp,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the keyspace check found.
struct Keyspace {
    /// Records of the `key` bucket.
    revisions: u64,
    /// The newest revision in it.
    max_main: i64,
    /// Some key is under secretd's reserved prefix.
    reserved: bool,
}

impl Planner<'_> {
    fn small(&self, bucket: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        read_small(self.r, self.buckets, bucket)
    }

    /// The revision to compact to, and the marks as written (the stamp
    /// covers them). etcd finishes an interrupted compaction when it
    /// starts: so does this.
    fn compaction(&self) -> Result<(i64, [Option<Vec<u8>>; 2])> {
        let meta: BTreeMap<Vec<u8>, Vec<u8>> = self.small(BUCKET_META)?.into_iter().collect();
        let scheduled = compact_mark(self.path, meta.get(SCHEDULED_COMPACT))?;
        let finished = compact_mark(self.path, meta.get(FINISHED_COMPACT))?;
        let marks = [
            meta.get(SCHEDULED_COMPACT).cloned(),
            meta.get(FINISHED_COMPACT).cloned(),
        ];
        Ok((scheduled.max(finished), marks))
    }

    fn leases(&mut self) -> Result<()> {
        let path = self.path;
        for (k, v) in &self.small(BUCKET_LEASE)? {
            self.stamp.pair(BUCKET_LEASE, k, v);
            let l = LeasePb::decode(&v[..]).map_err(|e| bad(path, format!("lease record: {e}")))?;
            if k[..] != (l.id as u64).to_be_bytes() || l.id == 0 {
                return Err(bad(
                    path,
                    format!("lease record {k:x?} holds lease {:x}", l.id),
                ));
            }
            if !(1..=lease::TTL_MAX_SECS).contains(&l.ttl) {
                return Err(bad(path, format!("lease {:x}: TTL {}", l.id, l.ttl)));
            }
            self.records.push((
                lease::meta_key(l.id),
                lease::encode_record(l.ttl, 0).to_vec(),
            ));
        }
        Ok(())
    }

    /// The auth switch and revision. Returns whether auth is enabled.
    fn auth_switch(&mut self) -> Result<bool> {
        let mut auth_enabled = false;
        for (k, v) in self.small(BUCKET_AUTH)? {
            self.stamp.pair(BUCKET_AUTH, &k, &v);
            if k == AUTH_ENABLED {
                auth_enabled = v == [1];
                self.records
                    .push((auth::META_ENABLED.to_vec(), vec![auth_enabled as u8]));
            } else if k == AUTH_REVISION {
                let rev: [u8; 8] = v[..]
                    .try_into()
                    .map_err(|_| bad(self.path, "auth bucket: authRevision is not 8 bytes"))?;
                self.records
                    .push((auth::META_REVISION.to_vec(), rev.to_vec()));
            }
        }
        Ok(auth_enabled)
    }

    /// Users, each named by its key, with a bcrypt hash unless it has no
    /// password; root with role root must be among them if auth is on.
    fn users(&mut self, auth_enabled: bool) -> Result<()> {
        let path = self.path;
        let mut has_root = false;
        for (k, v) in &self.small(BUCKET_AUTH_USERS)? {
            self.stamp.pair(BUCKET_AUTH_USERS, k, v);
            let mut u = User::decode(&v[..]).map_err(|e| bad(path, format!("user record: {e}")))?;
            let name = std::str::from_utf8(k)
                .ok()
                .filter(|n| u.name == n.as_bytes())
                .ok_or_else(|| bad(path, format!("user record {k:x?} names another user")))?;
            let no_password = u.options.as_ref().is_some_and(|o| o.no_password);
            if !no_password && auth::bcrypt_cost(&u.password).is_none() {
                return Err(bad(
                    path,
                    format!("user {name:?}: its password is not a bcrypt hash"),
                ));
            }
            u.roles.sort();
            u.roles.dedup();
            has_root |= name == auth::ROOT && u.roles.iter().any(|r| r == auth::ROOT);
            self.records.push((auth::user_key(name), u.encode_to_vec()));
        }
        if auth_enabled && !has_root {
            return Err(bad(
                path,
                "auth is enabled but user root with role root is missing",
            ));
        }
        Ok(())
    }

    fn roles(&mut self) -> Result<()> {
        let path = self.path;
        for (k, v) in &self.small(BUCKET_AUTH_ROLES)? {
            self.stamp.pair(BUCKET_AUTH_ROLES, k, v);
            let role = Role::decode(&v[..]).map_err(|e| bad(path, format!("role record: {e}")))?;
            let name = std::str::from_utf8(k)
                .ok()
                .filter(|n| role.name == n.as_bytes())
                .ok_or_else(|| bad(path, format!("role record {k:x?} names another role")))?;
            self.records.push((auth::role_key(name), v.clone()));
        }
        Ok(())
    }

    /// The keyspace, checked record by record.
    fn keyspace(&mut self) -> Result<Keyspace> {
        let (path, stamp) = (self.path, &mut self.stamp);
        let mut found = Keyspace {
            revisions: 0,
            max_main: 0,
            reserved: false,
        };
        let keys = find(self.buckets, BUCKET_KEY).expect("checked by plan");
        self.r.for_each(BUCKET_KEY, keys, &mut |k, v| {
            stamp.pair(BUCKET_KEY, k, v);
            let Converted { main, key, .. } = convert_kv(path, k, v)?;
            found.reserved |= key.starts_with(RESERVED_PREFIX);
            found.max_main = found.max_main.max(main);
            found.revisions += 1;
            Ok(())
        })?;
        Ok(found)
    }

    /// secretd's records, if the file still is what secretd wrote: they
    /// replace the records gathered from etcd's buckets. Returns whether
    /// they did.
    fn secretd(&mut self, digest: &[u8; 32], reserved: bool) -> Result<bool> {
        let path = self.path;
        let secretd = self.small(BUCKET_SECRETD)?;
        if secretd.is_empty() {
            if reserved {
                return Err(bad(
                    path,
                    "etcd keys under \\xff\\xffsecretd/, secretd's reserved range, in a snapshot \
                     not made by secretd: move them elsewhere in etcd before migrating",
                ));
            }
            return Ok(false);
        }
        let get = |name: &[u8]| secretd.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if get(SECRETD_FORMAT).map(|v| &v[..]) != Some(SECRETD_FORMAT_VERSION) {
            return Err(bad(
                path,
                "its secretd records are of another format version (made by a newer secretd?)",
            ));
        }
        let unchanged = get(SECRETD_STAMP).is_some_and(|s| s[..] == digest[..]);
        if !unchanged {
            tracing::warn!(
                path = %path.display(),
                "the snapshot's secretd records no longer match its etcd data (it changed in \
                 etcd): restoring etcd's data alone"
            );
            return Ok(false);
        }
        let mut verbatim = Vec::new();
        for (k, v) in &secretd {
            let Some(key) = k.strip_prefix(SECRETD_META_PREFIX) else {
                continue;
            };
            if !schema::is_replicated(key) {
                return Err(bad(
                    path,
                    format!(
                        "secretd record {:?} is unknown (made by a newer secretd?)",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            verbatim.push((key.to_vec(), v.clone()));
        }
        self.records = verbatim;
        Ok(true)
    }
}

/// What a restore of `records` and the checked keyspace will hold; the
/// caller fills in what it knows of the file itself.
fn summarize(path: &Path, records: &[(Vec<u8>, Vec<u8>)], keyspace: &Keyspace) -> Result<Summary> {
    let current_revision = match records.iter().find(|(k, _)| k == m::CURRENT_REV) {
        Some((_, v)) => crate::db::u64_from(v, "current revision")? as i64,
        None => 1,
    };
    if current_revision < keyspace.max_main {
        return Err(bad(
            path,
            format!(
                "revision {} is past the current revision {current_revision}",
                keyspace.max_main
            ),
        ));
    }
    let compact_revision = match records.iter().find(|(k, _)| k == m::COMPACT_REV) {
        Some((_, v)) => crate::db::u64_from(v, "compact revision")? as i64,
        None => 0,
    };
    let count = |p: &[u8]| records.iter().filter(|(k, _)| k.starts_with(p)).count();
    Ok(Summary {
        revisions: keyspace.revisions,
        current_revision,
        compact_revision,
        leases: records
            .iter()
            .filter(|(k, _)| schema::lease_id(k).is_some())
            .count(),
        users: count(&auth::user_key("")),
        roles: count(&auth::role_key("")),
        auth_enabled: records
            .iter()
            .any(|(k, v)| k == auth::META_ENABLED && v == &[1]),
        secretd_records: false,
        unhashed: false,
    })
}

impl EtcdImport {
    /// Feeds every record to `sink` as a state snapshot carries it: the
    /// keyspace in revision order, then the meta records.
    pub fn install(&self, sink: &mut crate::mvcc::RecordVisitor<'_>) -> Result<()> {
        let path = &self.path;
        let r = Reader::open(path, self.content_bytes)?;
        let buckets = r.buckets()?;
        let keys = find(&buckets, BUCKET_KEY)
            .ok_or_else(|| bad(path, "the key bucket is gone (the file changed)"))?;
        let mut n = 0u64;
        r.for_each(BUCKET_KEY, keys, &mut |k, v| {
            let c = convert_kv(path, k, v)?;
            n += 1;
            sink(CF_TAG_KV, &c.kv_key, &c.kv_value)
        })?;
        if n != self.summary.revisions {
            return Err(bad(path, "the file changed during the restore"));
        }
        for (k, v) in &self.meta {
            sink(CF_TAG_META, k, v)?;
        }
        Ok(())
    }
}
