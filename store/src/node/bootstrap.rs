//! A member's storage before the loop runs: bootstrapping a new cluster,
//! restoring one from a backup, installing a snapshot file (also used by
//! the loop when a snapshot arrives), and `--force-new-cluster`, which
//! turns a survivor of a lost quorum into a one-member cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState,
};
use raft::Storage as _;

use super::{require, NodeConfig};
use crate::db::{u64_from, Db, WriteBatch, CF_META};
use crate::error::{Result, StoreError};
use crate::log_store::LogStore;
use crate::membership::Registry;
use crate::mvcc::Mvcc;
use crate::pb::etcdserverpb::Member;
use crate::schema::meta::{
    APPLIED as META_APPLIED, CLUSTER_ID as META_CLUSTER_ID, FORCED_NEW_CLUSTER as META_FORCED,
    INSTALLING as META_INSTALLING, MEMBER_ID as META_MEMBER_ID,
};
use crate::{cluster, membership, mvcc, snapshot};

/// Installs the snapshot file at `path`: its records read once, checked
/// whole (trailer included) before anything is replaced; then a durable
/// marker, the old state cleared, the records loaded; then one synced
/// batch that moves the applied index to the snapshot and drops the
/// marker, then the log's reset, synced. (A snapshot whose meta records
/// are too many to hold meanwhile is checked by a read of its own first,
/// and loaded as it is read.) Returns the snapshot's index and what was
/// installed, from which the caller reloads the keyspace view.
pub(super) fn install_snapshot(
    db: &Db,
    log: &mut LogStore,
    path: &std::path::Path,
    want: Option<(u64, u64)>,
) -> Result<(u64, mvcc::Installed)> {
    let started = std::time::Instant::now();
    let mut r = snapshot::SnapshotReader::open(path)?;
    let header = r.header.clone();
    if let Some((index, term)) = want {
        if (header.index, header.term) != (index, term) {
            return Err(StoreError::Storage(format!(
                "snapshot file {} is for {}/{}, raft wants {index}/{term}",
                path.display(),
                header.index,
                header.term
            )));
        }
    }
    let mark = || {
        let mut b = WriteBatch::default();
        b.put_cf(db.cf(CF_META), META_INSTALLING, header.index.to_be_bytes());
        db.write_sync(b)
    };
    let installed = match mvcc::install_records_checked(db, &mut r, &mut || mark())? {
        Some(installed) => installed,
        None => {
            snapshot::verify(path)?;
            tracing::debug!(
                verify_ms = started.elapsed().as_millis() as u64,
                "checked a snapshot with many meta records before installing it"
            );
            mark()?;
            mvcc::install_records(db, &mut snapshot::SnapshotReader::open(path)?)?
        }
    };
    let cs = ConfState::parse_from_bytes(&header.conf_state)
        .map_err(|e| StoreError::Storage(format!("snapshot conf state: {e}")))?;
    let mut b = WriteBatch::default();
    log.apply_snapshot(header.index, header.term, cs, &mut b)?;
    b.put_cf(db.cf(CF_META), META_APPLIED, header.index.to_be_bytes());
    b.delete_cf(db.cf(CF_META), META_INSTALLING);
    db.write_sync(b)?;
    // After the state machine: a crash between the two leaves `LOG_BASE`,
    // from which `LogStore::open` redoes the log's reset.
    log.persist(true)?;
    Ok((header.index, installed))
}

