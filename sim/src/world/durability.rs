//! The checks that name a lost write or a stuck cluster directly, instead
//! of leaving it to the history and watch checkers to notice later
//! (seed 7319532 lost an acknowledged write, and its cluster never had a
//! leader again, while every raft safety check held):
//! - what a member acknowledged is on a quorum's synced log;
//! - a member restarts with the configuration it had applied, and what it
//!   had applied and lost in the crash it can redo from its own synced log;
//! - a cluster with a live quorum has a leader soon after every fault
//!   healed.

use secretd_store::node::AppliedEntry;

use super::*;

/// How long after every fault healed a live quorum must have a leader:
/// the longest election timeout here is 15 ticks of 100 ms, and pre-vote
/// and a member catching up may each cost one more round.
pub(super) const LEADER_WITHIN_MS: u64 = 4_000;
/// Synced entries a crashed member's record keeps, for counting it among
/// the holders of entries acknowledged while it is down.
const CRASH_SYNCED_KEPT: u64 = 1_024;

/// What a member had when it crashed, and what it must come back with.
#[derive(Clone, Debug)]
pub(super) struct Durable {
    pub term: u64,
    pub vote: u64,
    pub last_index: u64,
    pub last_term: Option<u64>,
    pub applied: u64,
    pub voters: Vec<u64>,
    /// The last configuration change it had applied (it must not go back
    /// past it: a configuration a quorum may no longer exist for).
    pub last_conf_index: u64,
    /// (index, term) of its last synced entries, in order, and the index
    /// its log was compacted through (everything up to it is applied).
    pub synced: Vec<(u64, u64)>,
    pub compacted_through: u64,
}

impl Durable {
    pub(super) fn of(stepper: &Stepper, last_conf_index: u64) -> Durable {
        let v = stepper.view();
        // What was persisted, not raft's view: a crash between a step and
        // its `Ready` rightly loses what the step did (seed 5550291: a
        // leader crashed holding a proposal it had not yet written).
        let (term, vote, synced_last) = stepper.persisted();
        let from = synced_last
            .saturating_sub(CRASH_SYNCED_KEPT)
            .max(v.first_index);
        Durable {
            term,
            vote,
            last_index: synced_last,
            last_term: stepper.log_term(synced_last),
            applied: v.applied,
            voters: stepper.voters(),
            last_conf_index,
            synced: (from..=synced_last)
                .filter_map(|i| Some((i, stepper.log_term(i)?)))
                .collect(),
            compacted_through: v.first_index.saturating_sub(1),
        }
    }
}

impl World {
    /// A removed member's process stops. Its disk still counts for entries
    /// it had synced before: an entry committed with its vote is safe on
    /// the old configuration's quorum, which overlaps every new one.
    pub(super) fn stop_removed(&mut self, slot: usize) {
        if let Some(up) = self.stop_member(slot) {
            let m = &mut self.members[slot];
            m.at_crash = Some(Durable::of(&up.stepper, m.last_conf_index));
        }
    }

    /// After member `slot` ran a step: each entry it acknowledged to a
    /// client is on the synced log of a quorum of its configuration, or of
    /// the one before its last configuration change. An entry commits
    /// under the configuration the leader has applied, and raft-rs admits
    /// one change at a time, so the leader is at most one change behind.
    pub(super) fn check_acknowledged(
        &mut self,
        slot: usize,
        applied: &[AppliedEntry],
        voters_now: &[u64],
        voters_before_change: &[u64],
    ) {
        for e in applied.iter().filter(|e| e.acknowledged) {
            let quorum = |voters: &[u64]| {
                let holding = voters
                    .iter()
                    .filter(|id| self.holds_synced(**id, e.index, e.term))
                    .count();
                holding * 2 > voters.len()
            };
            if !quorum(voters_now) && !quorum(voters_before_change) {
                self.invariants.violations.push(format!(
                    "{} ms: m{slot} acknowledged entry {} (term {}) that is not on the synced log \
                     of a quorum of voters {voters_now:x?} (or {voters_before_change:x?}, before \
                     its last configuration change)",
                    self.now_ms, e.index, e.term
                ));
            }
        }
    }

