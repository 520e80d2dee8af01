//! etcdctl as an operator runs it on a 3-member cluster: the everyday
//! commands, watches, and every per-endpoint command with and without a
//! URL scheme.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{etcdctl_bin, Cluster};

/// Runs `etcdctl watch ...` for a while and returns what it printed.
fn watch_output(c: &Cluster, args: &[&str], during: impl FnOnce(), run_for: Duration) -> String {
    let mut child = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.endpoint(2)))
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl watch");
    std::thread::sleep(Duration::from_millis(700));
    during();
    std::thread::sleep(run_for);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_session_against_three_members() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;

    // put / get: revisions 2..=5.
    assert_eq!(c.ok(&["put", "k1", "v1"]).trim(), "OK");
    c.ok(&["put", "k1", "v2"]);
    c.ok(&["put", "k2", "x"]);
    c.ok(&["put", "other", "y"]);
    assert_eq!(c.ok(&["get", "k1"]), "k1\nv2\n");
    assert_eq!(c.ok(&["get", "k", "--prefix"]), "k1\nv2\nk2\nx\n");
    assert_eq!(c.ok(&["get", "k1", "--rev=2"]), "k1\nv1\n");
    assert_eq!(
        c.ok(&["get", "", "--prefix", "--keys-only"]),
        "k1\n\nk2\n\nother\n\n"
    );
    let json = c.ok(&["get", "k1", "-w", "json"]);
    assert!(
        json.contains("\"create_revision\":2")
            && json.contains("\"mod_revision\":3")
            && json.contains("\"version\":2"),
        "{json}"
    );
    assert!(c
        .ok(&["get", "k", "--prefix", "--limit=1", "-w", "json"])
        .contains("\"more\":true,\"count\":2"));
    assert_eq!(c.ok(&["get", "k", "--prefix", "--limit=1"]), "k1\nv2\n");
    assert_eq!(
        c.ok(&["get", "k", "--prefix", "--sort-by=VALUE", "--order=DESCEND"]),
        "k2\nx\nk1\nv2\n"
    );

    // Serializable reads on every member converge to the same value.
    for i in 0..3 {
        let deadline = Instant::now() + crate::common::secs(5);
        loop {
            let out = c.etcdctl_at(&c.endpoint(i), &["get", "k1", "--consistency=s"]);
            if String::from_utf8_lossy(&out.stdout) == "k1\nv2\n" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never served k1=v2 serializably"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // txn with a compare, both outcomes (etcdctl reads the txn from stdin).
    let txn = |script: &str| {
        let out = crate::common::etcdctl_stdin(&c.endpoints(), &["txn"], script.as_bytes());
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        txn("value(\"k1\") = \"v2\"\n\nput k1 v3\n\nput k1 never\n\n"),
        "SUCCESS\n\nOK\n"
    );
    assert_eq!(
        txn("mod(\"k1\") < \"3\"\n\nput k1 never\n\nget k1\n\n"),
        "FAILURE\n\nk1\nv3\n"
    );
    assert_eq!(c.ok(&["get", "k1"]), "k1\nv3\n"); // revision 6

    // del.
    assert_eq!(c.ok(&["del", "k2"]).trim(), "1"); // revision 7
    assert_eq!(c.ok(&["get", "k2"]), "");
    assert_eq!(c.ok(&["del", "nothing-here"]).trim(), "0");

    // watch from a past revision, by prefix: the whole history, in order.
    let out = watch_output(
        &c,
        &["--prefix", "k", "--rev=2"],
        || {},
        Duration::from_millis(800),
    );
    assert_eq!(
        out, "PUT\nk1\nv1\nPUT\nk1\nv2\nPUT\nk2\nx\nPUT\nk1\nv3\nDELETE\nk2\n\n",
        "{out}"
    );

    // Live watch, with a write through another member.
    let out = watch_output(
        &c,
        &["--prefix", "live/"],
        || {
            c.ok(&["put", "live/a", "1"]);
            c.ok(&["put", "unrelated", "1"]);
            c.ok(&["del", "live/a"]);
        },
        Duration::from_millis(800),
    );
    assert_eq!(out, "PUT\nlive/a\n1\nDELETE\nlive/a\n\n", "{out}");

    // compaction: old revisions go, later ones stay.
    assert_eq!(c.ok(&["compaction", "3"]).trim(), "compacted revision 3");
    let out = c.etcdctl(&["get", "k1", "--rev=2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision has been compacted"));
    assert_eq!(c.ok(&["get", "k1", "--rev=3"]), "k1\nv2\n");
    let out = watch_output(&c, &["k1", "--rev=2"], || {}, Duration::from_millis(500));
    assert!(
        out.contains("required revision has been compacted"),
        "{out}"
    );
    let out = c.etcdctl(&["get", "k1", "--rev=100000"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision is a future revision"));

    // endpoint status: three members, exactly one leader, same term.
    let status = c.ok(&["endpoint", "status", "-w", "json"]);
    assert_eq!(status.matches("\"Endpoint\"").count(), 3, "{status}");
    let leaders: Vec<_> = status
        .match_indices("\"leader\":")
        .map(|(i, _)| &status[i + 9..i + 29])
        .collect();
    assert!(
        leaders
            .windows(2)
            .all(|w| w[0].split(',').next() == w[1].split(',').next()),
        "{status}"
    );
    assert_eq!(c.ok(&["endpoint", "status"]).lines().count(), 3);

    // A request over --max-request-bytes gets etcd's error.
    let out =
        crate::common::etcdctl_stdin(&c.endpoints(), &["put", "big"], &vec![b'x'; 1600 * 1024]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcdserver: request is too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and loses nothing.
    assert_eq!(c.ok(&["get", "k1"]), "k1\nv3\n");
}

/// etcdctl 3.4 sends `:authority = http://host:port` on its per-endpoint
/// commands when endpoints carry a scheme; Go's server (etcd) accepts it,
/// and so must we. Every such command, with and without the scheme.
#[tokio::test(flavor = "multi_thread")]
async fn per_endpoint_commands_work_with_scheme_and_bare_endpoints() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    c.ok(&["put", "k", "v"]);
    let target = c.member_id(1).await;

    // Maintenance.Hash: every member hashes the same state alike, and a
    // write changes the hash.
    let hashes = |c: &Cluster| {
        let chans: Vec<_> = (0..3).map(|i| c.endpoint(i)).collect();
        async move {
            let mut out = Vec::new();
            for ep in chans {
                let ch = secretd_client::channel(&ep, None, Some(crate::common::secs(5))).unwrap();
                let r =
                    secretd_api::pb::etcdserverpb::maintenance_client::MaintenanceClient::new(ch)
                        .hash(secretd_api::pb::etcdserverpb::HashRequest {})
                        .await
                        .unwrap()
                        .into_inner();
                out.push((r.hash, r.header.unwrap().revision));
            }
            out
        }
    };
    let deadline = Instant::now() + crate::common::secs(10);
    let mut h = hashes(&c).await;
    while h.iter().any(|x| *x != h[0]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h = hashes(&c).await;
    }
    assert!(h.iter().all(|x| *x == h[0]) && h[0].0 != 0, "{h:?}");
    c.ok(&["put", "k", "v2"]);
    let deadline = Instant::now() + crate::common::secs(10);
    let mut h2 = hashes(&c).await;
    while h2.iter().any(|x| *x != h2[0]) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h2 = hashes(&c).await;
    }
    assert!(h2.iter().all(|x| *x == h2[0]), "{h2:?}");
    assert_ne!(h2[0].0, h[0].0);
    let etcd35 = crate::common::etcd35_bin("etcdctl");
    for bin in [etcdctl_bin(), etcd35] {
        for form in ["http://", ""] {
            let eps: Vec<String> = (0..3).map(|i| format!("{form}{}", c.endpoint(i))).collect();
            let eps = eps.join(",");
            let run = |eps: &str, args: &[&str]| {
                Command::new(&bin)
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={eps}"))
                    .args(["--command-timeout=5s", "--dial-timeout=3s"])
                    .args(args)
                    .output()
                    .unwrap()
            };
            for args in [
                vec!["endpoint", "status"],
                vec!["endpoint", "status", "-w", "json"],
                vec!["endpoint", "hashkv"],
                vec!["endpoint", "health"],
                vec!["member", "list", "-w", "table"],
                vec!["defrag"],
                vec!["get", "k"],
                vec!["--insecure-transport=true", "get", "k"],
                vec!["user", "list"],
                vec!["role", "list"],
                vec!["--insecure-transport=true", "member", "list", "-w", "table"],
            ] {
                let out = run(&eps, &args);
                assert!(
                    out.status.success(),
                    "{} --endpoints={eps} {args:?}: {}",
                    bin.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            // move-leader goes to the leader's endpoint.
            let leader = c.wait_leader(crate::common::secs(15)).await;
            let to = if leader == 1 {
                c.member_id(2).await
            } else {
                target.clone()
            };
            let out = run(
                &format!("{form}{}", c.endpoint(leader)),
                &["move-leader", &to],
            );
            assert!(
                out.status.success(),
                "{} move-leader with {form:?}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
