//! Membership through Debian's etcdctl: grow 1 → 3 → 5 and shrink to 3
//! while a client writes, learners and their promotion, removing the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use parking_lot::Mutex;
use secretd_api::pb::etcdserverpb::{PutRequest, RangeRequest};

/// (id, name, is_learner) per member, from `etcdctl member list`.
fn members(c: &Cluster, eps: &str) -> Vec<(String, String, bool)> {
    let out = c.etcdctl_at(eps, &["member", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f[0].to_string(), f[2].to_string(), f[5] == "true")
        })
        .collect()
}

fn eps(c: &Cluster) -> String {
    c.running()
        .iter()
        .map(|i| c.endpoint(*i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `member add NAME --learner` for a new member (not started yet).
fn add_learner(c: &mut Cluster, name: &str) -> usize {
    let current = c.running();
    let (i, peer) = c.new_member(name, &current);
    let out = c.etcdctl_at(
        &eps(c),
        &[
            "member",
            "add",
            name,
            "--learner",
            &format!("--peer-urls={peer}"),
        ],
    );
    assert!(
        out.status.success(),
        "member add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    i
}

/// Adds and starts member `name`; waits until it has published its name.
async fn grow(c: &mut Cluster, name: &str) -> usize {
    let current = c.running();
    let (i, peer) = c.new_member(name, &current);
    let out = c.etcdctl_at(
        &eps(c),
        &["member", "add", name, &format!("--peer-urls={peer}")],
    );
    assert!(
        out.status.success(),
        "member add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.spawn(i);
    let deadline = Instant::now() + crate::common::secs(30);
    while !members(c, &eps(c)).iter().any(|m| m.1 == name) {
        assert!(
            Instant::now() < deadline,
            "{name} never joined\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    i
}

#[tokio::test(flavor = "multi_thread")]
async fn grow_to_five_and_shrink_to_three_while_writing() {
    let mut c = Cluster::start(1);
    c.wait_leader(crate::common::secs(10)).await;
    let endpoints = Arc::new(Mutex::new(vec![c.endpoint(0)]));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (endpoints, acked, stop) = (endpoints.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let eps = endpoints.lock().clone();
                let ep = &eps[i as usize % eps.len()];
                let ch = tonic::transport::Channel::from_shared(format!("http://{ep}"))
                    .unwrap()
                    .timeout(crate::common::secs(5))
                    .connect_lazy();
                let mut kv = secretd_api::pb::etcdserverpb::kv_client::KvClient::new(ch);
                let key = format!("m/{i:06}");
                if kv
                    .put(PutRequest {
                        key: key.clone().into(),
                        value: i.to_string().into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    acked.lock().insert(key, i.to_string());
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut added = Vec::new();
    for name in ["n2", "n3", "n4", "n5"] {
        let i = grow(&mut c, name).await;
        endpoints.lock().push(c.endpoint(i));
        added.push(i);
    }
    assert_eq!(members(&c, &eps(&c)).len(), 5);
    // Shrink back to 3: remove n4 and n5, which stop on their own.
    for i in [added[2], added[3]] {
        let id = c.member_id(i).await;
        endpoints.lock().retain(|e| *e != c.endpoint(i));
        let remaining = c
            .running()
            .into_iter()
            .filter(|j| *j != i)
            .map(|j| c.endpoint(j))
            .collect::<Vec<_>>()
            .join(",");
        let out = c.etcdctl_at(&remaining, &["member", "remove", &id]);
        assert!(
            out.status.success(),
            "member remove: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + crate::common::secs(15);
        while c.exited(i).is_none() {
            assert!(
                Instant::now() < deadline,
                "removed member {i} still running"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(&c.members[i].log).unwrap();
        assert!(log.contains("removed from the cluster"), "{log}");
        c.kill9(i);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(members(&c, &eps(&c)).len(), 3);
    let acked = acked.lock().clone();
    assert!(
        acked.len() > 50,
        "the writer made progress: {}",
        acked.len()
    );
    // Every acknowledged write is on every remaining member.
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let mut kv = c.kv(leader).await;
    kv.put(PutRequest {
        key: "m/zz-final".into(),
        value: "1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    for i in c.running() {
        let deadline = Instant::now() + crate::common::secs(15);
        loop {
            let mut kv = c.kv(i).await;
            let got = kv
                .range(RangeRequest {
                    key: "m/".into(),
                    range_end: "m0".into(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let got: BTreeMap<String, String> = got
                .kvs
                .into_iter()
                .map(|kv| {
                    (
                        String::from_utf8(kv.key).unwrap(),
                        String::from_utf8(kv.value).unwrap(),
                    )
                })
                .collect();
            if got.contains_key("m/zz-final") {
                crate::common::assert_none_lost(&format!("member {i}"), &acked, &got);
                break;
            }
            assert!(Instant::now() < deadline, "member {i} never caught up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn learner_promotion_and_leader_removal() {
    let mut c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    c.ok(&["put", "before", "1"]);
    // A learner that is not running yet cannot be promoted.
    let l = add_learner(&mut c, "n4");
    let id = members(&c, &eps(&c))
        .into_iter()
        .find(|m| m.2)
        .expect("a learner")
        .0;
    let out = c.etcdctl_at(&eps(&c), &["member", "promote", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("can only promote a learner member which is in sync with leader"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Running, it catches up and can be promoted.
    c.spawn(l);
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        let out = c.etcdctl_at(&eps(&c), &["member", "promote", &id]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "learner never promoted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every member lists it as a voter once it has applied the promotion
    // (a member list is answered from the member's own state, and etcdctl
    // may ask one that has not applied it yet).
    let deadline = Instant::now() + crate::common::secs(15);
    while !members(&c, &eps(&c)).iter().all(|m| !m.2) {
        assert!(Instant::now() < deadline, "a learner is still listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Remove the leader itself: the others elect a new one and go on.
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let leader_id = c.member_id(leader).await;
    let others = c
        .running()
        .into_iter()
        .filter(|i| *i != leader)
        .map(|i| c.endpoint(i))
        .collect::<Vec<_>>()
        .join(",");
    let out = c.etcdctl_at(&others, &["member", "remove", &leader_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + crate::common::secs(15);
    while c.exited(leader).is_none() {
        assert!(Instant::now() < deadline, "removed leader still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.kill9(leader);
    let new_leader = c.wait_leader(crate::common::secs(15)).await;
    assert_ne!(new_leader, leader);
    // Right after a leader change a member may briefly answer "no leader";
    // clients retry that, and so does this one, for a bounded time.
    let deadline = Instant::now() + crate::common::secs(10);
    loop {
        let out = c.etcdctl_at(&others, &["put", "after", "2"]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            err.contains("no leader") && Instant::now() < deadline,
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        String::from_utf8_lossy(&c.etcdctl_at(&others, &["get", "before"]).stdout),
        "before\n1\n"
    );
    assert_eq!(members(&c, &others).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn joiner_killed_before_its_first_snapshot_rejoins_as_itself() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(15)).await;
    c.ok(&["put", "j", "1"]);
    let n4 = add_learner(&mut c, "n4");
    // With the leader frozen, the joiner learns the cluster from a follower
    // but gets no snapshot; it dies before a new leader is elected.
    c.signal(leader, "STOP");
    c.spawn(n4);
    // Killed once it saved its identity and runs, before any snapshot (a
    // fixed wait here once killed it before it saved its ids; that case
    // must work too: it asks the running members again).
    let log = c.members[n4].log.clone();
    let deadline = Instant::now() + crate::common::secs(15);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("raft loop started")
    {
        assert!(Instant::now() < deadline, "the joiner never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill9(n4);
    c.signal(leader, "CONT");
    c.spawn(n4);
    let deadline = Instant::now() + crate::common::secs(20);
    loop {
        let out = c.etcdctl_at(&c.endpoint(n4), &["get", "j", "--consistency=s"]);
        if String::from_utf8_lossy(&out.stdout) == "j\n1\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joiner never caught up\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Still one cluster of four; n4 publishes its name once it runs (as in
    // etcd, a member is listed unnamed until then).
    let deadline = Instant::now() + crate::common::secs(15);
    loop {
        let ms = members(&c, &eps(&c));
        assert_eq!(ms.len(), 4, "{ms:?}");
        if ms.iter().any(|m| m.1 == "n4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n4 never published its name: {ms:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
