//! Corruption checks on real members (issue 30, section 3): a stopped
//! member's keyspace is damaged the way a lying disk damages it (one
//! record rewritten whole, RocksDB's checksums intact). The initial check
//! keeps it from serving; without it, the leader's periodic check raises
//! CORRUPT naming it, which stops writes everywhere and reads on the
//! damaged member while the others still read; repaired from its peers
//! (removed, wiped, added back, caught up by snapshot), the cluster
//! agrees again and takes writes after `alarm disarm`.

use std::time::{Duration, Instant};

use crate::common::{secs, wait_for, Cluster};

const CHECK_FLAGS: [&str; 2] = ["--experimental-corrupt-check-time", "1s"];

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `etcdctl get KEY --print-value-only` at member `i` from what it applied.
fn local_get(c: &Cluster, i: usize, key: &str) -> std::process::Output {
    c.etcdctl_at(
        &c.endpoint(i),
        &["get", key, "--consistency=s", "--print-value-only"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_member_is_found_refused_and_rebuilt_from_its_peers() {
    let mut c = Cluster::start_with(3, &CHECK_FLAGS);
    let leader = c.wait_leader(secs(30)).await;
    for i in 0..20 {
        c.ok(&["put", &format!("kv/{i}"), &format!("v{i}")]);
    }
    let victim = (leader + 1) % 3;
    let victim_hex = c.member_id(victim).await;
    let victim_dec = u64::from_str_radix(&victim_hex, 16).unwrap().to_string();
    wait_for("the victim to apply every write", &c, secs(20), || {
        text(&local_get(&c, victim, "kv/19")).trim() == "v19"
    })
    .await;
    c.kill9(victim);
    secretd_store::damage::flip_value_bit(&c.members[victim].data_dir, Some(b"kv/7"))
        .expect("damage kv/7");

    // The initial check: outvoted by both peers, it never serves.
    c.spawn(victim);
    let deadline = Instant::now() + secs(30);
    let exit = loop {
        if let Some(s) = c.exited(victim) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the damaged member served\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!exit.success());
    let log = std::fs::read_to_string(&c.members[victim].log).unwrap();
    assert!(
        log.contains("this member's keyspace differs from its peers'")
            && log.contains("Repairing a damaged member"),
        "no clear refusal in the log:\n{}",
        c.logs_tail()
    );
    c.kill9(victim); // reaps the exited child

    // Without it, the leader's periodic check finds the damage.
    c.spawn_with(victim, &["--experimental-initial-corrupt-check=false"]);
    let leader_ep = c.endpoint(leader);
    wait_for("CORRUPT naming the victim", &c, secs(60), || {
        let out = c.etcdctl_at(&leader_ep, &["alarm", "list"]);
        let t = text(&out);
        t.lines()
            .any(|l| l.contains("alarm:CORRUPT") && l.contains(&victim_dec))
    })
    .await;
    let alarms = text(&c.etcdctl_at(&leader_ep, &["alarm", "list"]));
    assert_eq!(
        alarms.lines().filter(|l| l.contains("CORRUPT")).count(),
        1,
        "only the damaged member is named: {alarms}"
    );
    let leader_log = std::fs::read_to_string(&c.members[leader].log).unwrap();
    assert!(
        leader_log.contains("members' keyspaces differ at the same revision")
            && leader_log.contains(&format!("{victim_hex}=")),
        "the leader's log names both hashes:\n{}",
        c.logs_tail()
    );
    // The damaged member serves no read, damaged or not; the others do.
    wait_for("the damaged member to refuse reads", &c, secs(20), || {
        text(&local_get(&c, victim, "kv/3")).contains("this member's data is damaged")
    })
    .await;
    assert_eq!(text(&local_get(&c, leader, "kv/7")).trim(), "v7");
    // Writes stop on every member.
    let put = c.etcdctl_at(&leader_ep, &["put", "kv/new", "x"]);
    assert!(
        !put.status.success() && text(&put).contains("corrupt cluster"),
        "a write while CORRUPT is raised: {}",
        text(&put)
    );

    // Repair from the peers: remove, wipe, add back, catch up, promote.
    let healthy: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let healthy_eps = healthy
        .iter()
        .map(|i| c.endpoint(*i))
        .collect::<Vec<_>>()
        .join(",");
    let remove = c.etcdctl_at(&healthy_eps, &["member", "remove", &victim_hex]);
    assert!(remove.status.success(), "member remove: {}", text(&remove));
    c.kill9(victim);
    let peer = c.rejoin(victim, &healthy);
    let name = c.members[victim].name.clone();
    let eps = healthy
        .iter()
        .map(|i| c.endpoint(*i))
        .collect::<Vec<_>>()
        .join(",");
    let add = c.etcdctl_at(
        &eps,
        &[
            "member",
            "add",
            &name,
            &format!("--peer-urls={peer}"),
            "--learner",
        ],
    );
    assert!(add.status.success(), "member add: {}", text(&add));
    let added = text(&add);
    let new_hex = added
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .unwrap_or_else(|| panic!("no member ID in: {added}"))
        .to_string();
    c.spawn(victim);
    wait_for("the rebuilt member to be promoted", &c, secs(60), || {
        c.etcdctl_at(&eps, &["member", "promote", &new_hex])
            .status
            .success()
    })
    .await;
    let disarm = c.etcdctl_at(&eps, &["alarm", "disarm"]);
    assert!(disarm.status.success(), "alarm disarm: {}", text(&disarm));
    c.ok(&["put", "kv/after", "y"]);
    wait_for(
        "the rebuilt member to read the right value",
        &c,
        secs(30),
        || {
            text(&local_get(&c, victim, "kv/7")).trim() == "v7"
                && text(&local_get(&c, victim, "kv/after")).trim() == "y"
        },
    )
    .await;
    // Every member agrees again: the next periodic rounds raise nothing.
    let all = c.endpoints();
    wait_for("equal hashes on every member", &c, secs(30), || {
        let out = c.etcdctl_at(&all, &["endpoint", "hashkv", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let hashes: Vec<_> = v
            .as_array()
            .map(|a| a.iter().map(|e| e["HashKV"]["hash"].clone()).collect())
            .unwrap_or_default();
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0])
    })
    .await;
    // Two more rounds that compared every member and agreed.
    let agreed = |c: &Cluster| -> usize {
        c.members
            .iter()
            .map(|m| {
                std::fs::read_to_string(&m.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| {
                        l.contains("corruption check: members agree") && l.matches('=').count() >= 3
                    })
                    .count()
            })
            .sum()
    };
    let before = agreed(&c);
    wait_for("two more agreeing rounds", &c, secs(30), || {
        agreed(&c) >= before + 2
    })
    .await;
    let alarms = text(&c.etcdctl_at(&all, &["alarm", "list"]));
    assert!(!alarms.contains("CORRUPT"), "raised again: {alarms}");
}

/// `Raft.HashKv` as an attacker meets it on a TLS cluster: an admin's
/// certificate is refused; a member's certificate may not speak as another
/// member; nonsense revisions are refused or time out; a thousand requests
/// at once (half of them for a revision far ahead) are all answered or
/// refused within their bounds while the member keeps taking writes.
#[tokio::test(flavor = "multi_thread")]
async fn hash_requests_are_members_only_and_bounded() {
    use secretd_api::pb::raftpb::{raft_client::RaftClient, ClusterInfoRequest, PeerHashKvRequest};
    use std::path::Path;
    let c = Cluster::start_tls(3, &[]);
    c.wait_leader(secs(20)).await;
    c.ok(&["put", "k", "v"]);
    let certs = c.tls.clone().unwrap();
    let peer = format!("127.0.0.1:{}", c.members[0].peer_port);
    let client = |cert: &str| {
        let (crt, key) = c.cert(cert);
        let tls = secretd_client::ClientTls::load(
            &certs.join("ca.pem"),
            Some(Path::new(&crt)),
            Some(Path::new(&key)),
        )
        .unwrap();
        RaftClient::new(secretd_client::channel(&peer, Some(&tls), Some(secs(10))).unwrap())
    };
    let mut member = client("member-n2");
    let cluster_id = member
        .cluster_info(ClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .cluster_id;
    let n2 = u64::from_str_radix(&c.member_id(1).await, 16).unwrap();
    let n3 = u64::from_str_radix(&c.member_id(2).await, 16).unwrap();
    let ask = move |from: u64, revision: i64| PeerHashKvRequest {
        cluster_id,
        from,
        revision,
    };
    let e = client("admin").hash_kv(ask(n2, 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = member.hash_kv(ask(n3, 1)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    for bad in [0, -1, i64::MIN] {
        let e = member.hash_kv(ask(n2, bad)).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "revision {bad}: {e:?}"
        );
    }
    let e = member.hash_kv(ask(n2, i64::MAX)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let ok = member.hash_kv(ask(n2, 1)).await.unwrap().into_inner();
    assert_eq!(ok.revision, 1);

    let flood: Vec<_> = (0..1000)
        .map(|i| {
            let mut m = member.clone();
            let r = if i % 2 == 0 { 2 } else { 1 << 40 };
            tokio::spawn(async move { m.hash_kv(ask(n2, r)).await.map(|_| ()) })
        })
        .collect();
    let t = std::time::Instant::now();
    let put = c.etcdctl_at(&c.endpoint(0), &["put", "during", "flood"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let put_ms = t.elapsed().as_millis();
    let (mut answered, mut refused) = (0, 0);
    for f in flood {
        match f.await.unwrap() {
            Ok(()) => answered += 1,
            Err(e) => {
                // Refused: behind, out of time, or the connection closed
                // by the member's stream limits, or by h2's guard against
                // reset floods (GOAWAY ENHANCE_YOUR_CALM "too_many_resets",
                // which tonic reports as RESOURCE_EXHAUSTED): a thousand
                // refused streams on one connection is what that guard is
                // for (CVE-2023-44487), and the member stays healthy.
                let closed = (e.code() == tonic::Code::Unknown && e.message() == "transport error")
                    || (e.code() == tonic::Code::ResourceExhausted
                        && format!("{e:?}").contains("too_many_resets"));
                assert!(
                    closed
                        || matches!(
                            e.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                        ),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        answered >= 1 && answered + refused == 1000,
        "{answered} {refused}"
    );
    eprintln!(
        "hash flood: {answered} answered, {refused} refused; a put took {put_ms} ms meanwhile"
    );
    assert!(c
        .etcdctl_at(&c.endpoint(0), &["endpoint", "health"])
        .status
        .success());
}