/// Stages everything that makes this data directory a member of a new
/// cluster: the initial configuration at index 1, member and cluster ids,
/// the cluster token, and the member registry. Returns (member id, cluster id).
/// This member's id and its cluster's: from disk for a member that ran
/// before, from the cluster it joins, or from a new cluster it bootstraps.
pub(super) fn identity(db: &Arc<Db>, log: &mut LogStore, cfg: &NodeConfig) -> Result<(u64, u64)> {
    let meta = db.cf(CF_META);
    // A member id without a configuration: a member that joined and stopped
    // before its first snapshot arrived. It is still that member and waits
    // for the leader; bootstrapping here would invent a configuration.
    let joined_earlier = db.get(CF_META, META_MEMBER_ID)?.is_some();
    if log.is_initialized() || joined_earlier {
        let id = u64_from(&require(db, META_MEMBER_ID)?, "member id")?;
        let cluster_id = u64_from(&require(db, META_CLUSTER_ID)?, "cluster id")?;
        return Ok((id, cluster_id));
    }
    let mut batch = WriteBatch::default();
    let ids = match &cfg.join {
        // Joining: no configuration of our own; the leader sends a snapshot
        // that carries it.
        Some(join) => {
            batch.put_cf(meta, META_MEMBER_ID, join.member_id.to_be_bytes());
            batch.put_cf(meta, META_CLUSTER_ID, join.cluster_id.to_be_bytes());
            let mut reg = Registry::default();
            for m in &join.members {
                reg.put(db, m.clone(), &mut batch);
            }
            (join.member_id, join.cluster_id)
        }
        None => bootstrap_new_cluster(db, log, cfg, &mut batch)?,
    };
    db.write_sync(batch)?;
    log.persist(true)?;
    Ok(ids)
}

pub(super) fn bootstrap_new_cluster(
    db: &Db,
    log: &mut LogStore,
    cfg: &NodeConfig,
    batch: &mut WriteBatch,
) -> Result<(u64, u64)> {
    let me = cfg
        .initial_members
        .iter()
        .find(|m| m.name == cfg.name)
        .ok_or_else(|| {
            StoreError::InvalidArgument(format!(
                "--initial-cluster has no member named {:?} (--name)",
                cfg.name
            ))
        })?;
    let ids: Vec<u64> = cfg.initial_members.iter().map(|m| m.id).collect();
    let cluster_id = cluster::cluster_id(&ids);
    log.bootstrap(ids, batch)?;
    let meta = db.cf(CF_META);
    batch.put_cf(meta, META_APPLIED, LogStore::BOOTSTRAP_INDEX.to_be_bytes());
    batch.put_cf(meta, META_MEMBER_ID, me.id.to_be_bytes());
    batch.put_cf(meta, META_CLUSTER_ID, cluster_id.to_be_bytes());
    batch.put_cf(meta, membership::META_TOKEN, cfg.cluster_token.as_bytes());
    let mut reg = Registry::default();
    for m in &cfg.initial_members {
        let member = Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: false,
        };
        reg.put(db, member, batch);
    }
    Ok((me.id, cluster_id))
}

/// Creates the data directory of a member of a *new* cluster from a backup:
/// keys, revisions, leases, users and roles from the backup; identity and
/// membership from `cfg` (as etcdutl's snapshot restore). The backup is
/// what `etcdctl snapshot save` stores, from secretd or from etcd 3.4/3.5
/// (`etcd_backup`), or a secretd backup of the format before. The whole
/// file is read and checked before the data directory is created, and a
/// restore that fails afterwards removes what it made. Returns what was
/// restored, in words.
pub fn restore(cfg: &NodeConfig, backup: &std::path::Path) -> Result<String> {
    if cfg.data_dir.exists() {
        return Err(StoreError::InvalidArgument(format!(
            "data directory {} already exists; restore needs a new one",
            cfg.data_dir.display()
        )));
    }
    if !cfg.initial_members.iter().any(|m| m.name == cfg.name) {
        return Err(StoreError::InvalidArgument(format!(
            "--initial-cluster has no member named {:?} (--name)",
            cfg.name
        )));
    }
    let etcd = match crate::etcd_backup::sniff(backup)? {
        crate::etcd_backup::Format::Etcd => Some(crate::etcd_backup::plan(backup)?),
        crate::etcd_backup::Format::Secretd => {
            let mut r = snapshot::SnapshotReader::open_backup(backup)?;
            while r.next_record()?.is_some() {}
            None
        }
    };
    let done = restore_into(cfg, backup, etcd.as_ref());
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&cfg.data_dir);
    }
    done?;
    Ok(match etcd {
        Some(plan) => plan.summary.to_string(),
        None => "a secretd backup".into(),
    })
}

