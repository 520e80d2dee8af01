//! The register workload's clients: each picks a member, submits a read,
//! write or compare-and-set through the member's request API and records
//! what came back in the history the linearizability checker reads.

use rand::Rng;
use secretd_jepsen::check::history::Outcome;
use secretd_jepsen::check::model::RegisterOp;

use super::{Ev, World};
use crate::clients::{self, Pending, Poll, Waiting};

impl World {
    pub(super) fn pick_member(&mut self) -> Option<usize> {
        let ups = self.up_members();
        (!ups.is_empty()).then(|| ups[self.client_rng.gen_range(0..ups.len())])
    }

    pub(super) fn client_turn(&mut self, c: usize) {
        if let Some(p) = self.clients[c].pending.take() {
            if self.now_ms < p.deadline_ms {
                self.clients[c].pending = Some(p); // a stale turn
                return;
            }
            self.trace.note(
                self.now_ms,
                format!("client {c}: {:?} on r{} timed out", p.input, p.key),
            );
            let outcome = matches!(p.waiting, Waiting::Write(_)).then_some(Outcome::Unknown);
            self.history.record(c as u64, p, outcome);
        }
        if self.settling {
            return;
        }
        self.issue(c, None);
    }

    /// Starts client `c`'s next operation (`read_of`: a final read of
    /// that key).
    pub(super) fn issue(&mut self, c: usize, read_of: Option<(usize, usize)>) {
        let (key, input, member) = match read_of {
            Some((key, member)) => (key, RegisterOp::Read, Some(member)),
            None => {
                let key = self.client_rng.gen_range(0..clients::KEYS);
                let input = match self.client_rng.gen_range(0..10) {
                    0..=3 => RegisterOp::Read,
                    4..=7 => {
                        self.clients[c].next_value += 1;
                        RegisterOp::Write(self.clients[c].next_value)
                    }
                    _ => {
                        self.clients[c].next_value += 1;
                        let from = self.client_rng.gen_range(0..5);
                        RegisterOp::Cas(from, self.clients[c].next_value)
                    }
                };
                (key, input, self.pick_member())
            }
        };
        let Some(member) = member else {
            self.at(self.now_ms + 50, Ev::Client(c));
            return;
        };
        let Some(up) = &self.members[member].up else {
            return;
        };
        let submitted = match clients::request(key, &input) {
            Some(req) => up.node.submit(req, None).map(Waiting::Write),
            None => up.node.submit_read_index().map(Waiting::Read),
        };
        match submitted {
            Ok(waiting) => {
                let invoke = self.history.tick();
                let deadline_ms = self.now_ms + clients::OP_TIMEOUT_MS;
                self.clients[c].pending = Some(Pending {
                    key,
                    input,
                    invoke,
                    member,
                    deadline_ms,
                    waiting,
                });
                self.at(deadline_ms, Ev::Client(c));
                self.schedule_run(member);
            }
            Err(_) => self.at(self.now_ms + 10, Ev::Client(c)),
        }
    }

    pub(super) fn poll_clients(&mut self) {
        for c in 0..self.clients.len() {
            let Some(mut p) = self.clients[c].pending.take() else {
                continue;
            };
            let node = self.members[p.member].up.as_ref().map(|u| u.node.clone());
            let outcome = match clients::poll(&mut p, node.as_deref()) {
                Poll::Waiting => {
                    self.clients[c].pending = Some(p);
                    continue;
                }
                Poll::Done(out) => Some(Outcome::Ok(out)),
                Poll::Failed => None,
                Poll::Unknown => Some(Outcome::Unknown),
            };
            self.trace.event(self.now_ms, 5, c as u64, p.invoke);
            if self.trace.recording() {
                let applied = node
                    .as_ref()
                    .map(|_| self.members[p.member].up.as_ref().map(|u| u.stepper.view()));
                self.trace.detail(
                    self.now_ms,
                    format!(
                        "client {c} via m{}: {:?} on r{} (invoked #{}) -> {:?}; member {:?}",
                        p.member, p.input, p.key, p.invoke, outcome, applied
                    ),
                );
            }
            self.history.record(c as u64, p, outcome);
            if !self.settling {
                let think = self.client_rng.gen_range(1..30);
                self.at(self.now_ms + think, Ev::Client(c));
            }
        }
    }
}
