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

use prost::Message;
use sha2::{Digest, Sha256};

use crate::bolt::read::{Bucket, Reader};
use crate::bolt::write::Writer;
use crate::error::{Result, StoreError};
use crate::pb::authpb::{Role, User};
use crate::pb::mvccpb::KeyValue;
use crate::schema::{self, meta as m};
use crate::snapshot::{SnapshotReader, CF_TAG_KV, CF_TAG_META};
use crate::{auth, lease};

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

/// Writes the state snapshot file `snap` as an etcd database at `out`.
/// Returns the database's size in bytes.
pub fn export(snap: &Path, out: &Path) -> Result<u64> {
    let mut r = SnapshotReader::open(snap)?;
    let header = r.header.clone();
    let mut w = Writer::create(out)?;
    let mut stamp = Stamp::default();
    let mut meta: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut keys = w.bucket(BUCKET_KEY)?;
    while let Some((cf, k, v)) = r.next_record()? {
        if cf == CF_TAG_KV {
            let ek = etcd_rev_key(&k)?;
            keys.put(&ek, &v)?;
            stamp.pair(BUCKET_KEY, &ek, &v);
        } else {
            debug_assert_eq!(cf, CF_TAG_META);
            meta.insert(k, v);
        }
    }
    keys.finish()?;

    // meta: raft's position, the configuration, the compaction marks.
    let compact = match meta.get(m::COMPACT_REV) {
        Some(v) => crate::db::u64_from(v, "compact revision")?,
        None => 0,
    };
    let mut bucket_meta: BTreeMap<&[u8], Vec<u8>> = BTreeMap::new();
    bucket_meta.insert(CONSISTENT_INDEX, header.index.to_be_bytes().to_vec());
    bucket_meta.insert(TERM, header.term.to_be_bytes().to_vec());
    bucket_meta.insert(CONF_STATE, conf_state_json(&header.conf_state)?);
    let mut marks = [None, None];
    if compact > 0 {
        let rev = etcd_key(compact, 0, false);
        bucket_meta.insert(SCHEDULED_COMPACT, rev.clone());
        bucket_meta.insert(FINISHED_COMPACT, rev.clone());
        marks = [Some(rev.clone()), Some(rev)];
    }
    put_all(
        &mut w,
        BUCKET_META,
        bucket_meta.iter().map(|(k, v)| (*k, &v[..])),
    )?;

    // lease: `leasepb.Lease` by id (8 bytes, big-endian, as the meta key).
    let mut leases = Vec::new();
    for (k, v) in meta.range(m::LEASE_PREFIX.to_vec()..) {
        let Some(id) = schema::lease_id(k) else {
            if k.starts_with(m::LEASE_PREFIX) {
                continue;
            }
            break;
        };
        let (ttl, _) = lease::decode_record(v).map_err(StoreError::Storage)?;
        let rec = LeasePb {
            id,
            ttl,
            remaining_ttl: 0,
        };
        leases.push(((id as u64).to_be_bytes().to_vec(), rec.encode_to_vec()));
    }
    put_stamped(&mut w, &mut stamp, BUCKET_LEASE, &leases)?;

    // auth, authUsers, authRoles.
    let enabled = meta.get(auth::META_ENABLED).cloned().unwrap_or(vec![0]);
    let revision = meta
        .get(auth::META_REVISION)
        .cloned()
        .unwrap_or(1u64.to_be_bytes().to_vec());
    let switch = vec![
        (AUTH_ENABLED.to_vec(), enabled),
        (AUTH_REVISION.to_vec(), revision),
    ];
    put_stamped(&mut w, &mut stamp, BUCKET_AUTH, &switch)?;
    for (bucket, key_of) in [
        (BUCKET_AUTH_USERS, auth::user_key as fn(&str) -> Vec<u8>),
        (BUCKET_AUTH_ROLES, auth::role_key),
    ] {
        let prefix = key_of("");
        let records: Vec<(Vec<u8>, Vec<u8>)> = meta
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| k.len() > prefix.len())
            .map(|(k, v)| (k[prefix.len()..].to_vec(), v.clone()))
            .collect();
        put_stamped(&mut w, &mut stamp, bucket, &records)?;
    }

    // members: etcd's JSON, by hex id. etcdutl's restore replaces them.
    let mut members = BTreeMap::new();
    for (k, v) in meta.range(m::MEMBER_PREFIX.to_vec()..) {
        if !k.starts_with(m::MEMBER_PREFIX) {
            break;
        }
        if !schema::is_member_key(k) {
            continue;
        }
        let mem = crate::pb::etcdserverpb::Member::decode(&v[..])
            .map_err(|e| StoreError::Storage(format!("corrupt member record: {e}")))?;
        members.insert(format!("{:x}", mem.id).into_bytes(), member_json(&mem));
    }
    put_all(
        &mut w,
        BUCKET_MEMBERS,
        members.iter().map(|(k, v)| (&k[..], &v[..])),
    )?;
    put_all(&mut w, BUCKET_MEMBERS_REMOVED, std::iter::empty())?;
    put_all(
        &mut w,
        BUCKET_CLUSTER,
        [(CLUSTER_VERSION, CLUSTER_VERSION_WRITTEN)].into_iter(),
    )?;
    put_all(&mut w, BUCKET_ALARM, std::iter::empty())?;

    // secretd: the replicated meta records verbatim, and the stamp.
    let digest = stamp.finish(&marks);
    let mut b = w.bucket(BUCKET_SECRETD)?;
    b.put(SECRETD_FORMAT, SECRETD_FORMAT_VERSION)?;
    for (k, v) in &meta {
        b.put(&[SECRETD_META_PREFIX, k].concat(), v)?;
    }
    b.put(SECRETD_STAMP, &digest)?;
    b.finish()?;
    w.finish()
}

