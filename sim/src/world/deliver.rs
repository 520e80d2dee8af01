//! Messages between members: each one sent is given its fates by the
//! links (lost, delayed, duplicated) and delivered as the real transport
//! would, snapshots with their files.

use std::path::{Path, PathBuf};

use raft::eraftpb::{Message, MessageType};
use secretd_store::snapshot;

use super::{Ev, World};

impl World {
    /// Takes what `slot` sent and schedules each message's fate.
    pub(super) fn route(&mut self, from: usize) {
        for msg in self.members[from].outbox.take() {
            let Some(to) = self.slot_of(msg.to) else {
                continue;
            };
            let may_duplicate = msg.get_msg_type() != MessageType::MsgPropose;
            let fates = self
                .links
                .fates(&mut self.net_rng, self.now_ms, may_duplicate);
            if fates.is_empty() && msg.get_msg_type() == MessageType::MsgSnapshot {
                if let Some(up) = &self.members[from].up {
                    up.node.report_snapshot(msg.to, false);
                }
            }
            for at_ms in fates {
                self.at(
                    at_ms,
                    Ev::Deliver {
                        from,
                        to,
                        msg: Box::new(msg.clone()),
                    },
                );
            }
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, msg: Message) {
        self.trace.event(
            self.now_ms,
            4,
            ((from as u64) << 8) | to as u64,
            (msg.get_msg_type() as u64) << 48 ^ msg.term << 32 ^ msg.index,
        );
        // The real transport refuses a message for another member id (an
        // earlier incarnation of this slot).
        let passes = self.links.passes(from, to) && msg.to == self.members[to].id;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let Some(up) = &self.members[to].up else {
            return;
        };
        if is_snapshot {
            let index = msg.get_snapshot().get_metadata().index;
            let copied = passes
                && copy_snapshot(
                    &self.members[from].cfg.data_dir,
                    &self.members[to].cfg.data_dir,
                    index,
                );
            if copied {
                up.node.step(msg);
            }
            if let Some(sender) = &self.members[from].up {
                sender.node.report_snapshot(self.members[to].id, copied);
                self.schedule_run(from);
            }
        } else if passes {
            up.node.step(msg);
        } else {
            return;
        }
        self.schedule_run(to);
    }
}

fn copy_snapshot(from_dir: &Path, to_dir: &Path, index: u64) -> bool {
    let src: PathBuf = snapshot::file_path(&from_dir.join("snap"), index);
    let dir = to_dir.join("snap");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(&src, snapshot::file_path(&dir, index)))
        .is_ok()
}
