//! A member's storage before the loop runs: bootstrapping a new cluster,
//! restoring one from a backup, and installing a snapshot file (also used
//! by the loop when a snapshot arrives).

use super::*;

/// Installs the snapshot file at `path`: durable marker, records in bounded
/// batches, then one synced batch that moves the applied index to the
/// snapshot and drops the marker, then the log's reset, synced. Returns the snapshot's index. The
/// caller reloads the keyspace view.
pub(super) fn install_snapshot(
    db: &Db,
    log: &mut LogStore,
    path: &std::path::Path,
    want: Option<(u64, u64)>,
) -> Result<u64> {
    let header = snapshot::verify(path)?;
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
    let mut b = WriteBatch::default();
    b.put_cf(db.cf(CF_META), META_INSTALLING, header.index.to_be_bytes());
    db.write_sync(b)?;
    let mut r = snapshot::SnapshotReader::open(path)?;
    mvcc::install_records(db, &mut r)?;
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
    Ok(header.index)
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

/// Creates the data directory of a member of a *new* cluster from a backup
/// (`etcdctl snapshot save`): keys, revisions and leases from the backup;
/// identity and membership from `cfg` (as etcdutl's snapshot restore).
pub fn restore(cfg: &NodeConfig, backup: &std::path::Path) -> Result<()> {
    if cfg.data_dir.exists() {
        return Err(StoreError::InvalidArgument(format!(
            "data directory {} already exists; restore needs a new one",
            cfg.data_dir.display()
        )));
    }
    let mut r = snapshot::SnapshotReader::open_backup(backup)?;
    while r.next_record()?.is_some() {}
    if !cfg.initial_members.iter().any(|m| m.name == cfg.name) {
        return Err(StoreError::InvalidArgument(format!(
            "--initial-cluster has no member named {:?} (--name)",
            cfg.name
        )));
    }
    let db = Db::open(&cfg.data_dir)?;
    let mut r = snapshot::SnapshotReader::open_backup(backup)?;
    mvcc::install_records(&db, &mut r)?;
    let mut log = LogStore::open(db.clone())?;
    let mut batch = WriteBatch::default();
    // The backup's members are the old cluster's: replace them.
    for m in Registry::load(&db)?.list() {
        batch.delete_cf(db.cf(CF_META), membership::meta_key(m.id));
    }
    bootstrap_new_cluster(&db, &mut log, cfg, &mut batch)?;
    db.write_sync(batch)?;
    log.persist(true)?;
    // Read it all back before declaring success.
    Mvcc::open(db.clone())?;
    Ok(())
}
