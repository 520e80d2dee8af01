//! The fault plan's events applied to the world: crashes that lose
//! unsynced writes, clock jumps, membership changes, keyring faults and
//! the links the network faults leave. (The plan itself is drawn in
//! `crate::faults`.)

use rand::Rng;

use super::durability::Durable;
use super::World;
use crate::faults::Fault;
use crate::net::Links;

impl World {
    pub(super) fn fault_start(&mut self, i: usize) {
        self.trace
            .note(self.now_ms, format!("fault #{i} starts: {}", self.plan[i]));
        self.active.insert(i);
        match self.plan[i].fault.clone() {
            Fault::Crash {
                member,
                keep_permille,
            } => self.crash(member, keep_permille),
            Fault::ClockJump { member, by_ms } => self.jump_clock(member, by_ms),
            Fault::Membership { member } => self.remove_member(i, member),
            Fault::Shrink { member } => {
                if let Some(member) = member.or_else(|| self.leader_slot()) {
                    self.remove_member(i, member)
                }
            }
            Fault::RotateKek { member } => self.rotate_kek(member),
            Fault::Autolock { member, victim } => self.autolock_on(member, victim),
            _ => self.relink(),
        }
    }

    pub(super) fn fault_end(&mut self, i: usize) {
        if !self.active.remove(&i) {
            return;
        }
        self.trace.note(self.now_ms, format!("fault #{i} ends"));
        match self.plan[i].fault.clone() {
            Fault::Crash { member, .. } => {
                if self.members[member].up.is_none() && !self.members[member].removed {
                    self.start_member(member);
                    self.trace.note(self.now_ms, format!("m{member} restarted"));
                }
            }
            Fault::ClockJump { member, by_ms } => self.jump_clock(member, -by_ms),
            Fault::Membership { member } => self.add_member_back(i, member),
            // Nothing comes back; the next membership change may begin.
            Fault::Shrink { .. } => {
                if self.changing.is_some_and(|(f, _)| f == i) {
                    self.changing = None;
                }
            }
            Fault::RotateKek { .. } => {}
            Fault::Autolock { member, .. } => self.autolock_off(member),
            _ => self.relink(),
        }
    }

    /// Member `member`'s process dies; its disk keeps what it synced and
    /// about `keep_permille` of what it had not.
    fn crash(&mut self, member: usize, keep_permille: u32) {
        let Some(up) = self.stop_member(member) else {
            return;
        };
        let m = &mut self.members[member];
        m.at_crash = Some(Durable::of(&up.stepper, m.last_conf_index));
        let unsynced = m.disk.unsynced_batches();
        let keep = unsynced * keep_permille as usize / 1000;
        let keep = keep.min(self.crash_rng.gen_range(0..=unsynced));
        let unsynced_bytes = m.disk.unsynced_file_bytes();
        // Each log file keeps some prefix of its unsynced bytes,
        // which may end mid-record (a torn write).
        let rng = &mut self.crash_rng;
        let mut kept_bytes = 0;
        m.disk.crash(keep, &mut |extra| {
            let k = (extra * keep_permille as usize / 1000).min(rng.gen_range(0..=extra));
            kept_bytes += k;
            k
        });
        m.outbox.take();
        self.trace.note(
            self.now_ms,
            format!(
                "m{member} crashed: kept {keep} of {unsynced} unsynced batches, \
                 {kept_bytes} of {unsynced_bytes} unsynced log bytes"
            ),
        );
    }

    fn jump_clock(&mut self, member: usize, by_ms: i64) {
        self.members[member].offset_ms += by_ms;
        if by_ms > 0 {
            self.clock_forward_ms += by_ms as u64;
        }
    }

    /// The links as the active network faults make them.
    fn relink(&mut self) {
        let mut links = Links::default();
        let n = self.members.len();
        for i in &self.active {
            match &self.plan[*i].fault {
                Fault::Partition { side } => {
                    for a in side {
                        for b in (0..n).filter(|b| !side.contains(b)) {
                            links.cut_both(*a, b);
                        }
                    }
                }
                Fault::OneWay { from } => {
                    for b in (0..n).filter(|b| b != from) {
                        links.cut.insert((*from, b));
                    }
                }
                Fault::Lossy {
                    drop_permille,
                    duplicate_permille,
                    jitter_ms,
                } => {
                    links.drop_permille = links.drop_permille.max(*drop_permille);
                    links.duplicate_permille = links.duplicate_permille.max(*duplicate_permille);
                    links.jitter_ms = links.jitter_ms.max(*jitter_ms);
                }
                Fault::Crash { .. }
                | Fault::ClockJump { .. }
                | Fault::Membership { .. }
                | Fault::Shrink { .. }
                | Fault::RotateKek { .. }
                | Fault::Autolock { .. } => {}
            }
        }
        self.links = links;
    }
}
