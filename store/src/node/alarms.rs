//! etcd's alarms and the backend quota they guard: NOSPACE raised when a
//! write would take the backend past the quota, CORRUPT raised by the
//! corruption checker, and what each refuses. Alarms are replicated state,
//! so they are raised and cleared through raft; these are the member's
//! side of it (admission, Maintenance.Alarm, Status).

use std::sync::atomic::Ordering;

use super::{unexpected, Node};
use crate::error::{Result, StoreError};
use crate::membership;
use crate::mvcc::{KvOp, WriteResult};
use crate::pb::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType};
use crate::pb::internal::internal_request::Request;

impl Node {
    /// A member whose keyspace was found damaged serves no reads from it:
    /// named in a CORRUPT alarm, or outvoted by its peers' hashes.
    pub fn check_serving(&self) -> Result<()> {
        if self.found_damaged.load(Ordering::Relaxed)
            || membership::corrupt_member(&self.alarms.read(), self.id)
        {
            return Err(StoreError::MemberDamaged);
        }
        Ok(())
    }

    /// Records that this member's keyspace disagrees with its peers'
    /// (`check_serving` refuses reads from now until restart).
    pub fn mark_damaged(&self) {
        self.found_damaged.store(true, Ordering::Relaxed);
    }

    /// Raises CORRUPT naming `member` through raft, as etcd's corruption
    /// checker does (`Maintenance.Alarm` checks the caller; this does not).
    pub async fn raise_corrupt(&self, member: u64) -> Result<()> {
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: member,
            alarm: AlarmType::Corrupt as i32,
        };
        self.propose(Request::Alarm(raise)).await.map(|_| ())
    }

    /// etcd's quota: refuse a write that adds data while NOSPACE is raised,
    /// or that would take the backend past the quota (and then raise it).
    /// What adds data is `KvOp::adds_data`, the rule apply refuses by
    /// while NOSPACE is raised, so admission and apply cannot disagree.
    pub(super) async fn check_quota(&self, op: KvOp<'_>, request_bytes: usize) -> Result<()> {
        if !op.adds_data() {
            return Ok(());
        }
        if membership::nospace_raised(&self.alarms.read()) {
            return Err(StoreError::NoSpace);
        }
        let size = self.status.read().db_size_bytes;
        if size.saturating_add(request_bytes as i64) <= self.cfg.quota_backend_bytes {
            return Ok(());
        }
        tracing::warn!(
            size,
            quota = self.cfg.quota_backend_bytes,
            "backend quota exceeded; raising NOSPACE"
        );
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Request::Alarm(raise)).await {
            tracing::warn!(error = %e, "could not raise the NOSPACE alarm");
        }
        Err(StoreError::NoSpace)
    }

    /// Maintenance.Alarm: list, raise or clear alarms, as etcd 3.5's
    /// applier does: a list ignores the member id (every member's alarms,
    /// of one type or, for NONE, all); a raise or clear names one member by
    /// id, any id (0 included, which no member has), and answers the alarm
    /// it raised or cleared, if any; raising NONE does nothing.
    pub async fn alarm(&self, req: AlarmRequest) -> Result<Vec<AlarmMember>> {
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => Ok(self
                .alarms
                .read()
                .iter()
                .filter(|(_, t)| req.alarm == AlarmType::None as i32 || *t == req.alarm)
                .map(|(m, t)| AlarmMember {
                    member_id: *m,
                    alarm: *t,
                })
                .collect()),
            Ok(AlarmAction::Activate) if req.alarm == AlarmType::None as i32 => Ok(Vec::new()),
            Ok(_) => match self.propose(Request::Alarm(req)).await? {
                (WriteResult::Alarms(a), _) => Ok(a),
                (other, _) => Err(unexpected(other)),
            },
            Err(_) => Err(StoreError::InvalidArgument("unknown alarm action".into())),
        }
    }

    /// Raised alarms as Status reports them.
    pub fn alarm_errors(&self) -> Vec<String> {
        self.alarms
            .read()
            .iter()
            .map(|(m, t)| {
                format!(
                    "memberID:{m} alarm:{}",
                    AlarmType::try_from(*t)
                        .map(|a| a.as_str_name())
                        .unwrap_or("UNKNOWN")
                )
            })
            .collect()
    }

    /// Gives back space held by deleted and compacted data.
    pub async fn defragment(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.defragment())
            .await
            .map_err(|e| StoreError::Storage(e.to_string()))??;
        self.status.write().db_size_bytes = self.db.size_bytes();
        Ok(())
    }
}