    /// Whether member `id` has entry (index, term) durably: in its synced
    /// log, or compacted into its state (which is synced before the log
    /// forgets it). A member that is down counts with what it had synced.
    fn holds_synced(&self, id: u64, index: u64, term: u64) -> bool {
        let Some(m) = self.members.iter().find(|m| m.id == id) else {
            return false;
        };
        match (&m.up, &m.at_crash) {
            (Some(up), _) => {
                index < up.stepper.view().first_index
                    || (index <= up.stepper.synced_last_index()
                        && up.stepper.log_term(index) == Some(term))
            }
            (None, Some(d)) => {
                index <= d.compacted_through || d.synced.binary_search(&(index, term)).is_ok()
            }
            (None, None) => false,
        }
    }

    /// A restarted member against what it had at the crash: its raft
    /// state (term, vote, last entry), its configuration, and every entry
    /// it had applied, redone from its own log.
    pub(super) fn check_restart(&mut self, slot: usize, d: &Durable, stepper: &Stepper) {
        let v = stepper.view();
        let now = self.now_ms;
        let mut lost = Vec::new();
        if v.term < d.term
            || (v.term == d.term && v.vote != d.vote)
            || v.last_index < d.last_index
            || (d.last_index >= v.first_index && stepper.log_term(d.last_index) != d.last_term)
        {
            lost.push(format!(
                "persisted raft state: had term {} vote {:x} last entry {} (term {:?}), \
                 restarted with term {} vote {:x} last entry {}",
                d.term, d.vote, d.last_index, d.last_term, v.term, v.vote, v.last_index
            ));
        }
        if stepper.voters() != d.voters {
            lost.push(format!(
                "its configuration: had voters {:x?}, restarted with {:x?}",
                d.voters,
                stepper.voters()
            ));
        }
        if v.applied < d.last_conf_index {
            lost.push(format!(
                "the configuration change it applied at {}: restarted at applied {}",
                d.last_conf_index, v.applied
            ));
        }
        let unredoable = (v.applied.max(v.first_index) + 1..=d.applied)
            .find(|i| stepper.log_term(*i) != self.invariants.applied_term(*i));
        if let Some(i) = unredoable.filter(|_| v.applied < d.applied) {
            lost.push(format!(
                "applied entry {i} (it had applied {}, restarted at {}) is not in its log to redo",
                d.applied, v.applied
            ));
        }
        for what in lost {
            self.invariants
                .violations
                .push(format!("{now} ms: m{slot} lost in a crash {what}"));
        }
    }

    /// `LEADER_WITHIN_MS` after every fault healed, and after the last
    /// member stopped, started or changed configuration: if the members
    /// that run hold a quorum of the newest configuration any member
    /// applied, one of them leads and all of them know it.
    pub(super) fn check_leader(&mut self) {
        let due_ms = self.disrupted_ms + LEADER_WITHIN_MS;
        if due_ms > self.now_ms {
            self.at(due_ms, Ev::CheckLeader);
            return;
        }
        let ups = self.up_members();
        let voters = self.latest_conf.1.clone();
        if voters.is_empty() {
            return;
        }
        let views: Vec<(usize, secretd_store::node::RaftView)> = ups
            .iter()
            .filter_map(|s| {
                let up = self.members[*s].up.as_ref()?;
                let v = up.stepper.view();
                voters.contains(&v.id).then_some((*s, v))
            })
            .collect();
        if views.len() * 2 <= voters.len() {
            self.trace.note(
                self.now_ms,
                format!("no live quorum: {} of voters {voters:x?} run", views.len()),
            );
            return;
        }
        let leader = views.iter().find(|(_, v)| v.is_leader).map(|(_, v)| v.id);
        let agreed = leader.is_some_and(|l| views.iter().all(|(_, v)| v.leader_id == l));
        if !agreed {
            let seen: Vec<String> = views
                .iter()
                .map(|(s, v)| format!("m{s} term {} leader {:x}", v.term, v.leader_id))
                .collect();
            self.invariants.violations.push(format!(
                "{} ms: no agreed leader {LEADER_WITHIN_MS} ms after every fault healed, with \
                 {} of voters {voters:x?} running: {}",
                self.now_ms,
                views.len(),
                seen.join(", ")
            ));
        }
    }
}
