//! Disaster recovery with `--force-new-cluster` on real members: five
//! members with KV writes, secrets and a KEK rotation under autolock lose
//! three for good; one survivor becomes a one-member cluster with every
//! committed write and every secret, and grows back to three through
//! `member add` and `--initial-cluster-state existing` (one of them at the
//! peer URL of a lost member). And the refusals: an empty data directory,
//! the flag left on, and nothing left to force.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{wait_for, Cluster};
use secretd_api::pb::etcdserverpb::{
    maintenance_client::MaintenanceClient, PutRequest, RangeRequest, StatusRequest, StatusResponse,
};
use secretd_api::pb::secretstore::{
    agent_client::AgentClient, secrets_client::SecretsClient, CreateRequest, FetchRequest,
    RotateRequest,
};

const LOCKED: &str = "member is locked; run secretctl cluster unlock";
const FORCED_LOG: &str = "FORCING A NEW CLUSTER";

async fn status(c: &Cluster, i: usize) -> Option<StatusResponse> {
    let mut m = MaintenanceClient::new(c.channel(i).await);
    m.status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Waits until member `i` leads, alone or not.
async fn leads(c: &Cluster, i: usize, within: Duration) -> StatusResponse {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = status(c, i).await {
            if st.leader != 0 && Some(st.leader) == st.header.as_ref().map(|h| h.member_id) {
                return st;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {i} never led\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Member `i`'s `kv/` keys, read serializably (from what it applied).
async fn kv_at(c: &Cluster, i: usize) -> BTreeMap<String, String> {
    let Ok(resp) = c
        .kv(i)
        .await
        .range(RangeRequest {
            key: "kv/".into(),
            range_end: "kv0".into(),
            serializable: true,
            ..Default::default()
        })
        .await
    else {
        return BTreeMap::new();
    };
    resp.into_inner()
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

/// Waits until member `i` has applied every write in `want`.
async fn kv_reads_back(c: &Cluster, i: usize, want: &BTreeMap<String, String>) {
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        let got = kv_at(c, i).await;
        if want.iter().all(|(k, v)| got.get(k) == Some(v)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {i} has {} of {} writes\n{}",
            want.iter().filter(|(k, v)| got.get(*k) == Some(*v)).count(),
            want.len(),
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (task on node n1, secret id, version) → plaintext.
type Versions = BTreeMap<(String, String, u64), String>;

/// A secret version's plaintext through member `i`'s agent API, for a task
/// on node n1 (plaintext URLs bind no node certificate).
async fn fetch(
    c: &Cluster,
    i: usize,
    (task, id, version): &(String, String, u64),
) -> Result<Vec<u8>, tonic::Status> {
    AgentClient::new(c.channel(i).await)
        .fetch(FetchRequest {
            node: "n1".into(),
            task: task.clone(),
            secret: true,
            object_id: id.clone(),
            version: *version,
        })
        .await
        .map(|r| r.into_inner().data)
}

/// Every secret version in `want` opens on member `i` (which may still be
/// fetching its keyring).
async fn secrets_open(c: &Cluster, i: usize, want: &Versions) {
    for (version, data) in want {
        let deadline = Instant::now() + crate::common::secs(30);
        let got = loop {
            match fetch(c, i, version).await {
                Ok(d) => break d,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("member {i}: {version:?}: {e}\n{}", c.logs_tail()),
            }
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            *data,
            "member {i} {version:?}"
        );
    }
}

/// `member add` through `at`, then the member's start; waits until it is
/// in the member list with its name.
async fn add_member(c: &mut Cluster, at: usize, i: usize, peer: &str) {
    let name = c.members[i].name.clone();
    let out = c.etcdctl_at(
        &c.endpoint(at),
        &["member", "add", &name, &format!("--peer-urls={peer}")],
    );
    assert!(
        out.status.success(),
        "member add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.spawn(i);
    let ep = c.endpoint(at);
    wait_for(
        &format!("{name} to join"),
        c,
        crate::common::secs(30),
        || {
            let out = c.etcdctl_at(&ep, &["member", "list"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.split(", ").nth(2) == Some(name.as_str()))
        },
    )
    .await;
}

/// Task `task` on node n1, through member `at`, using these secrets.
fn task_create(c: &Cluster, at: usize, task: &str, secrets: &[String]) {
    let ep = c.endpoint(at);
    let mut args = vec!["--endpoints", &ep, "task", "create", task, "--node", "n1"];
    for s in secrets {
        args.extend(["--secret", s.as_str()]);
    }
    c.sctl(&args, None);
}

fn unlock(c: &Cluster, i: usize, key: &str) {
    let out = c.secretctl_at(&c.endpoint(i), &["cluster", "unlock"], Some(key.as_bytes()));
    assert!(
        out.status.success(),
        "unlock member {i}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs_tail()
    );
}

fn log_of(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(&c.members[i].log).unwrap_or_default()
}

/// Waits until member `i`'s process has exited; its log.
async fn exits(c: &mut Cluster, i: usize) -> String {
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        if let Some(st) = c.exited(i) {
            assert!(!st.success(), "member {i} exited successfully");
            c.kill9(i); // reaps it, so it can be started again
            return log_of(c, i);
        }
        assert!(
            Instant::now() < deadline,
            "member {i} is still running:\n{}",
            log_of(c, i)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_recovers_one_survivor_of_five_and_grows_back() {
    let mut c = Cluster::start(5);
    let leader = c.wait_leader(crate::common::secs(30)).await;
    let cluster_id = status(&c, leader).await.unwrap().header.unwrap().cluster_id;

    // Before the disaster: KV writes, secrets sealed under generation 1,
    // a KEK rotation, more secrets and versions under generation 2, then
    // autolock.
    let mut kv = c.kv(leader).await;
    let mut acked = BTreeMap::new();
    for i in 0..60 {
        let (k, v) = (format!("kv/{i:03}"), format!("v{i}"));
        kv.put(PutRequest {
            key: k.clone().into(),
            value: v.clone().into(),
            ..Default::default()
        })
        .await
        .unwrap();
        acked.insert(k, v);
    }
    let secrets = SecretsClient::new(c.channel(leader).await);
    let mut want = Versions::new();
    let mut names = Vec::new();
    let create = |name: String, data: String| {
        let s = secrets.clone();
        async move {
            let id = s
                .clone()
                .create(CreateRequest {
                    name: name.clone(),
                    data: data.into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .id;
            (name, id)
        }
    };
    for i in 0..8 {
        let (name, id) = create(format!("s{i}"), format!("before-rotation-{i}")).await;
        want.insert(("web.1".into(), id, 1), format!("before-rotation-{i}"));
        names.push(name);
    }
    let out = c.sctl(
        &["--endpoints", &c.endpoint(leader), "cluster", "rotate-key"],
        None,
    );
    assert!(out.contains("rotated to generation 2"), "{out}");
    for i in 8..12 {
        let (name, id) = create(format!("s{i}"), format!("after-rotation-{i}")).await;
        want.insert(("web.1".into(), id, 1), format!("after-rotation-{i}"));
        names.push(name);
    }
    let first = want.keys().next().unwrap().1.clone();
    let v2 = secrets
        .clone()
        .rotate(RotateRequest {
            name_or_id: first.clone(),
            data: b"rotated-version-2".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .version;
    // A task is served its secrets' current versions only.
    want.remove(&("web.1".into(), first.clone(), 1));
    want.insert(("web.1".into(), first, v2), "rotated-version-2".into());
    task_create(&c, leader, "web.1", &names);
    let key = c.autolock_on().await;
    for i in 0..5 {
        let d = c.members[i].data_dir.join("keys");
        wait_for(
            "every member to seal its keyring",
            &c,
            crate::common::secs(20),
            || d.join("keyring.locked").exists() && !d.join("wrap.key").exists(),
        )
        .await;
    }

    // The survivor has applied everything the leader committed (an
    // operator picks the survivor with the highest raft index).
    let survivor = (leader + 1) % 5;
    let other = (leader + 2) % 5;
    let lost = [leader, (leader + 3) % 5, (leader + 4) % 5];
    let commit = status(&c, leader).await.unwrap().raft_index;
    let deadline = Instant::now() + crate::common::secs(20);
    while status(&c, survivor).await.unwrap().raft_applied_index < commit {
        assert!(Instant::now() < deadline, "the survivor never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kv_reads_back(&c, survivor, &acked).await;

    // The disaster: three members and their disks gone for good; the other
    // survivor is stopped too (it is re-added, wiped, below).
    for i in lost {
        c.kill9(i);
        std::fs::remove_dir_all(&c.members[i].data_dir).unwrap();
    }
    c.kill9(other);
    c.kill9(survivor);

    // The survivor alone: a one-member cluster, same cluster id, leader.
    c.spawn_with(survivor, &["--force-new-cluster"]);
    let st = leads(&c, survivor, crate::common::secs(30)).await;
    assert_eq!(st.header.unwrap().cluster_id, cluster_id);
    assert!(log_of(&c, survivor).contains(FORCED_LOG));
    let list = c.etcdctl_at(&c.endpoint(survivor), &["member", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(list.contains(&c.members[survivor].name), "{list}");
    kv_reads_back(&c, survivor, &acked).await;
    // Locked, as any restarted member under autolock, until its unlock key.
    let some = want.keys().next().unwrap().clone();
    assert_eq!(
        fetch(&c, survivor, &some).await.unwrap_err().message(),
        LOCKED
    );
    unlock(&c, survivor, &key);
    secrets_open(&c, survivor, &want).await;
    // It takes writes and seals new secrets alone (a quorum of one).
    c.kv(survivor)
        .await
        .put(PutRequest {
            key: "kv/after".into(),
            value: "alone".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    acked.insert("kv/after".into(), "alone".into());
    let s_alone = SecretsClient::new(c.channel(survivor).await)
        .create(CreateRequest {
            name: "s-alone".into(),
            data: b"sealed-alone".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    want.insert(("web.2".into(), s_alone, 1), "sealed-alone".into());
    task_create(&c, survivor, "web.2", &["s-alone".into()]);

    // Grow back to three: the other survivor's host, wiped, at its old
    // peer URL (so its old member id: its old records of holding KEKs must
    // not count), and a new member.
    let peer = c.rejoin(other, &[survivor]);
    add_member(&mut c, survivor, other, &peer).await;
    assert!(
        log_of(&c, survivor).contains("forgot a former member's records"),
        "{}",
        c.logs_tail()
    );
    let (fresh, peer) = c.new_member("n6", &[survivor, other]);
    add_member(&mut c, survivor, fresh, &peer).await;
    let list = c.etcdctl_at(&c.endpoint(survivor), &["member", "list"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 3);
    for i in [other, fresh] {
        kv_reads_back(&c, i, &acked).await;
        // A new member of an autolocked cluster gets the keyring only
        // sealed under the unlock key.
        let deadline = Instant::now() + crate::common::secs(20);
        loop {
            match fetch(&c, i, &some).await {
                Err(e) if e.message() == LOCKED => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "member {i} never locked");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unlock(&c, i, &key);
    }
    // A rotation needs a quorum of the three to hold the new generation.
    let out = c.sctl(
        &[
            "--endpoints",
            &c.endpoint(survivor),
            "cluster",
            "rotate-key",
        ],
        None,
    );
    assert!(out.contains("rotated to generation 3"), "{out}");
    for i in [survivor, other, fresh] {
        secrets_open(&c, i, &want).await;
    }

    // The flag left on: the next start is refused, and the cluster it grew
    // back into goes on.
    c.kill9(survivor);
    c.spawn_with(survivor, &["--force-new-cluster"]);
    let log = exits(&mut c, survivor).await;
    assert!(log.contains("already applied to this member"), "{log}");
    assert_eq!(log.matches(FORCED_LOG).count(), 1, "forced once only");
    c.spawn(survivor);
    c.wait_leader(crate::common::secs(30)).await;
    kv_reads_back(&c, survivor, &acked).await;
    unlock(&c, survivor, &key);
    secrets_open(&c, survivor, &want).await;
}

/// The refusals, and the default keyring (no autolock): a forced survivor
/// opens its secrets at once with the key file in its data directory.
#[tokio::test(flavor = "multi_thread")]
async fn force_new_cluster_refuses_what_it_cannot_recover() {
    // An empty data directory: nothing to recover, and nothing created.
    let mut empty = Cluster::prepare(1, &[]);
    empty.spawn_with(0, &["--force-new-cluster"]);
    let log = exits(&mut empty, 0).await;
    assert!(log.contains("nothing to recover"), "{log}");
    assert!(!empty.members[0].data_dir.exists());

    let mut c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(30)).await;
    c.sctl(
        &[
            "--endpoints",
            &c.endpoint(leader),
            "secret",
            "create",
            "pw",
            "-",
        ],
        Some(b"hunter2"),
    );
    task_create(&c, leader, "web.1", &["pw".into()]);
    let id = c
        .sctl(
            &[
                "--endpoints",
                &c.endpoint(leader),
                "secret",
                "inspect",
                "-f",
                "{{.ID}}",
                "pw",
            ],
            None,
        )
        .trim()
        .to_string();
    let survivor = (leader + 1) % 3;
    let want: Versions = [(("web.1".to_string(), id, 1), "hunter2".to_string())].into();
    secrets_open(&c, survivor, &want).await;
    for i in 0..3 {
        c.kill9(i);
        if i != survivor {
            std::fs::remove_dir_all(&c.members[i].data_dir).unwrap();
        }
    }
    c.spawn_with(survivor, &["--force-new-cluster=true"]);
    leads(&c, survivor, crate::common::secs(30)).await;
    secrets_open(&c, survivor, &want).await;

    // Twice in a row: refused.
    c.kill9(survivor);
    c.spawn_with(survivor, &["--force-new-cluster"]);
    let log = exits(&mut c, survivor).await;
    assert!(log.contains("already applied to this member"), "{log}");
    // A start without the flag, then with it: nobody left to remove.
    c.spawn(survivor);
    leads(&c, survivor, crate::common::secs(30)).await;
    c.kill9(survivor);
    c.spawn_with(survivor, &["--force-new-cluster"]);
    let log = exits(&mut c, survivor).await;
    assert!(
        log.contains("already the only member of its cluster"),
        "{log}"
    );
    c.spawn(survivor);
    leads(&c, survivor, crate::common::secs(30)).await;
    secrets_open(&c, survivor, &want).await;
}

/// A member whose data directory was wiped, started again as `existing`
/// under the same name (so the same member ID): the leader tells it of
/// entries committed that its raft log does not hold, and raft-rs panics
/// (etcd panics alike). The process stops, naming the cause and the
/// remedy; it used to live on with its raft thread dead, serving an
/// empty keyspace to serializable reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_wiped_and_started_as_existing_stops_naming_why() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(20)).await;
    for i in 0..5 {
        c.ok(&["put", &format!("k{i}"), "v"]);
    }
    let wiped = (leader + 1) % 3;
    c.kill9(wiped);
    std::fs::remove_dir_all(&c.members[wiped].data_dir).unwrap();
    c.spawn_with(wiped, &["--initial-cluster-state", "existing"]);
    let log = exits(&mut c, wiped).await;
    assert!(
        log.contains("raft loop panicked") && log.contains("member remove"),
        "{log}"
    );
    // The others go on.
    c.ok(&["put", "after", "v"]);
}
