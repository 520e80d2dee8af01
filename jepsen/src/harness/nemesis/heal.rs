//! Heals: passes over the damage record, each undo that works clearing
//! its entry, repeated within bounds until nothing is left; what is left
//! is carried to the next heal.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use super::damage::Removed;
use super::{lock, Nemesis};
use crate::harness::client::pb::etcdserverpb as etcd;

/// Bounds of one heal: passes, and time, after which what is still undone
/// is left to the next heal (or reported, after the final one).
const HEAL_PASSES_MAX: u32 = 40;
const HEAL_BUDGET_MS: u64 = 30_000;
const HEAL_RETRY_MS: u64 = 500;

/// What a heal did, and what it could not undo.
pub struct Healed {
    /// For the history (`heal`/`final-heal` events).
    pub desc: serde_json::Value,
    /// Each fault still in place, with why; empty when all is undone.
    pub left: Vec<String>,
}

/// What the passes of one heal did, for its description.
#[derive(Default)]
struct HealLog {
    restarted: Vec<usize>,
    readded: Vec<usize>,
    /// What each keys pass found or did, in order.
    keys: Vec<String>,
}

impl Nemesis {
    /// Undoes every fault, restarts dead nodes and notes those that died
    /// without being killed; passes repeat, within bounds, until nothing
    /// is left undone. What is left stays recorded for the next heal.
    pub async fn heal(&mut self) -> Healed {
        if let Some(s) = self.strobe.take() {
            s.abort();
        }
        // Nodes that may be found dead without having crashed.
        let mut excused = self.damage.killed.clone();
        if self.damage.disk_full {
            excused.extend(lock(&self.nodes).disk_node());
        }
        let t0 = Instant::now();
        let mut log = HealLog::default();
        let mut passes = 0;
        let left = loop {
            passes += 1;
            let left = self.heal_pass(&mut excused, &mut log).await;
            let spent =
                passes >= HEAL_PASSES_MAX || t0.elapsed() >= Duration::from_millis(HEAL_BUDGET_MS);
            if left.is_empty() || spent || crate::harness::interrupted() {
                break left;
            }
            tokio::time::sleep(Duration::from_millis(HEAL_RETRY_MS)).await;
        };
        let one = |v: &[usize]| v.iter().map(|x| x + 1).collect::<Vec<_>>();
        Healed {
            desc: json!({
                "restarted": one(&log.restarted),
                "re-added": one(&log.readded),
                "keys": log.keys,
                "passes": passes,
                "left": left,
            }),
            left,
        }
    }

    /// One pass over the damage record: each undo that works clears its
    /// entry; the rest come back as reasons.
    async fn heal_pass(&mut self, excused: &mut BTreeSet<usize>, log: &mut HealLog) -> Vec<String> {
        let mut left = Vec::new();
        self.undo_in_place(&mut left);
        if let Some(mut r) = self.damage.removed.take() {
            match self.add_member_back(&mut r).await {
                Ok(()) => log.readded.push(r.node),
                Err(e) => {
                    left.push(format!("member: n{} not added back: {e:#}", r.node + 1));
                    self.damage.removed = Some(r);
                }
            }
        }
        let removed = self.damage.removed.as_ref().map(|r| r.node);
        self.restart_dead(removed, excused, log, &mut left);
        if self.damage.corrupt_alarm && self.damage.removed.is_none() {
            if self.disarm_corrupt().await {
                self.damage.corrupt_alarm = false;
            } else {
                left.push("corrupt: CORRUPT alarms not disarmed".into());
            }
        }
        if self.damage.autolocked {
            self.unlock(removed, log, &mut left).await;
        }
        left
    }

    /// What a heal undoes on the spot: partition rules, clock offsets, the
    /// full disk and paused processes.
    fn undo_in_place(&mut self, left: &mut Vec<String>) {
        if self.damage.partitioned {
            match self.net.heal() {
                Ok(()) => self.damage.partitioned = false,
                Err(e) => left.push(format!("partition: rules not flushed: {e:#}")),
            }
        }
        let clocks = std::mem::take(&mut self.damage.clocks);
        for i in clocks {
            if let Err(e) = lock(&self.nodes).set_clock_offset(i, 0) {
                left.push(format!("clock: n{} not reset: {e:#}", i + 1));
                self.damage.clocks.insert(i);
            }
        }
        if self.damage.disk_full {
            let nodes = lock(&self.nodes);
            if let Some(i) = nodes.disk_node() {
                nodes.free_disk(i);
            }
            drop(nodes);
            self.damage.disk_full = false;
        }
        let paused = std::mem::take(&mut self.damage.paused);
        for i in paused {
            lock(&self.nodes).resume(i);
        }
    }

