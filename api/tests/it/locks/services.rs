//! Lock and Election through their gRPC clients: exclusion across clients
//! and members, leases freeing locks and waiters, and observers seeing
//! leaders in order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretd_client::pb::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest};
use secretd_client::pb::v3electionpb::{
    election_client::ElectionClient, LeaderKey, LeaderResponse,
};
use secretd_client::pb::v3lockpb::{lock_client::LockClient, UnlockRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::{secs, Cluster};

use super::{
    answer, campaign_req, err_of, eventually, grant, keys_in_line, keys_under, leader_req,
    lock_req, proclaim_req, resign_req, revoke,
};

/// One key's current kv, if any.
async fn get(
    kv: &mut KvClient<Channel>,
    key: &[u8],
) -> Option<secretd_client::pb::mvccpb::KeyValue> {
    let r = kv
        .range(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs.into_iter().next()
}

/// Behind a holder under `prefix`: a waiter (`wait` with a fresh lease)
/// whose lease is revoked ends at once with `expired`; one whose client
/// goes away takes its key back out of the line.
async fn waiters_leave_the_line<T: Send + 'static>(
    ch: &Channel,
    prefix: &[u8],
    wait: impl Fn(i64) -> tokio::task::JoinHandle<Result<tonic::Response<T>, Status>>,
    expired: &str,
) {
    let w = grant(ch, 60).await;
    let waiter = wait(w);
    keys_in_line(ch, prefix, 2).await;
    revoke(ch, w).await;
    let r = answer(waiter, "a waiter without a lease stops").await;
    assert_eq!(err_of(r), (Code::Unknown, expired.to_string()));
    let v = grant(ch, 60).await;
    let waiter = wait(v);
    keys_in_line(ch, prefix, 2).await;
    waiter.abort();
    keys_in_line(ch, prefix, 1).await;
}

/// Six clients, two per member, take one lock in turns: never two holders
/// at once, no lost update of the counter they share, and waiting (not
/// just the uncontended path) happened.
#[tokio::test(flavor = "multi_thread")]
async fn lock_excludes_across_clients_and_members() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 4;
    let c = Cluster::start(3);
    c.wait_leader(secs(15)).await;
    let inside = Arc::new(AtomicBool::new(false));
    let waited = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let ch = c.channel(i % 3).await;
        let (inside, waited) = (inside.clone(), waited.clone());
        tasks.push(tokio::spawn(async move {
            let lease = grant(&ch, 30).await;
            let (mut lock, mut kv) = (LockClient::new(ch.clone()), KvClient::new(ch.clone()));
            for _ in 0..ROUNDS {
                let got = lock.lock(lock_req("mx", lease)).await.unwrap().into_inner();
                assert_eq!(got.key, format!("mx/{lease:x}").into_bytes());
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let own = get(&mut kv, &got.key).await.unwrap();
                // Answered after a wait: a read later than the key's put.
                if got.header.unwrap().revision > own.create_revision {
                    waited.fetch_add(1, Ordering::Relaxed);
                }
                let counter = get(&mut kv, b"counter").await;
                let n: usize = counter
                    .map(|kv| String::from_utf8_lossy(&kv.value).parse().unwrap())
                    .unwrap_or(0);
                kv.put(PutRequest {
                    key: b"counter".to_vec(),
                    value: (n + 1).to_string().into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap();
                inside.store(false, Ordering::SeqCst);
                lock.unlock(UnlockRequest { key: got.key }).await.unwrap();
            }
            revoke(&ch, lease).await;
        }));
    }
    let all = futures::future::join_all(tasks);
    for t in tokio::time::timeout(secs(90), all)
        .await
        .expect("every client done in time")
    {
        t.unwrap();
    }
    let mut kv = KvClient::new(c.channel(0).await);
    let counter = get(&mut kv, b"counter").await.unwrap();
    assert_eq!(counter.value, (CLIENTS * ROUNDS).to_string().into_bytes());
    assert!(waited.load(Ordering::Relaxed) > 0, "no Lock ever waited");
    assert!(keys_under(&c.channel(1).await, b"mx/").await.is_empty());
}

/// A waiting Lock gets the lock when the holder's lease is revoked, when
/// it expires, and gives up at once ("mutex: session is expired") when
/// its own lease goes; a waiter whose client goes away takes its key back
/// out of the line. Campaigns alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_is_freed_by_its_lease_and_its_waiters_by_theirs() {
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let ch = c.channel(0).await;
    let mut lock = LockClient::new(ch.clone());

    // Revoked holder.
    let (a, b) = (grant(&ch, 60).await, grant(&ch, 60).await);
    lock.lock(lock_req("rv", a)).await.unwrap();
    let mut l2 = lock.clone();
    let waiter = tokio::spawn(async move { l2.lock(lock_req("rv", b)).await });
    keys_in_line(&ch, b"rv/", 2).await;
    assert!(!waiter.is_finished(), "took a held lock");
    revoke(&ch, a).await;
    let got = answer(
        waiter,
        "the waiter gets the lock once the holder's lease is revoked",
    )
    .await
    .unwrap();
    assert_eq!(got.key, format!("rv/{b:x}").into_bytes());

    // Expired holder: a lease of the shortest TTL, never renewed.
    let (x, y) = (grant(&ch, 2).await, grant(&ch, 60).await);
    lock.lock(lock_req("ex", x)).await.unwrap();
    let t0 = Instant::now();
    let got = tokio::time::timeout(secs(15), lock.lock(lock_req("ex", y)))
        .await
        .expect("the waiter gets the lock once the holder's lease expires")
        .unwrap()
        .into_inner();
    assert_eq!(got.key, format!("ex/{y:x}").into_bytes());
    assert!(
        t0.elapsed() >= Duration::from_millis(1_000),
        "{:?}",
        t0.elapsed()
    );

    // A waiter whose own lease is revoked stops at once, though the holder
    // stays; one whose client goes away takes its key back out of the line.
    let z = grant(&ch, 60).await;
    lock.lock(lock_req("gone", z)).await.unwrap();
    let l2 = lock.clone();
    let wait = |lease| {
        let mut l = l2.clone();
        tokio::spawn(async move { l.lock(lock_req("gone", lease)).await })
    };
    waiters_leave_the_line(&ch, b"gone/", wait, "mutex: session is expired").await;

    // The same for a campaign (etcd would answer one whose lease went as
    // the winner, once the leader left).
    let mut elect = ElectionClient::new(ch.clone());
    let lead = grant(&ch, 60).await;
    elect.campaign(campaign_req("ce", lead, "l")).await.unwrap();
    let wait = |lease| {
        let mut e = elect.clone();
        tokio::spawn(async move { e.campaign(campaign_req("ce", lease, "w")).await })
    };
    waiters_leave_the_line(&ch, b"ce/", wait, "election: session is expired").await;

    // Unlock deletes the key it is given; the same lease locks again.
    lock.unlock(UnlockRequest {
        key: format!("gone/{z:x}").into_bytes(),
    })
    .await
    .unwrap();
    assert!(keys_under(&ch, b"gone/").await.is_empty());
    let again = lock.lock(lock_req("gone", z)).await.unwrap().into_inner();
    let twice = lock.lock(lock_req("gone", z)).await.unwrap().into_inner();
    assert_eq!(
        again.key, twice.key,
        "locking twice with one lease is one hold"
    );
}

