//! secretd's state as an etcd 3.5 database (`export`): what
//! `Maintenance.Snapshot` streams, bucket by bucket as etcd lays out its
//! backend, with secretd's own records and stamp beside them.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use super::{
    etcd_key, etcd_rev_key, LeasePb, Stamp, AUTH_ENABLED, AUTH_REVISION, BUCKET_ALARM, BUCKET_AUTH,
    BUCKET_AUTH_ROLES, BUCKET_AUTH_USERS, BUCKET_CLUSTER, BUCKET_KEY, BUCKET_LEASE, BUCKET_MEMBERS,
    BUCKET_MEMBERS_REMOVED, BUCKET_META, BUCKET_SECRETD, CLUSTER_VERSION, CLUSTER_VERSION_WRITTEN,
    CONF_STATE, CONSISTENT_INDEX, FINISHED_COMPACT, SCHEDULED_COMPACT, SECRETD_FORMAT,
    SECRETD_FORMAT_VERSION, SECRETD_META_PREFIX, SECRETD_STAMP, TERM,
};
use crate::bolt::write::Writer;
use crate::error::{Result, StoreError};
use crate::schema::{self, meta as m};
use crate::snapshot::{SnapshotHeader, SnapshotReader, CF_TAG_KV, CF_TAG_META};
use crate::{auth, lease};

/// Writes the state snapshot file `snap` as an etcd database at `out`.
/// Returns the database's size in bytes.
pub fn export(snap: &Path, out: &Path) -> Result<u64> {
    let mut r = SnapshotReader::open(snap)?;
    let header = r.header.clone();
    let mut w = Writer::create(out)?;
    let mut stamp = Stamp::default();
    let meta = put_keyspace(&mut r, &mut w, &mut stamp)?;
    let marks = put_meta(&mut w, &header, &meta)?;
    put_leases(&mut w, &mut stamp, &meta)?;
    put_auth(&mut w, &mut stamp, &meta)?;
    put_cluster(&mut w, &meta)?;
    put_secretd(&mut w, &meta, &stamp.finish(&marks))?;
    w.finish()
}

/// Meta records by key, as the state snapshot carries them.
type MetaRecords = BTreeMap<Vec<u8>, Vec<u8>>;

/// key: the keyspace, from the snapshot's `kv` records. Returns the meta
/// records, which the snapshot carries after them.
fn put_keyspace(r: &mut SnapshotReader, w: &mut Writer, stamp: &mut Stamp) -> Result<MetaRecords> {
    let mut meta = MetaRecords::new();
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
    Ok(meta)
}

/// meta: raft's position, the configuration, the compaction marks.
/// Returns the marks, which the stamp covers.
fn put_meta(
    w: &mut Writer,
    header: &SnapshotHeader,
    meta: &MetaRecords,
) -> Result<[Option<Vec<u8>>; 2]> {
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
        w,
        BUCKET_META,
        bucket_meta.iter().map(|(k, v)| (*k, &v[..])),
    )?;
    Ok(marks)
}

/// lease: `leasepb.Lease` by id (8 bytes, big-endian, as the meta key).
fn put_leases(w: &mut Writer, stamp: &mut Stamp, meta: &MetaRecords) -> Result<()> {
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
    put_stamped(w, stamp, BUCKET_LEASE, &leases)
}

/// auth, authUsers, authRoles.
fn put_auth(w: &mut Writer, stamp: &mut Stamp, meta: &MetaRecords) -> Result<()> {
    let enabled = meta.get(auth::META_ENABLED).cloned().unwrap_or(vec![0]);
    let revision = meta
        .get(auth::META_REVISION)
        .cloned()
        .unwrap_or(1u64.to_be_bytes().to_vec());
    let switch = vec![
        (AUTH_ENABLED.to_vec(), enabled),
        (AUTH_REVISION.to_vec(), revision),
    ];
    put_stamped(w, stamp, BUCKET_AUTH, &switch)?;
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
        put_stamped(w, stamp, bucket, &records)?;
    }
    Ok(())
}

/// members: etcd's JSON, by hex id (etcdutl's restore replaces them); and
/// the other buckets of etcd's membership, as a cluster of its version.
fn put_cluster(w: &mut Writer, meta: &MetaRecords) -> Result<()> {
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
        w,
        BUCKET_MEMBERS,
        members.iter().map(|(k, v)| (&k[..], &v[..])),
    )?;
    put_all(w, BUCKET_MEMBERS_REMOVED, std::iter::empty())?;
    put_all(
        w,
        BUCKET_CLUSTER,
        [(CLUSTER_VERSION, CLUSTER_VERSION_WRITTEN)].into_iter(),
    )?;
    put_all(w, BUCKET_ALARM, std::iter::empty())
}

/// secretd: the replicated meta records verbatim, and the stamp.
fn put_secretd(w: &mut Writer, meta: &MetaRecords, digest: &[u8]) -> Result<()> {
    let mut b = w.bucket(BUCKET_SECRETD)?;
    b.put(SECRETD_FORMAT, SECRETD_FORMAT_VERSION)?;
    for (k, v) in meta {
        b.put(&[SECRETD_META_PREFIX, k].concat(), v)?;
    }
    b.put(SECRETD_STAMP, digest)?;
    b.finish()
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
pub(super) fn conf_state_json(raw: &[u8]) -> Result<Vec<u8>> {
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
pub(super) fn member_json(mem: &crate::pb::etcdserverpb::Member) -> Vec<u8> {
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
