//! What Lock and Election refuse: etcd auth, the reserved range, and
//! every bound on waiters, observers, names and keys.

use std::time::Duration;

use secretd_client::pb::etcdserverpb::{auth_client::AuthClient, AuthenticateRequest};
use secretd_client::pb::v3electionpb::{
    election_client::ElectionClient, CampaignRequest, LeaderKey, LeaderRequest, ResignRequest,
};
use secretd_client::pb::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use tonic::{Code, Status};

use crate::common::{secs, Cluster};
use crate::etcdctl::http;

use super::{
    base64_of, campaign_req, err_of, eventually, grant, leader_req, lock_req, proclaim_req,
    resign_req,
};

/// With etcd auth on, each step needs what a client doing it by hand
/// needs (write on the key, read on the election or lock), errors come as
/// etcd's (code Unknown, etcd's text); the reserved range stays out of
/// reach of every user, root included.
#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_follow_etcd_auth_and_the_reserved_range() {
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
        &["role", "add", "ro"],
        &["role", "grant-permission", "ro", "read", "/ro/", "--prefix"],
        &["user", "add", "u:upw"],
        &["user", "grant-role", "u", "app"],
        &["user", "add", "r:rpw"],
        &["user", "grant-role", "r", "ro"],
        &["auth", "enable"],
    ] {
        c.ok(args);
    }
    let ch = c.channel(0).await;
    let token = async |name: &str, pw: &str| {
        AuthClient::new(ch.clone())
            .authenticate(AuthenticateRequest {
                name: name.into(),
                password: pw.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    };
    let (tu, tr, troot) = (
        token("u", "upw").await,
        token("r", "rpw").await,
        token("root", "rootpw").await,
    );
    let with = |t: &str| {
        let t: tonic::metadata::MetadataValue<_> = t.parse().unwrap();
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("token", t.clone());
            Ok::<_, Status>(req)
        }
    };
    let mut lock_u = LockClient::with_interceptor(ch.clone(), with(&tu));
    let mut elect_u = ElectionClient::with_interceptor(ch.clone(), with(&tu));
    let mut elect_r = ElectionClient::with_interceptor(ch.clone(), with(&tr));
    let mut lock_root = LockClient::with_interceptor(ch.clone(), with(&troot));
    let mut elect_root = ElectionClient::with_interceptor(ch.clone(), with(&troot));
    let denied = (Code::Unknown, "etcdserver: permission denied".to_string());

    // Lease 0: the service grants the session's lease itself.
    let held = lock_u
        .lock(lock_req("/app/l", 0))
        .await
        .unwrap()
        .into_inner();
    assert!(held.key.starts_with(b"/app/l/"), "{:?}", held.key);
    lock_u
        .unlock(UnlockRequest { key: held.key })
        .await
        .unwrap();
    assert_eq!(err_of(lock_u.lock(lock_req("/other/l", 0)).await), denied);
    assert_eq!(
        err_of(elect_u.campaign(campaign_req("/other/e", 0, "v")).await),
        denied
    );
    let won = elect_u
        .campaign(campaign_req("/app/e", 0, "v"))
        .await
        .unwrap()
        .into_inner();
    assert!(won.leader.is_some());
    // Read-only: may watch and ask, not campaign.
    assert_eq!(
        err_of(elect_r.leader(leader_req("/ro/e")).await),
        (Code::Unknown, "election: no leader".to_string())
    );
    elect_r.observe(leader_req("/ro/e")).await.unwrap();
    assert_eq!(
        err_of(elect_r.campaign(campaign_req("/ro/e", 0, "v")).await),
        denied
    );
    assert_eq!(
        err_of(elect_r.observe(leader_req("/app/e")).await.map(|_| ())),
        denied
    );
    // A stream outlives an auth change, not the permission it needs.
    let mut watching = elect_r
        .observe(leader_req("/ro/e"))
        .await
        .unwrap()
        .into_inner();
    c.ok(&[
        "--user",
        "root:rootpw",
        "role",
        "revoke-permission",
        "ro",
        "/ro/",
        "--prefix",
    ]);
    elect_root
        .campaign(campaign_req("/ro/e", 0, "v"))
        .await
        .unwrap();
    let ended = tokio::time::timeout(secs(10), watching.message())
        .await
        .expect("the stream ends");
    assert_eq!(err_of(ended), denied);
    assert_eq!(err_of(elect_r.leader(leader_req("/app/e")).await), denied);
    assert_eq!(
        err_of(
            elect_r
                .resign(ResignRequest {
                    leader: won.leader.clone(),
                })
                .await
        ),
        denied
    );
    // Without a token: etcd's "user name is empty".
    assert_eq!(
        err_of(
            LockClient::new(ch.clone())
                .lock(lock_req("/app/l", 0))
                .await
        ),
        (Code::Unknown, "etcdserver: user name is empty".to_string())
    );

    // The reserved range, for root too.
    let reserved = |r: Result<_, Status>| {
        let (code, msg) = err_of(r);
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains("reserved for secretd"), "{msg}");
    };
    let name = b"\xff\xffsecretd".to_vec();
    reserved(
        lock_root
            .lock(LockRequest {
                name: name.clone(),
                lease: 0,
            })
            .await
            .map(|_| ()),
    );
    reserved(
        lock_root
            .unlock(UnlockRequest {
                key: b"\xff\xffsecretd/x".to_vec(),
            })
            .await
            .map(|_| ()),
    );
    reserved(
        elect_root
            .leader(LeaderRequest { name: name.clone() })
            .await
            .map(|_| ()),
    );
    reserved(
        elect_root
            .observe(LeaderRequest { name: name.clone() })
            .await
            .map(|_| ()),
    );
    reserved(
        elect_root
            .campaign(CampaignRequest {
                name: name.clone(),
                lease: 0,
                value: vec![],
            })
            .await
            .map(|_| ()),
    );
    let inside = LeaderKey {
        name,
        key: b"\xff\xffsecretd/x".to_vec(),
        rev: 1,
        lease: 1,
    };
    reserved(
        elect_root
            .proclaim(proclaim_req(&inside, ""))
            .await
            .map(|_| ()),
    );
    reserved(elect_root.resign(resign_req(&inside)).await.map(|_| ()));
}

