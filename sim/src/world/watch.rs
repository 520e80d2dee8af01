//! Watches in the simulation: every member incarnation watches the
//! registers' range from revision 1 (so it starts behind and catches up
//! from storage, then follows live publication); the world runs the hub's
//! catch-up round and drains the stream after each step. At the end the
//! logs go through `jepsen`'s watch checker (ordered, unique, atomic,
//! reliable, progress, agreement) against the committed events read back
//! from a member.

use secretd_jepsen::check::watch::{self, Event, Kind, Response, WatcherLog};
use secretd_store::pb::mvccpb::event::EventType;
use secretd_store::watch::{WatchMsg, WatchSpec};

use super::*;

/// The range watched: every register key (`r0`, `r1`, ...).
const WATCH_KEY: &str = "r";
const WATCH_RANGE_END: &str = "s";
/// Messages a watcher's stream holds before the hub falls back to
/// catch-up for it.
const WATCH_QUEUE_MAX: usize = 1024;
/// Events read back at the end, at most.
const COMMITTED_EVENTS_MAX: usize = 1_000_000;

impl World {
    pub(super) fn watch_from_start(&mut self, slot: usize) {
        let Some(up) = &mut self.members[slot].up else {
            return;
        };
        let (tx, rx) = secretd_store::watch::inbox(WATCH_QUEUE_MAX);
        let spec = WatchSpec {
            key: WATCH_KEY.into(),
            range_end: WATCH_RANGE_END.into(),
            start_revision: 1,
            ..Default::default()
        };
        let index = self.watch_logs.len();
        match up.node.hub().watch(spec, index as i64, tx) {
            Ok(_) => {
                up.watcher = Some((index, rx));
                self.watch_logs.push(WatcherLog {
                    name: format!("m{slot}#{}", index),
                    key: WATCH_KEY.into(),
                    range_end: WATCH_RANGE_END.into(),
                    start_revision: 1,
                    responses: Vec::new(),
                });
            }
            Err(e) => self.invariants.violations.push(format!(
                "{} ms: m{slot} refused a watch from revision 1: {e}",
                self.now_ms
            )),
        }
    }

    /// Catches up and takes what `slot`'s watcher was sent.
    pub(super) fn drain_watcher(&mut self, slot: usize) {
        let Some(up) = &mut self.members[slot].up else {
            return;
        };
        up.node.hub().catch_up_round();
        let Some((index, rx)) = &mut up.watcher else {
            return;
        };
        while let Some(batch) = rx.try_recv() {
            for msg in &batch {
                self.watch_logs[*index].responses.push(response(msg));
            }
        }
    }

    /// The watch guarantees, against the events a member that applied
    /// the most holds.
    pub(super) fn check_watches(&mut self) {
        let best = self.up_members().into_iter().max_by_key(|s| {
            self.members[*s]
                .up
                .as_ref()
                .map(|u| u.stepper.view().applied)
        });
        let Some(up) = best.and_then(|s| self.members[s].up.as_ref()) else {
            return;
        };
        let committed = match up.node.mvcc().history(
            WATCH_KEY.as_bytes(),
            WATCH_RANGE_END.as_bytes(),
            1,
            COMMITTED_EVENTS_MAX,
            false,
        ) {
            Ok((revs, _)) => revs
                .iter()
                .flat_map(|r| r.events.iter().map(event))
                .collect::<Vec<_>>(),
            Err(e) => {
                self.invariants
                    .violations
                    .push(format!("end: cannot read the committed events back: {e}"));
                return;
            }
        };
        let received: usize = self
            .watch_logs
            .iter()
            .flat_map(|w| &w.responses)
            .map(|r| r.events.len())
            .sum();
        self.trace.note(
            self.now_ms,
            format!(
                "watches: {} watchers received {received} events; {} committed",
                self.watch_logs.len(),
                committed.len()
            ),
        );
        for v in watch::check(&self.watch_logs, &committed)
            .into_iter()
            .take(4)
        {
            self.invariants.violations.push(format!(
                "end: watch {}: {}: {}",
                v.watcher, v.guarantee, v.detail
            ));
        }
    }
}

fn response(msg: &WatchMsg) -> Response {
    Response {
        revision: msg.revision,
        // The hub made these bytes a moment ago; one that does not decode
        // is a hub bug, which the check then reports as a lost event.
        events: msg
            .events
            .iter()
            .filter_map(|w| w.decode())
            .map(|e| event(&e))
            .collect(),
        progress: msg.events.is_empty(),
    }
}

fn event(e: &secretd_store::pb::mvccpb::Event) -> Event {
    let kv = e.kv.clone().unwrap_or_default();
    let put = e.r#type == EventType::Put as i32;
    Event {
        revision: kv.mod_revision,
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        kind: if put { Kind::Put } else { Kind::Delete },
        value: put.then(|| String::from_utf8_lossy(&kv.value).into_owned()),
    }
}
