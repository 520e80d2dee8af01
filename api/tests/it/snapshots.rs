//! Raft snapshots: a follower that falls behind a log truncation catches up
//! by a streamed snapshot, and then equals the others (HashKV), also after a
//! restart from snapshot plus log.

use std::time::{Duration, Instant};

use crate::common::Cluster;
use secretd_api::pb::etcdserverpb::{
    auth_client::AuthClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    AuthRoleAddRequest, AuthUserAddRequest, AuthUserGetRequest, AuthUserGrantRoleRequest,
    CompactionRequest, DeleteRangeRequest, HashKvRequest, LeaseGrantRequest,
    LeaseTimeToLiveRequest, PutRequest,
};

async fn hashes(c: &Cluster) -> Vec<(usize, u32, i64)> {
    let mut out = Vec::new();
    for i in c.running() {
        let mut m = MaintenanceClient::new(c.channel(i).await);
        // A member still starting does not answer yet: not converged.
        match m.hash_kv(HashKvRequest { revision: 0 }).await {
            Ok(h) => {
                let h = h.into_inner();
                out.push((i, h.hash, h.hash_revision));
            }
            Err(_) => out.push((i, 0, -1)),
        }
    }
    out
}

/// Waits until every running member reports the same hash at the same
/// revision.
async fn converge(c: &Cluster, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let hs = hashes(c).await;
        if hs.windows(2).all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2) {
            return hs[0].1;
        }
        assert!(
            Instant::now() < deadline,
            "members never converged: {hs:?}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lagging_follower_catches_up_by_snapshot() {
    let mut c = Cluster::start_with(
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "20",
        ],
    );
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let follower = (leader + 1) % 3;
    c.kill9(follower);
    let mut kv = c.kv(leader).await;
    for i in 0..600u32 {
        let req = PutRequest {
            key: format!("s/{:03}", i % 250).into(),
            value: format!("v{i}").into(),
            ..Default::default()
        };
        kv.put(req).await.unwrap();
    }
    kv.delete_range(DeleteRangeRequest {
        key: "s/1".into(),
        range_end: "s/2".into(),
        prev_kv: false,
    })
    .await
    .unwrap();
    kv.compact(CompactionRequest {
        revision: 300,
        physical: true,
    })
    .await
    .unwrap();
    // A lease granted meanwhile can only reach the follower in the snapshot.
    let mut leases = LeaseClient::new(c.channel(leader).await);
    let lease = leases
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    kv.put(PutRequest {
        key: "leased".into(),
        value: "x".into(),
        lease,
        ..Default::default()
    })
    .await
    .unwrap();
    // etcd users and roles made meanwhile, too.
    let mut auth = AuthClient::new(c.channel(leader).await);
    auth.user_add(AuthUserAddRequest {
        name: "carol".into(),
        password: "pw".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    auth.role_add(AuthRoleAddRequest { name: "ops".into() })
        .await
        .unwrap();
    auth.user_grant_role(AuthUserGrantRoleRequest {
        user: "carol".into(),
        role: "ops".into(),
    })
    .await
    .unwrap();
    assert!(
        std::fs::read_dir(c.members[leader].data_dir.join("snap"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no snapshot file before anyone needs one"
    );

    c.spawn(follower);
    let h1 = converge(&c, crate::common::secs(30)).await;
    let log = std::fs::read_to_string(&c.members[follower].log).unwrap();
    assert!(
        log.contains("installed snapshot"),
        "the follower caught up without a snapshot:\n{log}"
    );
    let mut on_follower = LeaseClient::new(c.channel(follower).await);
    let ttl = on_follower
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ttl.granted_ttl, ttl.keys),
        (600, vec![b"leased".to_vec()]),
        "lease lost in the snapshot"
    );
    let roles = AuthClient::new(c.channel(follower).await)
        .user_get(AuthUserGetRequest {
            name: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert_eq!(roles, ["ops"], "etcd users lost in the snapshot");
    let leader_log = std::fs::read_to_string(&c.members[leader].log).unwrap();
    assert!(leader_log.contains("snapshot delivered"), "{leader_log}");

    // More writes after the install are replicated as log entries.
    for i in 0..50u32 {
        kv.put(PutRequest {
            key: format!("t/{i}").into(),
            value: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let h2 = converge(&c, crate::common::secs(20)).await;
    assert_ne!(h1, h2);

    // Restarted from its snapshot plus log, it still equals the others.
    c.kill9(follower);
    c.spawn(follower);
    c.wait_leader(crate::common::secs(15)).await;
    assert_eq!(converge(&c, crate::common::secs(20)).await, h2);
}
