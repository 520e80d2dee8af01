//! Raft's safety properties, checked after every step of every member:
//! election safety (one leader per term), leader completeness (a leader
//! holds every committed entry), state machine safety (every member
//! applies the same entry at an index), log matching (equal terms at an
//! index mean equal logs up to it), and an applied index that never passes
//! the commit index or goes backwards.

use std::collections::BTreeMap;

use secretd_store::node::{AppliedEntry, RaftView, Stepper};

#[derive(Default)]
pub struct Invariants {
    /// The leader of each term, as first seen.
    leaders: BTreeMap<u64, u64>,
    /// Every entry some member applied: (term, data hash, by whom, what
    /// it came to) by index.
    applied: BTreeMap<u64, (u64, u32, u64, u64)>,
    pub violations: Vec<String>,
}

impl Invariants {
    /// After member `id` ran: `entries` are what it applied in this step,
    /// `applied_before` its applied index before (same incarnation).
    pub fn after_step(
        &mut self,
        now_ms: u64,
        view: &RaftView,
        entries: &[AppliedEntry],
        applied_before: u64,
        stepper: &Stepper,
    ) {
        let id = view.id;
        if view.applied < applied_before {
            self.violate(format!(
                "{now_ms} ms: m{id:x} applied index went back from {applied_before} to {}",
                view.applied
            ));
        }
        if view.applied > view.commit {
            self.violate(format!(
                "{now_ms} ms: m{id:x} applied {} past its commit index {}",
                view.applied, view.commit
            ));
        }
        for e in entries {
            match self.applied.get(&e.index) {
                None => {
                    self.applied
                        .insert(e.index, (e.term, e.data_hash, id, e.result_hash));
                }
                Some(&(term, hash, by, _)) if (term, hash) != (e.term, e.data_hash) => {
                    self.violate(format!(
                        "{now_ms} ms: state machine safety: m{id:x} applied entry {} of term {} \
                         (data {:08x}), m{by:x} applied term {term} (data {hash:08x})",
                        e.index, e.term, e.data_hash
                    ));
                }
                // The apply invariant: the same entry comes to the same
                // result on every member (a refusal included).
                Some(&(_, _, by, result)) if result != e.result_hash => {
                    self.violate(format!(
                        "{now_ms} ms: apply divergence: entry {} came to {:x} on m{id:x} and \
                         {result:x} on m{by:x} (revision << 1 | refused)",
                        e.index, e.result_hash
                    ));
                }
                Some(_) => {}
            }
        }
        if view.is_leader {
            self.check_leader(now_ms, view, stepper);
        }
    }

    fn check_leader(&mut self, now_ms: u64, view: &RaftView, stepper: &Stepper) {
        let known = self.leaders.get(&view.term).copied();
        match known {
            Some(other) if other != view.id => {
                self.violate(format!(
                    "{now_ms} ms: election safety: m{:x} and m{other:x} both lead term {}",
                    view.id, view.term
                ));
                return;
            }
            Some(_) => return, // checked when it was elected
            None => {
                self.leaders.insert(view.term, view.id);
            }
        }
        // A new leader: every applied (so committed) entry must be in its log.
        let missing = self
            .applied
            .range(view.first_index..)
            .find(|(i, (term, _, _, _))| stepper.log_term(**i) != Some(*term))
            .map(|(i, (term, _, by, _))| (*i, *term, *by));
        if let Some((index, term, by)) = missing {
            self.violate(format!(
                "{now_ms} ms: leader completeness: m{:x} leads term {} without entry {index} \
                 of term {term} (applied by m{by:x}); its log holds {:?}",
                view.id,
                view.term,
                stepper.log_term(index)
            ));
        }
    }

    /// The term of the entry applied at `index`, if any member applied it.
    pub fn applied_term(&self, index: u64) -> Option<u64> {
        self.applied.get(&index).map(|a| a.0)
    }

    /// Log matching between two members.
    pub fn check_log_matching(&mut self, now_ms: u64, a: &Stepper, b: &Stepper) {
        let (va, vb) = (a.view(), b.view());
        let lo = va.first_index.max(vb.first_index);
        let hi = va.last_index.min(vb.last_index);
        let mut matched = false;
        for i in (lo..=hi).rev() {
            let (ta, tb) = (a.log_term(i), b.log_term(i));
            if matched && ta != tb {
                self.violate(format!(
                    "{now_ms} ms: log matching: m{:x} and m{:x} agree on a later entry but \
                     differ at {i} (terms {ta:?} and {tb:?})",
                    va.id, vb.id
                ));
                return;
            }
            matched |= ta.is_some() && ta == tb;
        }
    }

    fn violate(&mut self, what: String) {
        // The first few say it; a broken invariant repeats every step.
        if self.violations.len() < 8 {
            self.violations.push(what);
        }
    }
}