/// Everything an Observe stream (opened before any leader, on another
/// member) sees, in order: each leader, each proclamation, the next
/// leader after a resignation and after a lease ends; Leader, Proclaim
/// and Resign agree with it.
#[tokio::test(flavor = "multi_thread")]
async fn observe_sees_leaders_in_order() {
    let c = Cluster::start(3);
    c.wait_leader(secs(15)).await;
    let (ch0, ch1, ch2) = (c.channel(0).await, c.channel(1).await, c.channel(2).await);
    let mut obs = ElectionClient::new(ch2.clone())
        .observe(leader_req("ob"))
        .await
        .unwrap()
        .into_inner();
    let mut e0 = ElectionClient::new(ch0.clone());
    let mut e1 = ElectionClient::new(ch1.clone());
    assert_eq!(
        err_of(e1.leader(leader_req("ob")).await),
        (Code::Unknown, "election: no leader".to_string())
    );

    // Each answer is read before the next change: Observe promises the
    // newest value, not every one in between.
    let mut next = async || -> (String, i64, Vec<u8>) {
        let r: LeaderResponse = tokio::time::timeout(secs(10), obs.message())
            .await
            .expect("observe answers in time")
            .unwrap()
            .expect("observe goes on");
        let kv = r.kv.unwrap();
        assert!(r.header.unwrap().revision >= kv.mod_revision);
        (
            String::from_utf8(kv.value).unwrap(),
            kv.create_revision,
            kv.key,
        )
    };

    let la = grant(&ch0, 60).await;
    let a = e0
        .campaign(campaign_req("ob", la, "a1"))
        .await
        .unwrap()
        .into_inner();
    let a_key = a.leader.clone().unwrap();
    assert_eq!(a_key.key, format!("ob/{la:x}").into_bytes());
    assert_eq!((a_key.name.as_slice(), a_key.lease), (&b"ob"[..], la));
    assert_eq!(a_key.rev, a.header.unwrap().revision);
    assert_eq!(next().await, ("a1".into(), a_key.rev, a_key.key.clone()));

    let lb = grant(&ch1, 60).await;
    let mut e1b = e1.clone();
    let b = tokio::spawn(async move { e1b.campaign(campaign_req("ob", lb, "b1")).await });
    keys_in_line(&ch1, b"ob/", 2).await;

    e0.proclaim(proclaim_req(&a_key, "a2")).await.unwrap();
    assert_eq!(next().await, ("a2".into(), a_key.rev, a_key.key.clone()));
    let stale = LeaderKey {
        rev: a_key.rev + 1,
        ..a_key.clone()
    };
    assert_eq!(
        err_of(e0.proclaim(proclaim_req(&stale, "no")).await),
        (Code::Unknown, "election: not leader".to_string())
    );
    let now = e1.leader(leader_req("ob")).await.unwrap().into_inner();
    assert_eq!(now.kv.unwrap().value, b"a2");
    assert!(!b.is_finished(), "won while another leads");

    e0.resign(resign_req(&a_key)).await.unwrap();
    let b_key = answer(b, "the next campaigner leads once the leader resigns")
        .await
        .unwrap()
        .leader
        .unwrap();
    assert_eq!(b_key.key, format!("ob/{lb:x}").into_bytes());
    assert_eq!(next().await, ("b1".into(), b_key.rev, b_key.key.clone()));
    // Resigning again deletes nothing: the key is not the leader's any more.
    e0.resign(resign_req(&a_key)).await.unwrap();
    assert_eq!(keys_under(&ch0, b"ob/").await, vec![b_key.key.clone()]);

    revoke(&ch1, lb).await;
    eventually(
        "no leader once its lease is revoked",
        secs(10),
        async || e1.leader(leader_req("ob")).await.is_err(),
    )
    .await;
    let lc = grant(&ch2, 60).await;
    let cl = e0
        .campaign(campaign_req("ob", lc, "c1"))
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert_eq!(next().await, ("c1".into(), cl.rev, cl.key.clone()));
    // Campaigning again with the same lease: same key and place, the
    // value brought up to date.
    let again = e0
        .campaign(campaign_req("ob", lc, "c2"))
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert_eq!((&again.key, again.rev), (&cl.key, cl.rev));
    assert_eq!(next().await, ("c2".into(), cl.rev, cl.key.clone()));

    // A stream opened while a leader leads starts with it.
    let mut late = e1.observe(leader_req("ob")).await.unwrap().into_inner();
    let first = late.message().await.unwrap().unwrap().kv.unwrap();
    assert_eq!((first.key, first.value), (cl.key, b"c2".to_vec()));
}