    /// Starts every member that is not running (but the one still
    /// removed); one that died without being killed or `excused` is a
    /// crash.
    fn restart_dead(
        &mut self,
        removed: Option<usize>,
        excused: &mut BTreeSet<usize>,
        log: &mut HealLog,
        left: &mut Vec<String>,
    ) {
        for i in (0..self.n()).filter(|&i| Some(i) != removed) {
            let mut nodes = lock(&self.nodes);
            if nodes.alive(i) {
                // Killed, then restarted by another fault (autolock's).
                self.damage.killed.remove(&i);
                continue;
            }
            if !excused.contains(&i) {
                self.crashes.push(format!(
                    "n{} exited without being killed (at {:.1} s)",
                    i + 1,
                    self.rec.elapsed_ns() as f64 / 1e9
                ));
            }
            match nodes.start(i) {
                Ok(()) => {
                    // Running again: dying from here on is a crash.
                    excused.remove(&i);
                    self.damage.killed.remove(&i);
                    log.restarted.push(i);
                }
                Err(e) => {
                    excused.insert(i);
                    self.damage.killed.insert(i);
                    left.push(format!("n{} not restarted: {e:#}", i + 1));
                }
            }
        }
    }

    /// The keys nemesis's pass: every member (but the one still removed)
    /// unlocked and autolock off.
    async fn unlock(&mut self, removed: Option<usize>, log: &mut HealLog, left: &mut Vec<String>) {
        let members: Vec<usize> = (0..self.n()).filter(|&i| Some(i) != removed).collect();
        let pass = match self.keys.as_mut() {
            Some(keys) => keys.heal_pass(&self.clients, &members).await,
            None => None,
        };
        match pass {
            None => {
                self.damage.autolocked = false;
                log.keys.push("every member unlocked, autolock off".into());
            }
            Some(why) => {
                log.keys.push(why.clone());
                left.push(format!("keys: {why}"));
            }
        }
    }

    /// One attempt at adding a removed member back and starting it. An
    /// add whose answer was lost may have landed: a member list that
    /// already shows its peer URL leaves only the start.
    async fn add_member_back(&self, r: &mut Removed) -> Result<()> {
        let n = self.n();
        let others: Vec<usize> = (0..n).filter(|&x| x != r.node).collect();
        let url = match &r.peer_url {
            Some(u) => u.clone(),
            None => {
                let u = lock(&self.nodes).prepare_rejoin(r.node, &others);
                r.peer_url = Some(u.clone());
                u
            }
        };
        let mut last = anyhow!("no other member answered");
        for &via in &others {
            if self.clients.has_peer_url(via, &url).await == Some(true) {
                return lock(&self.nodes).start(r.node);
            }
            let added = self
                .clients
                .cluster(via)
                .member_add(etcd::MemberAddRequest {
                    peer_ur_ls: vec![url.clone()],
                    is_learner: false,
                })
                .await;
            match added {
                Ok(_) => return lock(&self.nodes).start(r.node),
                Err(e) => last = anyhow!("MemberAdd through n{}: {}", via + 1, e.message()),
            }
        }
        Err(last)
    }

    /// Disarms every CORRUPT alarm through any member; whether it worked.
    async fn disarm_corrupt(&self) -> bool {
        for via in 0..self.n() {
            let Some(alarms) = self.corrupt_alarms(via).await else {
                continue;
            };
            let mut m = etcd::maintenance_client::MaintenanceClient::new(self.clients.channel(via));
            let mut all = true;
            for a in alarms {
                let off = etcd::AlarmRequest {
                    action: etcd::alarm_request::AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                all &= matches!(
                    tokio::time::timeout(Duration::from_secs(5), m.alarm(off)).await,
                    Ok(Ok(_))
                );
            }
            return all;
        }
        false
    }
}
