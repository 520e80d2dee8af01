//! Starting each fault: partitions, kills, pauses, clock steps and
//! strobes, membership removals, a full disk, the keys nemesis and a
//! corrupted record. Each records in the damage record what the heal must
//! undo, before the attempt where a failed attempt may still leave damage.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::json;

use super::damage::Removed;
use super::{lock, Fault, KeysFault, Nemesis, Shape};
use crate::harness::client::pb::etcdserverpb as etcd;

/// How long damage may go unfound after the damaged node restarts.
const CORRUPT_FOUND_WITHIN_MS: u64 = 30_000;

impl Nemesis {
    pub async fn start(&mut self, f: &Fault) -> Result<serde_json::Value> {
        let n = self.n();
        let desc = match f {
            Fault::Partition(shape) => {
                // Recorded before the rules go in: a rule added before an
                // error must be flushed too.
                self.damage.partitioned = true;
                let (groups, target) = self.partition(shape, n).await?;
                let name = match shape {
                    Shape::Halves(_) => "halves",
                    Shape::IsolateLeader { .. } => "isolate-leader",
                    Shape::Bridge(_) => "bridge",
                    Shape::Ring(_) => "ring",
                    Shape::OneWay(_) => "one-way (from the node)",
                };
                json!({"fault": "partition", "shape": name, "groups": groups, "target": target})
            }
            Fault::Kill(t) => {
                let (i, target) = self.resolve(t).await;
                lock(&self.nodes).kill(i);
                self.damage.killed.insert(i);
                json!({"fault": "kill", "node": i + 1, "target": target})
            }
            Fault::Pause(t) => {
                let (i, target) = self.resolve(t).await;
                lock(&self.nodes).pause(i);
                self.damage.paused.insert(i);
                json!({"fault": "pause", "node": i + 1, "target": target})
            }
            Fault::ClockStep(i, off) => {
                self.damage.clocks.insert(*i);
                lock(&self.nodes).set_clock_offset(*i, *off)?;
                json!({"fault": "clock-step", "node": i + 1, "offset_s": off})
            }
            Fault::ClockStrobe(i, off) => {
                self.strobe = Some(self.spawn_strobe(*i, *off));
                self.damage.clocks.insert(*i);
                json!({"fault": "clock-strobe", "node": i + 1, "offset_s": off})
            }
            Fault::Member(i) => {
                let removed = self.remove_member(*i).await?;
                if removed {
                    self.damage.removed = Some(Removed {
                        node: *i,
                        peer_url: None,
                    });
                }
                json!({"fault": "member-remove", "node": i + 1, "removed": removed})
            }
            Fault::Disk => {
                let i = lock(&self.nodes).disk_node().unwrap_or(0);
                self.damage.disk_full = true;
                lock(&self.nodes).fill_disk(i)?;
                json!({"fault": "disk-full", "node": i + 1})
            }
            Fault::Keys(k) => self.keys_fault(k).await?,
            Fault::Corrupt(i) => self.corrupt(*i).await?,
        };
        Ok(desc)
    }