fn restore_into(
    cfg: &NodeConfig,
    backup: &std::path::Path,
    etcd: Option<&crate::etcd_backup::EtcdImport>,
) -> Result<()> {
    let db = Db::open(&cfg.data_dir)?;
    match etcd {
        // The member opens its index from disk when it starts.
        Some(plan) => drop(mvcc::install_with(&db, &mut |sink| plan.install(sink))?),
        None => {
            let mut r = snapshot::SnapshotReader::open_backup(backup)?;
            drop(mvcc::install_records(&db, &mut r)?);
        }
    }
    let mut log = LogStore::open(db.clone())?;
    let mut batch = WriteBatch::default();
    // The backup's members are the old cluster's: replace them.
    for m in Registry::load(&db)?.list() {
        batch.delete_cf(db.cf(CF_META), membership::meta_key(m.id));
    }
    bootstrap_new_cluster(&db, &mut log, cfg, &mut batch)?;
    db.write_sync(batch)?;
    log.persist(true)?;
    // Read it all back, as a start would, before declaring success.
    Mvcc::open(db.clone())?;
    crate::auth::Auth::load(&db, std::time::Duration::from_secs(1))?;
    Ok(())
}

/// Entries of the log read per step while looking for configuration
/// changes (bounds the memory a long uncommitted stretch could take).
const FORCE_SCAN_ENTRIES_MAX: u64 = 1024;

/// What the flag asks of this start: `--force-new-cluster` if set, else
/// nothing but clearing the mark of an earlier forced start. Returns the
/// index of the last configuration change a forced start appended, which
/// the loop checks once it applies it (`Loop::check_forced`).
pub(super) fn force_flag(db: &Db, log: &mut LogStore, id: u64, force: bool) -> Result<Option<u64>> {
    if force {
        return force_new_cluster(db, log, id).map(Some);
    }
    if let Some(v) = db.get(CF_META, META_FORCED)? {
        let at = u64_from(&v, "forced-new-cluster index")?;
        tracing::info!(
            index = at,
            "started without --force-new-cluster after a forced start: the flag may be used again"
        );
        let mut b = WriteBatch::default();
        b.delete_cf(db.cf(CF_META), META_FORCED);
        db.write_sync(b)?;
    }
    Ok(None)
}

/// etcd's `--force-new-cluster` (etcd 3.5's `restartAsStandaloneNode`):
/// after a permanent loss of quorum, this member becomes the only member
/// of its cluster (same cluster id), with every entry it knows committed.
///
/// Entries past its commit index are discarded, as etcd discards them:
/// this member never learned that they committed. Some may have: a leader
/// now lost can have counted this member's copy in its quorum, applied the
/// entry and answered its client before its next message carried the
/// commit index here. That write is what a forced start can lose (README,
/// "Losing quorum for good").
///
/// Then, appended after the commit index and committed at once, as etcd
/// appends them: a change making this member a voter, and one change per
/// other member removing it, from raft's configuration and from the
/// registry alike (the loop applies them as any committed change, one
/// voter at a time, so raft refuses none). Every id the configuration
/// named since the applied index is removed, not only the ones still in
/// it by this function's reading: removing an absent id changes nothing,
/// and one left in would leave a configuration without a quorum.
///
/// Refused (nothing written): a second forced start before a start
/// without the flag (`FORCED_NEW_CLUSTER`), a member no longer in its own
/// configuration, and a member that is already the only one. Returns the
/// index of the last entry appended.
pub(super) fn force_new_cluster(db: &Db, log: &mut LogStore, id: u64) -> Result<u64> {
    if let Some(v) = db.get(CF_META, META_FORCED)? {
        let at = u64_from(&v, "forced-new-cluster index")?;
        return Err(StoreError::InvalidArgument(format!(
            "--force-new-cluster was already applied to this member (its configuration \
             changes end at raft index {at}), and it has not been started without the flag \
             since: remove --force-new-cluster from its command line. Left on, it would \
             again cut this member off from every member added since, and split the cluster"
        )));
    }
    let (applied, hs, last) = log_position(db, log)?;
    let config = committed_config(log, applied, hs.commit, id)?;
    let remove = members_to_remove(db, config, id)?;
    let forced_last = append_forced(db, log, &hs, id, &remove)?;
    tracing::warn!(
        member = format_args!("{id:x}"),
        commit = hs.commit,
        discarded_uncommitted_entries = last - hs.commit,
        removed_members = format_args!("{remove:x?}"),
        "FORCING A NEW CLUSTER (--force-new-cluster): this member becomes the only member of \
         its cluster, with everything it committed. Entries past its commit index are \
         discarded. Wipe the data directories of every other old member before adding any \
         back, and remove the flag before the next start"
    );
    Ok(forced_last)
}

