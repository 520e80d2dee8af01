//! Membership changes, run as futures of the real `Node` API: remove a
//! member, and when the fault ends add it back as a new member (a new id,
//! an empty disk) that joins the running cluster.

use super::*;

/// How long the operator waits before trying a refused removal again.
const REMOVAL_RETRY_MS: u64 = 250;

impl World {
    /// An up member other than `not`, to propose through.
    fn proposer_slot(&mut self, not: usize) -> Option<usize> {
        let ups: Vec<usize> = self
            .up_members()
            .into_iter()
            .filter(|s| *s != not)
            .collect();
        if ups.is_empty() {
            return None;
        }
        Some(ups[self.sched_rng.gen_range(0..ups.len())])
    }

    fn proposer(&mut self, not: usize) -> Option<Arc<Node>> {
        let s = self.proposer_slot(not)?;
        self.members[s].up.as_ref().map(|u| u.node.clone())
    }

    pub(super) fn remove_member(&mut self, fault: usize, slot: usize) {
        if self.changing.is_some() || self.members[slot].removed || self.members[slot].up.is_none()
        {
            self.trace
                .note(self.now_ms, format!("removal of m{slot} skipped"));
            return;
        }
        let Some(via) = self.proposer_slot(slot) else {
            return;
        };
        let up = self.members[via].up.as_ref().expect("an up member");
        let (node, keys) = (up.node.clone(), up.objects.keys().clone());
        let id = self.members[slot].id;
        self.changing = Some((fault, slot));
        // As `Cluster.MemberRemove` does: the keyring's check first.
        self.spawn_on(
            vec![via],
            async move {
                let ok = keys.check_member_removal(id).await.is_ok()
                    && node.member_remove(id).await.is_ok();
                Done::Removed { slot, ok }
            },
            Done::MembershipTimedOut,
        );
    }

    pub(super) fn add_member_back(&mut self, fault: usize, slot: usize) {
        if self.changing != Some((fault, slot)) {
            return;
        }
        // A removal whose answer was lost may still have happened: ask a
        // leader.
        let id = self.members[slot].id;
        let gone = self.members[slot].removed
            || self.up_members().iter().any(|s| {
                let up = self.members[*s].up.as_ref().expect("up");
                up.stepper.view().is_leader && !up.node.members().iter().any(|m| m.id == id)
            });
        if !gone {
            self.changing = None;
            return;
        }
        let Some(node) = self.proposer(slot) else {
            self.changing = None;
            return;
        };
        let generation = self.members[slot].generation + 1;
        let peer_urls = vec![format!("http://m{slot}-g{generation}.sim:2380")];
        let member_id = cluster::member_id(&peer_urls, TOKEN);
        self.spawn(
            async move {
                let join = match node.member_add(peer_urls, false).await {
                    Ok(resp) => Some(JoinInfo {
                        cluster_id: node.cluster_id(),
                        member_id,
                        members: resp.members,
                    }),
                    Err(_) => None,
                };
                Done::Added {
                    slot,
                    member_id,
                    join,
                }
            },
            Done::Added {
                slot,
                member_id,
                join: None,
            },
        );
    }

    pub(super) fn membership_done(&mut self, done: Done) {
        match done {
            Done::Removed { slot, ok } => {
                self.trace
                    .note(self.now_ms, format!("removal of m{slot}: ok={ok}"));
                if ok {
                    // The operator stops the removed member's process (it
                    // stops itself once it applies its removal, unless it
                    // never hears of it).
                    self.members[slot].removed = true;
                    self.stop_removed(slot);
                } else {
                    // Refused (no leader yet, a keyring not synced yet):
                    // the operator tries again while the fault lasts.
                    if let Some((fault, _)) = self.changing.take() {
                        self.at(
                            self.now_ms + REMOVAL_RETRY_MS,
                            Ev::RetryRemoval(fault, slot),
                        );
                    }
                }
            }
            Done::Added {
                slot,
                member_id,
                join: None,
            } => {
                // An add whose answer was lost or refused may still have
                // been committed: a voter that never starts would cost the
                // cluster its quorum, so the operator starts it if any
                // member lists it.
                match self.listed_join(member_id) {
                    Some(join) => self.rejoin(slot, join),
                    None => {
                        self.trace
                            .note(self.now_ms, format!("m{slot} could not be added back"));
                        self.changing = None;
                    }
                }
            }
            Done::Added {
                slot,
                join: Some(join),
                ..
            } => self.rejoin(slot, join),
            Done::MembershipTimedOut => {
                // Unknown outcome: the fault's end asks a leader.
                self.trace
                    .note(self.now_ms, "a membership removal timed out".into());
            }
            _ => unreachable!("not a membership outcome"),
        }
    }

    /// What a member joining as `member_id` needs, if some member lists it.
    fn listed_join(&self, member_id: u64) -> Option<JoinInfo> {
        self.up_members().into_iter().find_map(|s| {
            let node = &self.members[s].up.as_ref()?.node;
            let members = node.members();
            members.iter().any(|m| m.id == member_id).then(|| JoinInfo {
                cluster_id: node.cluster_id(),
                member_id,
                members,
            })
        })
    }

    /// Starts slot `slot` as a new member with an empty disk.
    fn rejoin(&mut self, slot: usize, join: JoinInfo) {
        {
            self.stop_member(slot);
            let m = &mut self.members[slot];
            m.generation += 1;
            m.id = join.member_id;
            m.removed = false;
            m.disk = MemDisk::new();
            m.at_crash = None; // a new member: nothing of the old one's to keep
            m.last_conf_index = 0;
            m.prev_voters.clear();
            m.outbox.take();
            m.cfg.name = format!("m{slot}-g{}", m.generation);
            m.cfg.data_dir = self._dir.path().join(&m.cfg.name);
            m.cfg.join = Some(join);
            self.trace.note(
                self.now_ms,
                format!("m{slot} joins again as {:x}", self.members[slot].id),
            );
            self.changing = None;
            self.start_member(slot);
        }
    }
}