    /// Flips node `i`'s wall clock between 0 and `off` seconds every
    /// 250 ms, until the heal aborts it.
    fn spawn_strobe(&self, i: usize, off: i64) -> tokio::task::JoinHandle<()> {
        let nodes = self.nodes.clone();
        tokio::spawn(async move {
            let mut on = false;
            loop {
                on = !on;
                let _ = lock(&nodes).set_clock_offset(i, if on { off } else { 0 });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    }

    /// Damages node `i`'s keyspace while it is stopped, restarts it, and
    /// waits for the damage to be found: the node refusing to start
    /// (initial check) or a CORRUPT alarm naming it (the leader's periodic
    /// check). Found or not, the node is then removed with its data and
    /// re-added by the heal, as an operator repairs it. Not found in time
    /// is a verdict of its own.
    async fn corrupt(&mut self, i: usize) -> Result<serde_json::Value> {
        let damaged = {
            let mut nodes = lock(&self.nodes);
            nodes.kill(i);
            let d = nodes.damage_record(i);
            nodes.start(i)?;
            d?
        };
        self.damage.corrupt_alarm = true;
        let name = format!("n{}", i + 1);
        let t0 = Instant::now();
        let found = loop {
            if !lock(&self.nodes).alive(i) {
                break Some("refused to start");
            }
            if self.alarm_names(i, &name).await {
                break Some("CORRUPT alarm");
            }
            if t0.elapsed() >= Duration::from_millis(CORRUPT_FOUND_WITHIN_MS) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if found.is_none() {
            self.crashes.push(format!(
                "{name}: a damaged record ({damaged}) was not found within {} s",
                CORRUPT_FOUND_WITHIN_MS / 1000
            ));
        }
        let removed = self.remove_member(i).await?;
        if removed {
            self.damage.removed = Some(Removed {
                node: i,
                peer_url: None,
            });
        } else {
            lock(&self.nodes).kill(i);
            self.damage.killed.insert(i);
        }
        Ok(
            json!({"fault": "corrupt-record", "node": i + 1, "damaged": damaged,
            "found": found, "found_after_ms": t0.elapsed().as_millis() as u64, "removed": removed}),
        )
    }

    /// The CORRUPT alarms member `via` lists, if it answers.
    pub(super) async fn corrupt_alarms(&self, via: usize) -> Option<Vec<etcd::AlarmMember>> {
        let get = etcd::AlarmRequest {
            action: etcd::alarm_request::AlarmAction::Get as i32,
            member_id: 0,
            alarm: etcd::AlarmType::Corrupt as i32,
        };
        let mut m = etcd::maintenance_client::MaintenanceClient::new(self.clients.channel(via));
        match tokio::time::timeout(Duration::from_secs(2), m.alarm(get)).await {
            Ok(Ok(r)) => Some(r.into_inner().alarms),
            _ => None,
        }
    }

    /// Whether a member other than `i` lists a CORRUPT alarm for `name`.
    async fn alarm_names(&self, i: usize, name: &str) -> bool {
        for via in (0..self.n()).filter(|&v| v != i) {
            let Some(id) = self.clients.member_id(via, name).await else {
                continue;
            };
            if let Some(alarms) = self.corrupt_alarms(via).await {
                return alarms.iter().any(|a| a.member_id == id);
            }
        }
        false
    }

    async fn keys_fault(&mut self, k: &KeysFault) -> Result<serde_json::Value> {
        let urls = self.clients.urls.clone();
        let keys = self
            .keys
            .as_mut()
            .ok_or_else(|| anyhow!("the keys nemesis is not enabled"))?;
        Ok(match k {
            KeysFault::Rotate(i) => {
                let retired = keys.rotate(&urls[*i]).await?;
                json!({"fault": "keys-rotate", "node": i + 1, "destroyed": retired})
            }
            KeysFault::Autolock(i) => {
                // From the attempt on: a command that failed or timed out
                // may still have switched autolock on, and the heal finds
                // out from the members either way.
                self.damage.autolocked = true;
                keys.autolock_on(&urls).await?;
                let mut nodes = lock(&self.nodes);
                nodes.kill(*i);
                nodes.start(*i)?;
                // Locked when it comes back, unless it had not followed the
                // lock yet: the heal asks the members which they are.
                json!({"fault": "keys-autolock", "node": i + 1, "restarted": true})
            }
        })
    }

    /// Puts the shape's rules in; the groups (1-based) and, for a shape
    /// aimed at the leader, how its node was chosen.
    async fn partition(
        &self,
        shape: &Shape,
        n: usize,
    ) -> Result<(Vec<Vec<usize>>, Option<&'static str>)> {
        let one = |v: &[usize]| v.iter().map(|x| x + 1).collect::<Vec<_>>();
        Ok(match shape {
            Shape::Halves(order) => {
                let (a, b) = order.split_at(n / 2);
                self.net.split(a, b)?;
                (vec![one(a), one(b)], None)
            }
            Shape::IsolateLeader { fallback } => {
                let (l, target) = self.leader_or(*fallback).await;
                let rest: Vec<usize> = (0..n).filter(|&x| x != l).collect();
                self.net.split(&[l], &rest)?;
                (vec![vec![l + 1], one(&rest)], Some(target))
            }
            Shape::Bridge(order) => {
                let bridge = order[0];
                let rest = &order[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.net.split(a, b)?;
                (vec![one(a), vec![bridge + 1], one(b)], None)
            }
            Shape::Ring(order) => {
                for (pos, &x) in order.iter().enumerate() {
                    for (qos, &y) in order.iter().enumerate() {
                        let d = pos.abs_diff(qos);
                        let neighbour = d <= 1 || d == n - 1;
                        if !neighbour {
                            self.net.drop_link(y, x)?;
                        }
                    }
                }
                (vec![one(order)], None)
            }
            Shape::OneWay(t) => {
                let (from, target) = self.resolve(t).await;
                for to in (0..n).filter(|&x| x != from) {
                    self.net.drop_link(from, to)?;
                }
                (vec![vec![from + 1]], Some(target))
            }
        })
    }

    async fn remove_member(&self, i: usize) -> Result<bool> {
        let name = format!("n{}", i + 1);
        let n = self.n();
        for _ in 0..10 {
            for via in (0..n).filter(|&v| v != i) {
                let Some(id) = self.clients.member_id(via, &name).await else {
                    continue;
                };
                let r = self
                    .clients
                    .cluster(via)
                    .member_remove(etcd::MemberRemoveRequest { id })
                    .await;
                if r.is_ok() {
                    lock(&self.nodes).forget(i)?;
                    return Ok(true);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(false)
    }
}