/// The applied index, the hard state and the last index of the log, as
/// `LogStore::open` reconciled them (anything else is a damaged store).
fn log_position(db: &Db, log: &LogStore) -> Result<(u64, HardState, u64)> {
    let applied = match db.get(CF_META, META_APPLIED)? {
        Some(v) => u64_from(&v, "applied index")?,
        None => 0,
    };
    let hs = log.hard_state().clone();
    let last = log
        .last_index()
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    if !(applied <= hs.commit && hs.commit <= last) {
        return Err(StoreError::Storage(format!(
            "raft log out of order: applied {applied}, commit {}, last entry {last}",
            hs.commit
        )));
    }
    Ok((applied, hs, last))
}

/// A configuration as of some index, and every id it named on the way.
struct Config {
    voters: BTreeSet<u64>,
    learners: BTreeSet<u64>,
    named: BTreeSet<u64>,
}

impl Config {
    fn change(&mut self, ch: &ConfChangeSingle) {
        self.named.insert(ch.node_id);
        match ch.get_change_type() {
            ConfChangeType::AddNode => {
                self.voters.insert(ch.node_id);
                self.learners.remove(&ch.node_id);
            }
            ConfChangeType::AddLearnerNode => {
                self.learners.insert(ch.node_id);
                self.voters.remove(&ch.node_id);
            }
            ConfChangeType::RemoveNode => {
                self.voters.remove(&ch.node_id);
                self.learners.remove(&ch.node_id);
            }
        }
    }
}

/// The configuration as of the commit index: the applied one, then every
/// change committed but not applied yet. Refused if one of them removed
/// this member (`id`).
fn committed_config(log: &LogStore, applied: u64, commit: u64, id: u64) -> Result<Config> {
    let cs = log.conf_state();
    if !cs.voters_outgoing.is_empty() || !cs.learners_next.is_empty() {
        return Err(StoreError::Storage(format!(
            "the configuration is joint (voters {:x?}, outgoing {:x?}), which secretd never makes",
            cs.voters, cs.voters_outgoing
        )));
    }
    let voters: BTreeSet<u64> = cs.voters.iter().copied().collect();
    let learners: BTreeSet<u64> = cs.learners.iter().copied().collect();
    let named = voters.union(&learners).copied().collect();
    let mut config = Config {
        voters,
        learners,
        named,
    };
    let mut self_removed_at = None;
    let mut low = applied + 1;
    while low <= commit {
        let high = (low + FORCE_SCAN_ENTRIES_MAX).min(commit + 1);
        let entries = log
            .entries(low, high, None, raft::GetEntriesContext::empty(false))
            .map_err(|e| StoreError::Storage(format!("reading entries {low}..{high}: {e}")))?;
        if entries.is_empty() {
            return Err(StoreError::Storage(format!("no raft log entry {low}")));
        }
        for e in &entries {
            // node id 0 is raft's "not applied" marker.
            for ch in conf_changes(e).iter().filter(|ch| ch.node_id != 0) {
                config.change(ch);
                if ch.get_change_type() == ConfChangeType::RemoveNode && ch.node_id == id {
                    self_removed_at = Some(e.index);
                }
            }
        }
        low += entries.len() as u64;
    }
    if let Some(at) = self_removed_at {
        return Err(StoreError::InvalidArgument(format!(
            "this member's own removal committed at raft index {at}: it is no longer a member \
             and cannot carry the cluster; force a new cluster from another survivor, or \
             restore a backup"
        )));
    }
    Ok(config)
}

