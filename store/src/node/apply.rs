//! Applying committed entries: one exhaustive match over every kind of
//! entry (etcd's applier), so each reaches exactly one owner: conf changes
//! raft and the member registry, member records and alarms the node, auth
//! changes `auth`, and keyspace requests `mvcc`. Every entry first passes
//! the auth fence. Runs only on the raft thread, into the batch of the
//! `Ready` being handled.

use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::StateRole;

use super::raft_loop::{Applied, Loop, Waiter};
use super::{entry, AppliedEntry};
use crate::db::{WriteBatch, CF_META};
use crate::error::{Result, StoreError};
use crate::membership;
use crate::mvcc::{ApplyTerms, KvOp, RevEvents, WriteResult};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType, Member, ResponseHeader};
use crate::pb::internal::internal_request::Request;
use crate::pb::internal::{ConfChangeContext, InternalRequest};
use crate::schema::meta::APPLIED as META_APPLIED;

impl Loop {
    pub(super) fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        batch: &mut WriteBatch,
        out: &mut Applied,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _timer = crate::metrics::APPLY_SECONDS.start_timer();
        crate::metrics::PROPOSALS_COMMITTED.inc_by(entries.len() as u64);
        for e in entries {
            if crate::planted::on(crate::planted::Bug::FollowerAppliesUncommitted)
                && e.index <= self.applied
            {
                continue;
            }
            assert_eq!(e.index, self.applied + 1, "entries apply in order, once");
            let (replies_before, refused_before) = (out.replies.len(), self.refused_entries);
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => {} // leader's no-op
                EntryType::EntryNormal => self.apply_request(&e, batch, out)?,
                EntryType::EntryConfChange => match ConfChange::parse_from_bytes(&e.data) {
                    Ok(cc) => self.apply_conf_change(&cc, batch)?,
                    Err(err) => self.refuse_entry(&e, &err.to_string(), out),
                },
                EntryType::EntryConfChangeV2 => match ConfChangeV2::parse_from_bytes(&e.data) {
                    Ok(cc) => self.apply_membership_change(&cc, &e, batch, out)?,
                    Err(err) => self.refuse_entry(&e, &err.to_string(), out),
                },
            }
            self.applied = e.index;
            if self.forced == Some(e.index) {
                self.check_forced()?;
            }
            if self.applied_trace.is_some() {
                self.trace_applied(&e, &out.replies[replies_before..], refused_before);
            }
        }
        self.applier.stage_revision(batch);
        batch.put_cf(
            self.db.cf(CF_META),
            META_APPLIED,
            self.applied.to_be_bytes(),
        );
        Ok(())
    }
    /// Records an applied entry for the simulation's checks: what it came
    /// to, from the replies it produced here and the state it left.
    fn trace_applied(
        &mut self,
        e: &Entry,
        replies: &[(Waiter, Result<(WriteResult, ResponseHeader)>)],
        refused_before: u64,
    ) {
        let acknowledged = replies.iter().any(|(_, r)| r.is_ok())
            || self
                .held_removal_reply
                .as_ref()
                .is_some_and(|(_, r)| r.is_ok());
        // The revision and the refusal count are the same on every member
        // after the same entry (replies exist only on the proposer).
        let refused = self.refused_entries > refused_before;
        let result_hash = (self.applier.revision() as u64) << 1 | refused as u64;
        let entry = AppliedEntry {
            index: e.index,
            term: e.term,
            data_hash: crc32fast::hash(&e.data),
            conf_change: e.get_entry_type() != EntryType::EntryNormal,
            acknowledged,
            result_hash,
        };
        if let Some(trace) = &mut self.applied_trace {
            trace.push(entry);
        }
    }

    /// A committed entry that cannot be applied (it passed the log's
    /// checksum, so it is what was proposed): every member skips it alike,
    /// which keeps them identical, and its proposer hears why. Never a
    /// reason to stop: a request must not be able to halt the cluster.
    fn refuse_entry(&mut self, e: &Entry, why: &str, out: &mut Applied) {
        crate::metrics::APPLY_REFUSED_ENTRIES.inc();
        self.refused_entries += 1;
        tracing::error!(
            index = e.index,
            term = e.term,
            kind = ?e.get_entry_type(),
            bytes = e.data.len(),
            reason = why,
            "committed entry cannot be applied; skipped on every member"
        );
        let ids = match e.get_entry_type() {
            EntryType::EntryNormal => entry::ids_of_undecodable(e.data.as_ref()),
            _ => ConfChangeContext::decode(e.context.as_ref())
                .ok()
                .map(|c| (c.request_id, c.proposer)),
        };
        if let Some(w) = ids.and_then(|(id, proposer)| self.take_waiter(proposer, id)) {
            out.replies.push((
                w,
                Err(StoreError::InvalidArgument(format!(
                    "request cannot be applied: {why}"
                ))),
            ));
        }
    }

    pub(super) fn apply_conf_change(
        &mut self,
        cc: &impl raft_proto::ConfChangeI,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let cs = self
            .raw
            .apply_conf_change(cc)
            .map_err(|e| StoreError::Storage(format!("conf change: {e}")))?;
        self.raw.mut_store().set_conf_state(cs, batch);
        self.conf_in_batch = true;
        Ok(())
    }
    pub(super) fn apply_request(
        &mut self,
        e: &Entry,
        batch: &mut WriteBatch,
        out: &mut Applied,
    ) -> Result<()> {
        let req = match entry::decode(e.data.as_ref()) {
            Ok(req) => req,
            Err(why) => {
                self.refuse_entry(e, &why, out);
                return Ok(());
            }
        };
        let request = req.request.as_ref().expect("entry::decode checks it");
        if let Err(refused) = self.check_auth(&req, request) {
            if let Some(w) = self.take_waiter(req.proposer, req.id) {
                out.replies.push((w, Err(refused)));
            }
            return Ok(());
        }
        // How the entry's proposer asked every member to apply its write.
        let bound = ApplyTerms {
            answer_bytes_max: req
                .write_answer_bytes_max
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            txn_decided_first: req.txn_decided_first,
            txn_rules_etcd: req.txn_rules_etcd,
        };
        // One owner per kind of entry; the compiler checks none is missing.
        let (result, events) = match request {
            Request::MemberAttrs(_) | Request::MemberUpdate(_) => {
                (self.apply_member_record(request, batch), Vec::new())
            }
            Request::Alarm(a) => (self.apply_alarm(a, batch), Vec::new()),
            Request::Auth(a) => (
                self.auth
                    .apply(a, batch, &self.db)
                    .map(|()| WriteResult::Auth { index: e.index }),
                Vec::new(),
            ),
            Request::Put(p) => self.apply_keyspace(KvOp::Put(p), batch, bound),
            Request::DeleteRange(d) => self.apply_keyspace(KvOp::DeleteRange(d), batch, bound),
            Request::Txn(t) => self.apply_keyspace(KvOp::Txn(t), batch, bound),
            Request::Compaction(c) => self.apply_keyspace(KvOp::Compaction(c), batch, bound),
            Request::LeaseGrant(g) => self.apply_keyspace(KvOp::LeaseGrant(g), batch, bound),
            Request::LeaseRevoke(r) => self.apply_keyspace(KvOp::LeaseRevoke(r), batch, bound),
            Request::LeaseRenew(r) => {
                self.apply_keyspace(KvOp::LeaseRenew(r, e.index), batch, bound)
            }
            Request::LeaseExpiry(x) => self.apply_keyspace(KvOp::LeaseExpiry(x), batch, bound),
        };
        // A storage failure stops the member; anything else is the
        // client's answer, the same on every member.
        if let Err(StoreError::Storage(msg)) = &result {
            return Err(StoreError::Storage(msg.clone()));
        }
        if !events.is_empty() {
            let revision = self.applier.revision();
            out.events.push(RevEvents { revision, events });
        }
        if let Some(w) = self.take_waiter(req.proposer, req.id) {
            let header = self.entry_header(e);
            out.replies.push((w, result.map(|r| (r, header))));
        }
        Ok(())
    }
    /// Whether the permissions `req` was admitted with still hold: its
    /// auth revision and fence, as of this entry.
    fn check_auth(&self, req: &InternalRequest, request: &Request) -> Result<()> {
        match (request, req.auth_fence.as_ref()) {
            // A revoke is checked by the keys its lease holds now, as etcd
            // checks it (a key attached after the caller's check counts).
            (Request::LeaseRevoke(r), Some(f)) => self
                .auth
                .check_fence(req.auth_revision, None)
                .and_then(|()| {
                    let lessor = self.applier.mvcc().lessor();
                    let keys = lessor.get(r.id).map(|l| &l.keys);
                    Ok(self
                        .auth
                        .state()
                        .admits_lease_revoke(f, keys.into_iter().flatten().map(Vec::as_slice))?)
                }),
            _ => self
                .auth
                .check_fence(req.auth_revision, req.auth_fence.as_ref()),
        }
    }

    /// A keyspace request, refused on every member alike while CORRUPT is
    /// raised, and while NOSPACE is raised if it adds data.
    fn apply_keyspace(
        &mut self,
        op: KvOp<'_>,
        batch: &mut WriteBatch,
        terms: ApplyTerms,
    ) -> (Result<WriteResult>, Vec<crate::pb::mvccpb::Event>) {
        let keeps_lease = matches!(op, KvOp::LeaseRenew(..));
        if let Some(e) = membership::alarm_refusal(&self.alarms.read(), keeps_lease, op.adds_data())
        {
            return (Err(e), Vec::new());
        }
        self.applier
            .apply_with(op, batch, self.hub.wants_prev_kv(), terms)
    }

    pub(super) fn entry_header(&self, e: &Entry) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision: self.applier.revision(),
            raft_term: e.term,
        }
    }
    /// A raft membership change and its member record, in one batch. A
    /// change raft refuses is refused on every member alike.
    pub(super) fn apply_membership_change(
        &mut self,
        cc: &ConfChangeV2,
        e: &Entry,
        batch: &mut WriteBatch,
        out: &mut Applied,
    ) -> Result<()> {
        let ctx = if e.context.is_empty() {
            ConfChangeContext::default()
        } else {
            match ConfChangeContext::decode(e.context.as_ref()) {
                Ok(ctx) => ctx,
                Err(err) => {
                    self.refuse_entry(e, &format!("its context: {err}"), out);
                    return Ok(());
                }
            }
        };
        let waiter = self.take_waiter(ctx.proposer, ctx.request_id);
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "refused a membership change");
                if let Some(w) = waiter {
                    out.replies.push((
                        w,
                        Err(StoreError::InvalidArgument(format!(
                            "membership change refused: {err}"
                        ))),
                    ));
                }
                return Ok(());
            }
        };
        self.raw.mut_store().set_conf_state(cs, batch);
        self.conf_in_batch = true;
        self.update_registry(cc, ctx.member.as_ref(), batch);
        self.membership_changed = true;
        tracing::info!(
            index = e.index,
            members = self.registry.read().len(),
            "membership changed"
        );
        if let Some(w) = waiter {
            let members = self.registry.read().list();
            let reply = Ok((WriteResult::Members(members), self.entry_header(e)));
            if self.removed && self.raw.raft.state == StateRole::Leader {
                // Its own removal: answered once the remaining voters know
                // (`raft_loop::Leaving`).
                self.held_removal_reply = Some((w, reply));
            } else {
                out.replies.push((w, reply));
            }
        }
        Ok(())
    }
    /// The member records of an applied configuration change: an added
    /// member keeps its record if it has one, else takes the one its
    /// proposer sent (`member`).
    fn update_registry(
        &mut self,
        cc: &ConfChangeV2,
        member: Option<&Member>,
        batch: &mut WriteBatch,
    ) {
        let mut reg = self.registry.write();
        for ch in cc.get_changes() {
            let id = ch.node_id;
            match ch.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let mut m = reg
                        .get(id)
                        .cloned()
                        .or_else(|| member.cloned())
                        .unwrap_or_default();
                    m.id = id;
                    m.is_learner = ch.get_change_type() == ConfChangeType::AddLearnerNode;
                    reg.put(&self.db, m, batch);
                }
                ConfChangeType::RemoveNode => {
                    reg.remove(&self.db, id, batch);
                    self.removed |= id == self.id;
                }
            }
        }
    }

    pub(super) fn apply_alarm(
        &mut self,
        a: &AlarmRequest,
        batch: &mut WriteBatch,
    ) -> Result<WriteResult> {
        let mut alarms = self.alarms.write();
        let key = membership::alarm_key(a.member_id, a.alarm);
        let this = AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        // etcd answers the alarm raised or cleared, if any.
        match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Activate) if a.alarm == AlarmType::None as i32 => {
                Ok(WriteResult::Alarms(Vec::new()))
            }
            Ok(AlarmAction::Activate) => {
                if alarms.insert((a.member_id, a.alarm)) {
                    tracing::warn!(
                        member = format_args!("{:x}", a.member_id),
                        alarm = a.alarm,
                        "alarm raised"
                    );
                }
                batch.put_cf(self.db.cf(CF_META), key, []);
                Ok(WriteResult::Alarms(vec![this]))
            }
            Ok(AlarmAction::Deactivate) => {
                let cleared = alarms.remove(&(a.member_id, a.alarm));
                batch.delete_cf(self.db.cf(CF_META), key);
                Ok(WriteResult::Alarms(if cleared {
                    vec![this]
                } else {
                    Vec::new()
                }))
            }
            _ => Err(StoreError::InvalidArgument(
                "alarm request must activate or deactivate an alarm".into(),
            )),
        }
    }
    /// Published attributes and peer URL updates of an existing member.
    pub(super) fn apply_member_record(
        &mut self,
        req: &Request,
        batch: &mut WriteBatch,
    ) -> Result<WriteResult> {
        let mut reg = self.registry.write();
        let (id, update): (u64, &dyn Fn(&mut Member)) = match req {
            Request::MemberAttrs(a) => (a.id, &|m: &mut Member| {
                m.name = a.name.clone();
                m.client_ur_ls = a.client_ur_ls.clone();
            }),
            Request::MemberUpdate(u) => {
                (u.id, &|m: &mut Member| m.peer_ur_ls = u.peer_ur_ls.clone())
            }
            _ => return Err(StoreError::InvalidArgument("not a member record".into())),
        };
        let Some(mut m) = reg.get(id).cloned() else {
            return Err(StoreError::MemberNotFound);
        };
        update(&mut m);
        reg.put(&self.db, m, batch);
        self.membership_changed = true;
        Ok(WriteResult::Members(reg.list()))
    }
}
