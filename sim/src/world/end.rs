//! The run's end: the faults healed, the final reads through every
//! member, and the checks that need the whole run (same keyspace where
//! members applied as far, log matching, the watchers' logs).

use std::collections::BTreeMap;

use secretd_jepsen::check::history::Outcome;
use secretd_store::node::Node;

use super::{Client, World};
use crate::clients::{self, Waiting};
use crate::net::Links;

impl World {
    /// The faults end, every member runs, clients stop: the cluster must
    /// converge.
    pub(super) fn settle(&mut self) {
        self.trace
            .note(self.now_ms, "settling: every fault healed".into());
        self.settling = true;
        for i in self.active.clone() {
            self.fault_end(i);
        }
        self.links = Links::default();
    }

    /// A final read of every key through every member: acknowledged
    /// writes must all be there.
    pub(super) fn final_reads(&mut self) {
        for s in self.up_members() {
            let up = self.members[s].up.as_ref().expect("up");
            let (v, voters) = (up.stepper.view(), up.stepper.voters());
            let line = format!(
                "m{s} ({:x}): term {} leader {:x} commit {} (of term {:?}) applied {}, last {}; voters {voters:x?}; reads {:?}",
                v.id,
                v.term,
                v.leader_id,
                v.commit,
                up.stepper.log_term(v.commit),
                v.applied,
                v.last_index,
                up.stepper.reads_state()
            );
            self.trace.note(self.now_ms, line);
        }
        let n = self.members.len();
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
                self.history.record(c as u64, p, outcome);
            }
        }
        self.final_secret_checks();
        // Extra client processes, one per (key, member).
        for key in 0..clients::KEYS {
            for member in 0..n {
                let c = self.clients.len();
                self.clients.push(Client {
                    pending: None,
                    next_value: 0,
                });
                self.issue(c, Some((key, member)));
            }
        }
    }

    /// After the last event: what is still open is unknown, and the
    /// members that applied as far must hold the same keyspace.
    pub(super) fn finish(&mut self) {
        for c in 0..self.clients.len() {
            if let Some(p) = self.clients[c].pending.take() {
                let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
                self.history.record(c as u64, p, outcome);
            }
        }
        let mut by_applied: BTreeMap<u64, Vec<(usize, Keyspace)>> = BTreeMap::new();
        for (slot, m) in self.members.iter().enumerate() {
            let Some(up) = &m.up else { continue };
            by_applied
                .entry(up.stepper.view().applied)
                .or_default()
                .push((slot, keyspace(&up.node)));
        }
        for (applied, states) in by_applied {
            if let Some((first, rest)) = states.split_first() {
                for (slot, kv) in rest {
                    if *kv != first.1 {
                        self.invariants.violations.push(format!(
                            "end: m{} and m{slot} applied to {applied} but hold different keyspaces",
                            first.0
                        ));
                    }
                }
            }
        }
        self.check_log_matching();
        self.check_watches();
    }
}

/// Every key and value a member holds, in order.
type Keyspace = Vec<(Vec<u8>, Vec<u8>)>;

fn keyspace(node: &Node) -> Keyspace {
    let req = secretd_store::pb::etcdserverpb::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    match node.mvcc().range(&req) {
        Ok((resp, _)) => resp.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        Err(_) => Vec::new(),
    }
}