/// Every member but this one (`id`): in the configuration, in the
/// registry, or named by the configuration since the applied index.
/// Refused if this member is not in the configuration, or is already the
/// only member.
fn members_to_remove(db: &Db, config: Config, id: u64) -> Result<BTreeSet<u64>> {
    let Config {
        voters,
        learners,
        named,
    } = config;
    if !voters.contains(&id) && !learners.contains(&id) {
        return Err(StoreError::InvalidArgument(format!(
            "this member ({id:x}) is not in its own configuration (voters {voters:x?}, learners \
             {learners:x?}): it was removed from the cluster and cannot carry it; force a new \
             cluster from another survivor, or restore a backup"
        )));
    }
    let registry = Registry::load(db)?;
    let mut others: BTreeSet<u64> = voters.union(&learners).copied().collect();
    others.extend(registry.list().iter().map(|m| m.id));
    others.remove(&id);
    if others.is_empty() {
        return Err(StoreError::InvalidArgument(
            "--force-new-cluster: this member is already the only member of its cluster, so \
             there is nothing to force: start it without the flag"
                .into(),
        ));
    }
    let mut remove = others;
    remove.extend(named);
    remove.remove(&id);
    Ok(remove)
}

/// Appends the forced changes right after the commit index, committed at
/// once, then marks the member as forced. Returns the last index appended.
fn append_forced(
    db: &Db,
    log: &mut LogStore,
    hs: &HardState,
    id: u64,
    remove: &BTreeSet<u64>,
) -> Result<u64> {
    let term = hs.term;
    let mut entries = vec![forced_change(
        ConfChangeType::AddNode,
        id,
        term,
        hs.commit + 1,
    )?];
    for (i, other) in remove.iter().enumerate() {
        let index = hs.commit + 2 + i as u64;
        entries.push(forced_change(
            ConfChangeType::RemoveNode,
            *other,
            term,
            index,
        )?);
    }
    let forced_last = hs.commit + entries.len() as u64;
    // Appending right after the commit index replaces every entry past it.
    log.append(&entries)?;
    let mut forced_hs = hs.clone();
    forced_hs.commit = forced_last;
    log.set_hard_state(forced_hs)?;
    log.persist(true)?;
    // After the log: a crash between the two leaves the changes in the log
    // and no mark, and a retry with the flag appends them again (removing
    // an absent member changes nothing).
    let mut b = WriteBatch::default();
    b.put_cf(db.cf(CF_META), META_FORCED, forced_last.to_be_bytes());
    db.write_sync(b)?;

    let now_last = log
        .last_index()
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    if now_last != forced_last || log.hard_state().commit != forced_last {
        return Err(StoreError::Storage(format!(
            "--force-new-cluster: the log ends at {now_last} with commit {}, not at {forced_last}",
            log.hard_state().commit
        )));
    }
    Ok(forced_last)
}

/// The membership changes an entry carries (none for a normal entry or
/// one that does not decode: apply refuses that one on every member).
fn conf_changes(e: &Entry) -> Vec<ConfChangeSingle> {
    use raft_proto::ConfChangeI;
    match e.get_entry_type() {
        EntryType::EntryNormal => Vec::new(),
        EntryType::EntryConfChange => ConfChange::parse_from_bytes(&e.data)
            .map(|cc| cc.as_v2().changes.to_vec())
            .unwrap_or_default(),
        EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data)
            .map(|cc| cc.changes.to_vec())
            .unwrap_or_default(),
    }
}

/// One forced configuration change as a committed entry. No context: no
/// client waits for it, and an added member keeps its registry record.
fn forced_change(change: ConfChangeType, node_id: u64, term: u64, index: u64) -> Result<Entry> {
    let mut single = ConfChangeSingle::default();
    single.set_change_type(change);
    single.node_id = node_id;
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![single].into());
    let data = cc
        .write_to_bytes()
        .map_err(|e| StoreError::Storage(format!("encoding a configuration change: {e}")))?;
    let mut e = Entry {
        term,
        index,
        data: data.into(),
        ..Default::default()
    };
    e.set_entry_type(EntryType::EntryConfChangeV2);
    Ok(e)
}
