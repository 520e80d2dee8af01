//! Crash faults on real processes: the leader killed with `kill -9` while a
//! client writes, and every member killed at once. Acknowledged writes must
//! survive both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{assert_none_lost, Cluster};
use parking_lot::Mutex;
use secretd_api::pb::etcdserverpb::{PutRequest, RangeRequest};

/// Puts `key` through members in turn until one acknowledges, or `within`
/// passes. Returns whether it was acknowledged.
async fn put_anywhere(c: &Cluster, start: usize, key: &str, val: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let n = c.members.len();
    let mut i = start;
    while Instant::now() < deadline {
        let mut kv = c.kv(i % n).await;
        let req = PutRequest {
            key: key.into(),
            value: val.into(),
            ..Default::default()
        };
        if tokio::time::timeout(crate::common::secs(3), kv.put(req))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return true;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// All keys under `prefix` as this member serves them.
async fn dump(
    c: &Cluster,
    i: usize,
    prefix: &str,
    serializable: bool,
) -> Option<BTreeMap<String, String>> {
    // Thousands of keys: past tonic's 4 MiB default for one response.
    let mut kv = c.kv(i).await.max_decoding_message_size(256 << 20);
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    let req = RangeRequest {
        key: prefix.into(),
        range_end: end,
        serializable,
        ..Default::default()
    };
    let resp = kv.range(req).await.ok()?.into_inner();
    Some(
        resp.kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).unwrap(),
                    String::from_utf8(kv.value).unwrap(),
                )
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_while_writing_then_rejoins() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let mut acked: Vec<(String, Instant)> = Vec::new();
    let started = Instant::now();
    let mut killed_at = None;
    let mut i = 0usize;
    while started.elapsed() < crate::common::secs(10) {
        if killed_at.is_none() && started.elapsed() > crate::common::secs(1) {
            c.kill9(leader);
            killed_at = Some(Instant::now());
        }
        let key = format!("f/{i:05}");
        // Start at a member other than the old leader half the time, at the
        // old leader the other half: both paths must recover.
        if put_anywhere(&c, i, &key, &i.to_string(), crate::common::secs(10)).await {
            acked.push((key, Instant::now()));
        }
        i += 1;
    }
    let killed_at = killed_at.expect("leader was killed");
    let first_after = acked
        .iter()
        .find(|(_, t)| *t > killed_at)
        .map(|(_, t)| *t - killed_at);
    let gap = first_after.expect("no write was acknowledged after the leader died");
    eprintln!(
        "writes resumed {gap:?} after kill -9 of the leader; {} acked",
        acked.len()
    );
    assert!(
        gap < crate::common::secs(10),
        "writes took {gap:?} to resume"
    );
    let new_leader = c.wait_leader(crate::common::secs(15)).await;
    assert_ne!(new_leader, leader);

    // The old leader comes back, catches up, and serves the latest value.
    c.spawn(leader);
    let want: BTreeMap<String, String> = acked
        .iter()
        .map(|(k, _)| (k.clone(), k[2..].trim_start_matches('0').to_string()))
        .collect();
    let deadline = Instant::now() + crate::common::secs(20);
    loop {
        if let Some(got) = dump(&c, leader, "f/", true).await {
            let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            if missing.is_empty() {
                for (k, v) in &want {
                    let v = if v.is_empty() { "0" } else { v };
                    assert_eq!(got[k], v, "{k}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restarted member still misses {} acked keys, e.g. {:?}",
                missing.len(),
                missing.first()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And it serves a linearizable read of a write made after it returned.
    assert!(put_anywhere(&c, new_leader, "f/latest", "after", crate::common::secs(10)).await);
    let got = dump(&c, leader, "f/latest", false)
        .await
        .expect("linearizable read on the rejoined member");
    assert_eq!(got.get("f/latest").map(String::as_str), Some("after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_survives_kill_9_of_all_members() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let c_ref = Arc::new(c);
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let (c, acked) = (c_ref.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for j in 0..25usize {
                let key = format!("d/{w:02}/{j:03}");
                let val = format!("{w}-{j}");
                let mut kv = c.kv((w + j) % 3).await;
                if let Ok(Ok(_)) = tokio::time::timeout(
                    crate::common::secs(5),
                    kv.put(PutRequest {
                        key: key.clone().into(),
                        value: val.clone().into(),
                        ..Default::default()
                    }),
                )
                .await
                {
                    acked.lock().insert(key, val);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = Arc::try_unwrap(c_ref).ok().expect("writers finished");
    let acked = acked.lock().clone();
    assert_eq!(
        acked.len(),
        400,
        "a healthy cluster acknowledges every write"
    );
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(crate::common::secs(20)).await;
    let got = dump(&c, leader, "d/", false)
        .await
        .expect("read after restart");
    assert_none_lost("the cluster", &acked, &got);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_members_keep_serving_with_two_down() {
    let mut c = Cluster::start(5);
    let leader = c.wait_leader(crate::common::secs(20)).await;
    assert!(put_anywhere(&c, 0, "five/before", "1", crate::common::secs(10)).await);
    // Kill the leader and one more: 3 of 5 remain, a quorum.
    let other = (leader + 1) % 5;
    c.kill9(leader);
    c.kill9(other);
    let new_leader = c.wait_leader(crate::common::secs(20)).await;
    assert!(![leader, other].contains(&new_leader));
    assert!(put_anywhere(&c, new_leader, "five/after", "2", crate::common::secs(15)).await);
    for i in c.running() {
        let got = dump(&c, i, "five/", false)
            .await
            .expect("linearizable read");
        assert_eq!(got.len(), 2, "member {i}: {got:?}");
    }
    // A third failure loses the quorum: writes must not be acknowledged.
    let third = c.running().into_iter().find(|i| *i != new_leader).unwrap();
    c.kill9(third);
    assert!(
        !put_anywhere(
            &c,
            new_leader,
            "five/no-quorum",
            "x",
            crate::common::secs(3)
        )
        .await
    );
    // Back to quorum: the cluster recovers and the refused write is absent
    // or present, but the read is consistent on every member.
    c.spawn(leader);
    c.spawn(other);
    let l = c.wait_leader(crate::common::secs(20)).await;
    assert!(put_anywhere(&c, l, "five/healed", "3", crate::common::secs(15)).await);
    let reference = dump(&c, l, "five/", false).await.unwrap();
    assert!(
        reference.contains_key("five/before")
            && reference.contains_key("five/after")
            && reference.contains_key("five/healed")
    );
    for i in c.running() {
        assert_eq!(
            dump(&c, i, "five/", false).await.unwrap(),
            reference,
            "member {i}"
        );
    }
}

/// The raft log under crashes: members killed with `kill -9` at random
/// points while four clients write, with small log segments and frequent
/// compaction (so kills land in segment rolls and segment drops too).
/// Every acknowledged write survives on every member, and each restarted
/// member catches up; the time that takes is printed (bounded only by a
/// generous timeout: this machine is shared).
#[tokio::test(flavor = "multi_thread")]
async fn kill9_at_random_points_under_load() {
    use rand::{Rng, SeedableRng};
    use secretd_api::pb::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut c = Cluster::prepare(
        3,
        &[
            "--snapshot-count",
            "300",
            "--experimental-snapshot-catchup-entries",
            "100",
        ],
    );
    c.envs
        .push(("SECRETD_LOG_SEGMENT_BYTES".into(), (64 << 10).to_string()));
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(crate::common::secs(20)).await;
    let c = Arc::new(tokio::sync::Mutex::new(c));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k9/{w}/{n}");
                let val = "v".repeat(200 + (n as usize % 300));
                let ok = {
                    let c = c.lock().await;
                    let i = (w + n as usize) % 3;
                    let mut kv = c.kv(i).await;
                    drop(c);
                    let req = PutRequest {
                        key: key.clone().into(),
                        value: val.clone().into(),
                        ..Default::default()
                    };
                    tokio::time::timeout(crate::common::secs(3), kv.put(req))
                        .await
                        .is_ok_and(|r| r.is_ok())
                };
                if ok {
                    acked.lock().insert(key, val);
                }
                n += 1;
            }
        }));
    }
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut recoveries = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1200))).await;
        let victim = rng.gen_range(0..3);
        c.lock().await.kill9(victim);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..800))).await;
        let started = Instant::now();
        c.lock().await.spawn(victim);
        recoveries.push(wait_caught_up(&c, victim, started).await);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let c = c.lock().await;
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 200,
        "too few writes acknowledged: {}",
        acked.len()
    );
    let leader = c.wait_leader(crate::common::secs(20)).await;
    let reference = dump(&c, leader, "k9/", false).await.expect("read");
    assert_none_lost("the cluster", &acked, &reference);
    for i in 0..3 {
        let deadline = Instant::now() + crate::common::secs(30);
        loop {
            let got = dump(&c, i, "k9/", true).await;
            if got.as_ref() == Some(&reference) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never caught up:\n{}",
                c.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    recoveries.sort();
    eprintln!(
        "kill -9 under load: {} writes acknowledged, all kept; restart to caught-up over {} kills: p50 {:.2} s, max {:.2} s",
        acked.len(),
        recoveries.len(),
        recoveries[recoveries.len() / 2].as_secs_f64(),
        recoveries.last().unwrap().as_secs_f64()
    );

    /// Waits until member `i` answers Status with an applied index at
    /// least the leader's at the time it was started; how long that took.
    async fn wait_caught_up(
        c: &tokio::sync::Mutex<Cluster>,
        i: usize,
        started: Instant,
    ) -> Duration {
        let target = {
            let c = c.lock().await;
            let mut best = 0;
            for j in 0..3 {
                if j == i {
                    continue;
                }
                let ch = c.channel(j).await;
                if let Ok(Ok(s)) = tokio::time::timeout(
                    crate::common::secs(2),
                    MaintenanceClient::new(ch).status(StatusRequest {}),
                )
                .await
                {
                    best = best.max(s.into_inner().raft_applied_index);
                }
            }
            best
        };
        let deadline = started + crate::common::secs(60);
        loop {
            let ch = c.lock().await.channel(i).await;
            if let Ok(Ok(s)) = tokio::time::timeout(
                crate::common::secs(2),
                MaintenanceClient::new(ch).status(StatusRequest {}),
            )
            .await
            {
                if s.into_inner().raft_applied_index >= target {
                    return started.elapsed();
                }
            }
            assert!(
                Instant::now() < deadline,
                "member {i} did not catch up within 60 s:\n{}",
                c.lock().await.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
