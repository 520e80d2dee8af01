//! The event loop: events taken from the queue in virtual-time order,
//! each member's loop thread given the CPU, and the raft invariants checked
//! after every step. A member's step runs the production loop's own
//! `Stepper` (the same code as the real thread), not a model of it.

use std::sync::Arc;

use rand::Rng;
use secretd_store::clock::Clock;
use secretd_store::db::Db;
use secretd_store::node::{AppliedEntry, Node, RaftView, Stepper};
use secretd_store::StoreError;

use super::{clock_ms, Ev, Up, World, SETTLE_MS};
use crate::net::SimTransport;

/// Rounds a member's loop runs per scheduling, at most.
const ROUNDS_PER_RUN_MAX: usize = 32;
/// Events per run, at most (a livelock is a finding, not a hang).
const EVENTS_MAX: u64 = 2_000_000;

impl World {
    pub(super) fn at(&mut self, time_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((time_ms, self.seq), ev);
    }

    /// Runs to the end; false if a violation stopped it early.
    pub fn run(&mut self) {
        let end_ms = self.opts.duration_ms + SETTLE_MS + 3_000;
        while let Some(((time_ms, _), ev)) = self.queue.pop_first() {
            if time_ms > end_ms || self.events >= EVENTS_MAX {
                break;
            }
            self.now_ms = time_ms;
            self.events += 1;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(ev)));
            if step.is_err() {
                let msg = crate::take_panic().unwrap_or_else(|| "(no message)".into());
                self.invariants
                    .violations
                    .push(format!("{} ms: panic: {msg}", self.now_ms));
            }
            if !self.invariants.violations.is_empty() {
                self.trace
                    .note(self.now_ms, "stopped at the first violation".into());
                return;
            }
            if self.events.is_multiple_of(256) {
                self.check_log_matching();
            }
        }
        self.finish();
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick(slot) => {
                self.trace.event(self.now_ms, 1, slot as u64, 0);
                let m = &mut self.members[slot];
                m.time.set_ms(clock_ms(self.now_ms, m.offset_ms));
                if let Some(up) = &mut m.up {
                    up.stepper.tick();
                    self.schedule_run(slot);
                }
                let tick_ms = self.members[slot].cfg.tick_ms;
                self.at(self.now_ms + tick_ms, Ev::Tick(slot));
            }
            Ev::Run(slot) => {
                self.trace.event(self.now_ms, 2, slot as u64, 0);
                self.members[slot].run_scheduled = false;
                self.run_member(slot);
            }
            Ev::Deliver { from, to, msg } => self.deliver(from, to, *msg),
            Ev::Client(c) => self.client_turn(c),
            Ev::Lease => self.lease_turn(),
            Ev::Secret => self.secret_turn(),
            Ev::Probe => self.probe_turn(),
            Ev::KeySync => self.key_sync(),
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::RetryRemoval(i, slot) => {
                if self.active.contains(&i) {
                    self.remove_member(i, slot)
                }
            }
            Ev::Settle => self.settle(),
            Ev::CheckLeader => self.check_leader(),
            Ev::FinalReads => self.final_reads(),
        }
    }

    pub(super) fn schedule_run(&mut self, slot: usize) {
        if !self.members[slot].run_scheduled {
            self.members[slot].run_scheduled = true;
            let delay = self.sched_rng.gen_range(0..=2);
            self.at(self.now_ms + delay, Ev::Run(slot));
        }
    }

    pub(super) fn start_member(&mut self, slot: usize) {
        self.disrupted_ms = self.now_ms;
        let m = &mut self.members[slot];
        m.time.set_ms(clock_ms(self.now_ms, m.offset_ms));
        let db = Db::open_mem(m.disk.clone());
        let started = Node::open_on(m.cfg.clone(), db).and_then(|opened| {
            opened.start_stepped(
                Arc::new(SimTransport(m.outbox.clone())),
                Clock::simulated(m.time.clone()),
                // Unique across incarnations, as the wall clock makes them.
                ((self.now_ms + 1) << 24) | (slot as u64) << 16,
            )
        });
        match started {
            Ok((node, stepper)) => {
                if let Some(d) = m.at_crash.take() {
                    self.check_restart(slot, &d, &stepper);
                }
                let m = &mut self.members[slot];
                let objects = match self.secrets.objects(&node, &m.cfg.data_dir) {
                    Ok(o) => o,
                    Err(e) => {
                        self.invariants.violations.push(format!(
                            "{} ms: m{slot}'s keyring cannot load: {e}",
                            self.now_ms
                        ));
                        return;
                    }
                };
                m.up = Some(Up {
                    node,
                    objects,
                    stepper,
                    lease_seen: None,
                    noted_role: (0, false),
                    watcher: None,
                });
                self.watch_from_start(slot);
                self.schedule_run(slot);
                self.unlock_if_locked(slot);
            }
            Err(e) => self
                .invariants
                .violations
                .push(format!("{} ms: m{slot} cannot start: {e}", self.now_ms)),
        }
    }

    /// Member `slot`'s loop thread has the CPU: it runs as many rounds as
    /// it has work for, then what it did is checked, noted and sent.
    fn run_member(&mut self, slot: usize) {
        let now_ms = self.now_ms;
        let m = &mut self.members[slot];
        m.time.set_ms(clock_ms(now_ms, m.offset_ms));
        let Some(up) = &mut m.up else { return };
        let before = up.stepper.view();
        let voters_before = up.stepper.voters();
        let failed = run_rounds(&mut up.stepper);
        let view = up.stepper.view();
        let applied = up.stepper.take_applied();
        let voters_after = up.stepper.voters();
        self.invariants
            .after_step(now_ms, &view, &applied, before.applied, &up.stepper);
        self.note_configuration(slot, &applied, voters_before, &voters_after);
        self.note_role(slot, &view);
        self.trace
            .event(now_ms, 3, view.commit, view.applied ^ (view.term << 40));
        // Before a removed member stops: its own log counts.
        let prev_voters = self.members[slot].prev_voters.clone();
        self.check_acknowledged(slot, &applied, &voters_after, &prev_voters);
        if let Some(e) = failed {
            self.member_stopped(slot, e);
        }
        self.check_lease(slot);
        self.drain_watcher(slot);
        self.route(slot);
        self.poll_clients();
        self.poll_tasks();
    }

    /// The configuration changes member `slot` just applied: the newest
    /// one any member applied, and the voters it had before.
    fn note_configuration(
        &mut self,
        slot: usize,
        applied: &[AppliedEntry],
        voters_before: Vec<u64>,
        voters_after: &[u64],
    ) {
        let m = &mut self.members[slot];
        if let Some(e) = applied.iter().rev().find(|e| e.conf_change) {
            m.last_conf_index = e.index;
            if e.index > self.latest_conf.0 {
                self.latest_conf = (e.index, voters_after.to_vec());
            }
        }
        if voters_after != voters_before {
            m.prev_voters = voters_before;
            self.disrupted_ms = self.now_ms;
        }
    }

    /// Member `slot`'s term and role, in the trace when they changed.
    fn note_role(&mut self, slot: usize, view: &RaftView) {
        let Some(up) = &mut self.members[slot].up else {
            return;
        };
        // Against what was last noted: a tick can change the term too.
        if up.noted_role != (view.term, view.is_leader) {
            up.noted_role = (view.term, view.is_leader);
            self.trace.note(
                self.now_ms,
                format!(
                    "m{slot} term {} {}",
                    view.term,
                    if view.is_leader {
                        "leader"
                    } else {
                        "follower/candidate"
                    }
                ),
            );
        }
    }

    /// Member `slot`'s loop ended with error `e`: its own removal, applied,
    /// or a violation.
    fn member_stopped(&mut self, slot: usize, e: String) {
        let now_ms = self.now_ms;
        if e == StoreError::Removed.to_string() {
            self.trace.note(
                now_ms,
                format!("m{slot} applied its own removal and stopped"),
            );
            self.members[slot].removed = true;
            self.route(slot);
            self.stop_removed(slot);
        } else {
            self.invariants
                .violations
                .push(format!("{now_ms} ms: m{slot} stopped: {e}"));
        }
    }

    pub(super) fn slot_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// The up member that leads in the highest term, if any.
    pub(super) fn leader_slot(&self) -> Option<usize> {
        self.up_members()
            .into_iter()
            .filter_map(|s| {
                let v = self.members[s].up.as_ref()?.stepper.view();
                v.is_leader.then_some((v.term, s))
            })
            .max()
            .map(|(_, s)| s)
    }

    pub(super) fn up_members(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|s| self.members[*s].up.is_some())
            .collect()
    }

    pub(super) fn check_log_matching(&mut self) {
        let ups = self.up_members();
        for (i, a) in ups.iter().enumerate() {
            for b in &ups[i + 1..] {
                let (sa, sb) = (&self.members[*a], &self.members[*b]);
                if let (Some(ua), Some(ub)) = (&sa.up, &sb.up) {
                    self.invariants
                        .check_log_matching(self.now_ms, &ua.stepper, &ub.stepper);
                }
            }
        }
    }
}

/// Runs a member's loop for as many rounds as it has work (at most
/// `ROUNDS_PER_RUN_MAX`); the error it stopped with, if it did.
fn run_rounds(stepper: &mut Stepper) -> Option<String> {
    // As the real loop: a round after every batch of inputs, with or
    // without a `Ready` (a round also sends waiting ReadIndex requests:
    // a single-voter leader has no other reason to round).
    for _ in 0..ROUNDS_PER_RUN_MAX {
        let handled = stepper.handle_inputs();
        let had_ready = stepper.has_ready();
        if let Err(e) = stepper.ready() {
            return Some(e);
        }
        if !had_ready && handled == 0 {
            break;
        }
    }
    None
}