fn put_all<'a>(
    w: &mut Writer,
    bucket: &[u8],
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<()> {
    let mut b = w.bucket(bucket)?;
    for (k, v) in pairs {
        b.put(k, v)?;
    }
    b.finish()
}

fn put_stamped(
    w: &mut Writer,
    stamp: &mut Stamp,
    bucket: &[u8],
    pairs: &[(Vec<u8>, Vec<u8>)],
) -> Result<()> {
    let mut b = w.bucket(bucket)?;
    for (k, v) in pairs {
        b.put(k, v)?;
        stamp.pair(bucket, k, v);
    }
    b.finish()
}

/// raftpb.ConfState as etcd 3.5 stores it (Go's encoding/json).
fn conf_state_json(raw: &[u8]) -> Result<Vec<u8>> {
    use protobuf::Message as _;
    let cs = raft::eraftpb::ConfState::parse_from_bytes(raw)
        .map_err(|e| StoreError::Storage(format!("snapshot conf state: {e}")))?;
    let list = |ids: &[u64]| {
        if ids.is_empty() {
            "null".to_string()
        } else {
            format!(
                "[{}]",
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    };
    Ok(format!(
        r#"{{"voters":{},"learners":{},"voters_outgoing":{},"learners_next":{},"auto_leave":{}}}"#,
        list(&cs.voters),
        list(&cs.learners),
        list(&cs.voters_outgoing),
        list(&cs.learners_next),
        cs.auto_leave
    )
    .into_bytes())
}

/// A member as etcd 3.5 stores it (`membership.Member`, Go's JSON).
fn member_json(mem: &crate::pb::etcdserverpb::Member) -> Vec<u8> {
    let strings = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",")
        )
    };
    let mut s = format!(
        r#"{{"id":{},"peerURLs":{}"#,
        mem.id,
        strings(&mem.peer_ur_ls)
    );
    if mem.is_learner {
        s.push_str(r#","isLearner":true"#);
    }
    if !mem.name.is_empty() {
        s.push_str(&format!(r#","name":{}"#, json_str(&mem.name)));
    }
    if !mem.client_ur_ls.is_empty() {
        s.push_str(&format!(r#","clientURLs":{}"#, strings(&mem.client_ur_ls)));
    }
    s.push('}');
    s.into_bytes()
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

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
    let mut stamp = Stamp::default();
    let meta_bucket: BTreeMap<Vec<u8>, Vec<u8>> =
        read_small(&r, &buckets, BUCKET_META)?.into_iter().collect();
    let scheduled = compact_mark(path, meta_bucket.get(SCHEDULED_COMPACT))?;
    let finished = compact_mark(path, meta_bucket.get(FINISHED_COMPACT))?;
    let marks = [
        meta_bucket.get(SCHEDULED_COMPACT).cloned(),
        meta_bucket.get(FINISHED_COMPACT).cloned(),
    ];
    // etcd finishes an interrupted compaction when it starts: so does this.
    let compact = scheduled.max(finished);

    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let leases = read_small(&r, &buckets, BUCKET_LEASE)?;
    for (k, v) in &leases {
        stamp.pair(BUCKET_LEASE, k, v);
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
        records.push((
            lease::meta_key(l.id),
            lease::encode_record(l.ttl, 0).to_vec(),
        ));
    }
    let mut auth_enabled = false;
    for (k, v) in read_small(&r, &buckets, BUCKET_AUTH)? {
        stamp.pair(BUCKET_AUTH, &k, &v);
        if k == AUTH_ENABLED {
            auth_enabled = v == [1];
            records.push((auth::META_ENABLED.to_vec(), vec![auth_enabled as u8]));
        } else if k == AUTH_REVISION {
            let rev: [u8; 8] = v[..]
                .try_into()
                .map_err(|_| bad(path, "auth bucket: authRevision is not 8 bytes"))?;
            records.push((auth::META_REVISION.to_vec(), rev.to_vec()));
        }
    }
    let users = read_small(&r, &buckets, BUCKET_AUTH_USERS)?;
    let mut has_root = false;
    for (k, v) in &users {
        stamp.pair(BUCKET_AUTH_USERS, k, v);
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
        records.push((auth::user_key(name), u.encode_to_vec()));
    }
    if auth_enabled && !has_root {
        return Err(bad(
            path,
            "auth is enabled but user root with role root is missing",
        ));
    }
    let roles = read_small(&r, &buckets, BUCKET_AUTH_ROLES)?;
    for (k, v) in &roles {
        stamp.pair(BUCKET_AUTH_ROLES, k, v);
        let role = Role::decode(&v[..]).map_err(|e| bad(path, format!("role record: {e}")))?;
        let name = std::str::from_utf8(k)
            .ok()
            .filter(|n| role.name == n.as_bytes())
            .ok_or_else(|| bad(path, format!("role record {k:x?} names another role")))?;
        records.push((auth::role_key(name), v.clone()));
    }

    // The keyspace, checked record by record.
    let (mut revisions, mut max_main, mut reserved) = (0u64, 0i64, false);
    let keys = find(&buckets, BUCKET_KEY).expect("checked above");
    r.for_each(BUCKET_KEY, keys, &mut |k, v| {
        stamp.pair(BUCKET_KEY, k, v);
        let Converted { main, key, .. } = convert_kv(path, k, v)?;
        reserved |= key.starts_with(RESERVED_PREFIX);
        max_main = max_main.max(main);
        revisions += 1;
        Ok(())
    })?;
    let current = max_main.max(compact).max(1);
    let digest = stamp.finish(&marks);

    // secretd's records, if the file still is what secretd wrote.
    let secretd = read_small(&r, &buckets, BUCKET_SECRETD)?;
    let mut secretd_records = false;
    if !secretd.is_empty() {
        let get = |name: &[u8]| secretd.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if get(SECRETD_FORMAT).map(|v| &v[..]) != Some(SECRETD_FORMAT_VERSION) {
            return Err(bad(
                path,
                "its secretd records are of another format version (made by a newer secretd?)",
            ));
        }
        if get(SECRETD_STAMP).is_some_and(|s| s[..] == digest[..]) {
            let mut verbatim = Vec::new();
            for (k, v) in &secretd {
                let Some(key) = k.strip_prefix(SECRETD_META_PREFIX) else {
                    continue;
                };
                if !crate::schema::is_replicated(key) {
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
            records = verbatim;
            secretd_records = true;
        } else {
            tracing::warn!(
                path = %path.display(),
                "the snapshot's secretd records no longer match its etcd data (it changed in \
                 etcd): restoring etcd's data alone"
            );
        }
    } else if reserved {
        return Err(bad(
            path,
            "etcd keys under \\xff\\xffsecretd/, secretd's reserved range, in a snapshot not made \
             by secretd: move them elsewhere in etcd before migrating",
        ));
    }
    if !secretd_records {
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
    let current_revision = match records.iter().find(|(k, _)| k == m::CURRENT_REV) {
        Some((_, v)) => crate::db::u64_from(v, "current revision")? as i64,
        None => 1,
    };
    if current_revision < max_main {
        return Err(bad(
            path,
            format!("revision {max_main} is past the current revision {current_revision}"),
        ));
    }
    let compact_revision = match records.iter().find(|(k, _)| k == m::COMPACT_REV) {
        Some((_, v)) => crate::db::u64_from(v, "compact revision")? as i64,
        None => 0,
    };
    let count = |p: &[u8]| records.iter().filter(|(k, _)| k.starts_with(p)).count();
    let summary = Summary {
        revisions,
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
        secretd_records,
        unhashed: !hashed,
    };
    Ok(EtcdImport {
        path: path.to_path_buf(),
        content_bytes,
        meta: records,
        summary,
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

#[cfg(test)]
mod tests;
