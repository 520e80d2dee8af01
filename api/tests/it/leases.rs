//! Leases through Debian's etcdctl and across a leader change.

use std::time::{Duration, Instant};

use crate::common::Cluster;

fn lease_id(grant_output: &str) -> String {
    // "lease 694d5765fc71500b granted with TTL(10s)"
    grant_output
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_attach_keepalive_revoke_and_expire() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let out = c.ok(&["lease", "grant", "30"]);
    assert!(out.contains("granted with TTL(30s)"), "{out}");
    let id = lease_id(&out);
    c.ok(&["put", "l/a", "1", &format!("--lease={id}")]);
    c.ok(&["put", "l/b", "2", &format!("--lease={id}")]);
    let ttl = c.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(30s)") && ttl.contains("attached keys([l/a l/b])"),
        "{ttl}"
    );
    assert!(c.ok(&["lease", "list"]).contains(&id));
    assert!(c
        .ok(&["lease", "keep-alive", "--once", &id])
        .contains("keepalived with TTL(30)"));
    // Revoke: both keys go, at one revision.
    let rev_before = crate::common::header_revision(&c.ok(&["get", "l/a", "-w", "json"]));
    assert!(c.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(c.ok(&["get", "l/", "--prefix"]), "");
    let rev_after = crate::common::header_revision(&c.ok(&["get", "x", "-w", "json"]));
    assert_eq!(
        rev_after,
        rev_before + 1,
        "revoke deletes all its keys in one revision"
    );
    assert!(c
        .ok(&["lease", "timetolive", &id])
        .contains("already expired"));
    // Unknown leases are refused with etcd's error.
    let out = c.etcdctl(&["put", "l/c", "3", "--lease=1234"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: requested lease not found"));

    // Expiry without keep-alive: the minimum TTL (2 s here) then deletion.
    let id = lease_id(&c.ok(&["lease", "grant", "1"]));
    assert!(
        c.ok(&["lease", "timetolive", &id])
            .contains("granted with TTL(2s)"),
        "TTL raised to the minimum"
    );
    c.ok(&["put", "l/short", "x", &format!("--lease={id}")]);
    let deadline = Instant::now() + crate::common::secs(15);
    while !c.ok(&["get", "l/short"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "key of an expired lease still present"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_change_does_not_expire_leases_early() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let t0 = Instant::now();
    let id = lease_id(&c.ok(&["lease", "grant", "8"]));
    c.ok(&["put", "lc/k", "v", &format!("--lease={id}")]);
    std::thread::sleep(crate::common::secs(3));
    c.kill9(leader);
    let survivors: Vec<String> = c.running().iter().map(|i| c.endpoint(*i)).collect();
    let eps = survivors.join(",");
    c.wait_leader(crate::common::secs(15)).await;
    // Past the original expiry (t0 + 8 s): the new leader gave the lease a
    // full TTL when it took over, so the key is still there.
    let until = t0 + crate::common::secs(9);
    if Instant::now() < until {
        std::thread::sleep(until - Instant::now());
    }
    let out = c.etcdctl_at(&eps, &["get", "lc/k"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lc/k\nv\n",
        "lease expired early across the leader change"
    );
    // Keep-alives through the new leader keep it; without them it expires.
    let out = c.etcdctl_at(&eps, &["lease", "keep-alive", "--once", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("keepalived"));
    let deadline = Instant::now() + crate::common::secs(25);
    loop {
        let out = c.etcdctl_at(&eps, &["get", "lc/k"]);
        if out.stdout.is_empty() && out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lease never expired under the new leader"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