/// Past each limit: a name or key one byte too long, one Observe stream
/// and one waiting Lock past the member's counts; the places come back
/// when the streams and calls end.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_observers_names_and_keys_are_bounded() {
    use secretd_api::etcd::concurrency::{
        KEY_BYTES_MAX, NAME_BYTES_MAX, OBSERVERS_MAX, WAITERS_MAX,
    };
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let ch = c.channel(0).await;
    let mut lock = LockClient::new(ch.clone());
    let mut elect = ElectionClient::new(ch.clone());
    let lease = grant(&ch, 60).await;

    // Names and keys.
    let longest = "n".repeat(NAME_BYTES_MAX);
    let held = lock
        .lock(lock_req(&longest, lease))
        .await
        .unwrap()
        .into_inner();
    lock.unlock(UnlockRequest { key: held.key }).await.unwrap();
    let too_long = "n".repeat(NAME_BYTES_MAX + 1);
    let name_refused = (
        Code::InvalidArgument,
        format!(
            "etcdserver: lock name is {} bytes, longer than {NAME_BYTES_MAX}",
            NAME_BYTES_MAX + 1
        ),
    );
    assert_eq!(
        err_of(lock.lock(lock_req(&too_long, lease)).await),
        name_refused
    );
    for r in [
        err_of(elect.campaign(campaign_req(&too_long, lease, "v")).await),
        err_of(elect.leader(leader_req(&too_long)).await),
        err_of(elect.observe(leader_req(&too_long)).await.map(|_| ())),
    ] {
        assert_eq!(r.0, Code::InvalidArgument, "{}", r.1);
        assert!(r.1.contains("election name is"), "{}", r.1);
    }
    let key = vec![b'k'; KEY_BYTES_MAX + 1];
    let leader = LeaderKey {
        key: key.clone(),
        ..Default::default()
    };
    for r in [
        err_of(
            lock.unlock(UnlockRequest { key: key.clone() })
                .await
                .map(|_| ()),
        ),
        err_of(elect.proclaim(proclaim_req(&leader, "")).await.map(|_| ())),
        err_of(elect.resign(resign_req(&leader)).await.map(|_| ())),
    ] {
        assert_eq!(r.0, Code::InvalidArgument, "{}", r.1);
        assert!(r.1.contains("key is"), "{}", r.1);
    }
    lock.unlock(UnlockRequest {
        key: vec![b'k'; KEY_BYTES_MAX],
    })
    .await
    .unwrap();
    // The gateway answers the same refusal in its shape.
    let body = format!(
        r#"{{"name":"{}","lease":"{lease}"}}"#,
        base64_of(too_long.as_bytes())
    );
    let (code, text) = http(
        c.members[0].client_port,
        "POST",
        "/v3/lock/lock",
        &body,
        Duration::ZERO,
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("lock name is 4097 bytes"), "{text}");

    // Observe streams: the one past the count is refused, the places come
    // back once streams close.
    // Over several connections: one holds at most --max-concurrent-streams.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(c.channel(0).await);
    }
    let mut streams = Vec::with_capacity(OBSERVERS_MAX);
    for i in 0..OBSERVERS_MAX {
        let mut e = ElectionClient::new(channels[i % channels.len()].clone());
        streams.push(e.observe(leader_req("cap")).await.unwrap().into_inner());
    }
    let (code, msg) = err_of(elect.observe(leader_req("cap")).await.map(|_| ()));
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains(&format!("at most {OBSERVERS_MAX}")), "{msg}");
    drop(streams);
    eventually(
        "an Observe place once streams closed",
        secs(10),
        async || elect.observe(leader_req("cap")).await.is_ok(),
    )
    .await;

    // Waiters: WAITERS_MAX + 1 calls behind a holder (one lease, so one
    // key, many calls): exactly one is refused, at once, and the rest wait.
    let (holder, queued, other) = (
        grant(&ch, 60).await,
        grant(&ch, 60).await,
        grant(&ch, 60).await,
    );
    let held = lock
        .lock(lock_req("cap", holder))
        .await
        .unwrap()
        .into_inner();
    let mut waiters = Vec::with_capacity(WAITERS_MAX + 1);
    for i in 0..=WAITERS_MAX {
        let mut l = LockClient::new(channels[i % channels.len()].clone());
        waiters.push(tokio::spawn(async move {
            l.lock(lock_req("cap", queued)).await
        }));
    }
    eventually("the waiter past the count refused", secs(60), async || {
        waiters.iter().any(|w| w.is_finished())
    })
    .await;
    let i = waiters.iter().position(|w| w.is_finished()).unwrap();
    let (code, msg) = err_of(waiters.swap_remove(i).await.unwrap());
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    assert!(msg.contains(&format!("at most {WAITERS_MAX}")), "{msg}");
    // Every place is taken: a call for another lease is refused too.
    let (code, _) = err_of(lock.lock(lock_req("cap", other)).await);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a waiter ended while the lock was held"
    );
    lock.unlock(UnlockRequest { key: held.key }).await.unwrap();
    let all = futures::future::join_all(waiters);
    for w in tokio::time::timeout(secs(120), all)
        .await
        .expect("every waiter gets the lock once it is free")
    {
        assert_eq!(
            w.unwrap().unwrap().into_inner().key,
            format!("cap/{queued:x}").into_bytes()
        );
    }
    // Their places are free again.
    lock.unlock(UnlockRequest {
        key: format!("cap/{queued:x}").into_bytes(),
    })
    .await
    .unwrap();
    let got = tokio::time::timeout(secs(10), lock.lock(lock_req("cap", other)))
        .await
        .expect("a place and the lock once the waiters are done")
        .unwrap();
    assert_eq!(got.into_inner().key, format!("cap/{other:x}").into_bytes());
}
