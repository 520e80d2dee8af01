//! The member registry: every member's id, name, peer and client URLs and
//! learner flag, as etcd's `Member` messages. Replicated state: records live
//! in the meta column family under `member/` and travel in snapshots. It
//! changes only in the raft apply path (conf changes, published attributes,
//! peer URL updates).

use std::collections::BTreeMap;

use crate::db::{Direction, IteratorMode, WriteBatch};
use prost::Message;

use crate::db::{Db, CF_META};
use crate::error::{Result, StoreError};
use crate::pb::etcdserverpb::Member;
use crate::schema;

pub const META_PREFIX: &[u8] = crate::schema::meta::MEMBER_PREFIX;
/// The cluster token, needed to derive the ids of members added later.
pub const META_TOKEN: &[u8] = crate::schema::meta::CLUSTER_TOKEN;

pub fn meta_key(id: u64) -> Vec<u8> {
    let mut k = META_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Raised alarms: `alarm/<member id><alarm type>` (empty value).
pub const ALARM_PREFIX: &[u8] = crate::schema::meta::ALARM_PREFIX;

pub fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = ALARM_PREFIX.to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// Is NOSPACE raised on any member? Then writes that add data are refused,
/// when proposed and again when applied (the alarm is replicated state).
pub fn nospace_raised(alarms: &std::collections::BTreeSet<(u64, i32)>) -> bool {
    use crate::pb::etcdserverpb::AlarmType;
    alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
}

/// The refusal raised alarms make of a keyspace request, applied alike on
/// every member (alarms are replicated state): while CORRUPT is raised on
/// any member, everything but a lease renewal (`keeps_lease`; etcd's
/// corrupt applier); while NOSPACE is, whatever `adds_data`.
pub fn alarm_refusal(
    alarms: &std::collections::BTreeSet<(u64, i32)>,
    keeps_lease: bool,
    adds_data: bool,
) -> Option<crate::StoreError> {
    use crate::pb::etcdserverpb::AlarmType;
    let raised = |t: AlarmType| alarms.iter().any(|(_, a)| *a == t as i32);
    if !keeps_lease && raised(AlarmType::Corrupt) {
        return Some(crate::StoreError::Corrupt);
    }
    if adds_data && raised(AlarmType::Nospace) {
        return Some(crate::StoreError::NoSpace);
    }
    None
}

/// Is `member` named in a CORRUPT alarm? Then it serves no reads: its state
/// is the one found damaged (or it cannot be told apart from the damaged).
pub fn corrupt_member(alarms: &std::collections::BTreeSet<(u64, i32)>, member: u64) -> bool {
    use crate::pb::etcdserverpb::AlarmType;
    alarms.contains(&(member, AlarmType::Corrupt as i32))
}

/// Every raised alarm: (member id, alarm type).
pub fn load_alarms(db: &Db) -> Result<std::collections::BTreeSet<(u64, i32)>> {
    let mut out = std::collections::BTreeSet::new();
    for item in db.iterator_cf(
        db.cf(CF_META),
        IteratorMode::From(ALARM_PREFIX, Direction::Forward),
    ) {
        let (k, _) = item?;
        if !schema::is_alarm_key(&k) {
            break;
        }
        let r = &k[ALARM_PREFIX.len()..];
        let member = u64::from_be_bytes(r[..8].try_into().unwrap_or_default());
        let alarm = i32::from_be_bytes(r[8..].try_into().unwrap_or_default());
        out.insert((member, alarm));
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registry {
    members: BTreeMap<u64, Member>,
}

impl Registry {
    pub fn load(db: &Db) -> Result<Registry> {
        let mut members = BTreeMap::new();
        for item in db.iterator_cf(
            db.cf(CF_META),
            IteratorMode::From(META_PREFIX, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !schema::is_member_key(&k) {
                break;
            }
            let m = Member::decode(v.as_ref())
                .map_err(|e| StoreError::Storage(format!("corrupt member record: {e}")))?;
            members.insert(m.id, m);
        }
        Ok(Registry { members })
    }

    pub fn list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn put(&mut self, db: &Db, m: Member, batch: &mut WriteBatch) {
        batch.put_cf(db.cf(CF_META), meta_key(m.id), m.encode_to_vec());
        self.members.insert(m.id, m);
    }

    pub fn remove(&mut self, db: &Db, id: u64, batch: &mut WriteBatch) -> Option<Member> {
        batch.delete_cf(db.cf(CF_META), meta_key(id));
        self.members.remove(&id)
    }

    /// The member already using any of these peer URLs.
    pub fn with_peer_url(&self, urls: &[String]) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)))
    }

    /// (id, first peer URL) of every member: what the transport dials.
    pub fn peer_addresses(&self) -> Vec<(u64, String)> {
        self.members
            .values()
            .filter_map(|m| m.peer_ur_ls.first().map(|u| (m.id, u.clone())))
            .collect()
    }
}
