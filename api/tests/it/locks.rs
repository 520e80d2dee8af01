//! etcd's Lock and Election services (`v3lockpb`, `v3electionpb`), which
//! client libraries' `lock()` and `campaign()` call: through the generated
//! gRPC clients and the JSON gateway, across members, against etcd auth
//! and the reserved range, past every limit, beside etcdctl 3.5.1's own
//! `lock` and `elect` (which build the same keys by hand, through KV and
//! Watch), and side by side with etcd 3.5.1.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretd_client::pb::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, lease_client::LeaseClient, AuthenticateRequest,
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use secretd_client::pb::v3electionpb::{
    election_client::ElectionClient, CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse,
    ProclaimRequest, ResignRequest,
};
use secretd_client::pb::v3lockpb::{lock_client::LockClient, LockRequest, UnlockRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::{etcd35_bin, secs, Cluster, Etcd};
use crate::etcdctl::{http, masked};

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    LeaseClient::new(ch.clone())
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id
}

async fn revoke(ch: &Channel, id: i64) {
    LeaseClient::new(ch.clone())
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("lease revoke");
}

/// The keys under `prefix`, oldest first.
async fn keys_under(ch: &Channel, prefix: &[u8]) -> Vec<Vec<u8>> {
    let r = KvClient::new(ch.clone())
        .range(RangeRequest {
            key: prefix.to_vec(),
            range_end: secretd_client::prefix_end(prefix),
            keys_only: true,
            sort_order: 1,  // ascend
            sort_target: 2, // create
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs.into_iter().map(|kv| kv.key).collect()
}

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

/// Waits (bounded) until `ok` holds.
async fn eventually(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `prefix` holds `n` keys: a waiter's key is in
/// line.
async fn keys_in_line(ch: &Channel, prefix: &[u8], n: usize) {
    let what = format!("{n} keys under {}", String::from_utf8_lossy(prefix));
    eventually(&what, secs(10), async || {
        keys_under(ch, prefix).await.len() == n
    })
    .await;
}

/// A spawned call's answer, within `secs(10)`.
async fn answer<T>(
    call: tokio::task::JoinHandle<Result<tonic::Response<T>, Status>>,
    what: &str,
) -> Result<T, Status> {
    tokio::time::timeout(secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        .expect("the call's task")
        .map(tonic::Response::into_inner)
}

fn lock_req(name: &str, lease: i64) -> LockRequest {
    LockRequest {
        name: name.as_bytes().to_vec(),
        lease,
    }
}

fn campaign_req(name: &str, lease: i64, value: &str) -> CampaignRequest {
    CampaignRequest {
        name: name.as_bytes().to_vec(),
        lease,
        value: value.as_bytes().to_vec(),
    }
}

fn leader_req(name: &str) -> LeaderRequest {
    LeaderRequest {
        name: name.as_bytes().to_vec(),
    }
}

fn proclaim_req(leader: &LeaderKey, value: &str) -> ProclaimRequest {
    ProclaimRequest {
        leader: Some(leader.clone()),
        value: value.as_bytes().to_vec(),
    }
}

fn resign_req(leader: &LeaderKey) -> ResignRequest {
    ResignRequest {
        leader: Some(leader.clone()),
    }
}

/// etcd's error for a failed call: code and message.
fn err_of<T>(r: Result<T, Status>) -> (Code, String) {
    match r {
        Ok(_) => panic!("succeeded where an error was expected"),
        Err(e) => (e.code(), e.message().to_string()),
    }
}

/// A child's stdout, line by line, through a thread: read with a deadline.
fn lines_of(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(secs(10)).expect("a line in time")
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

/// etcdctl 3.5.1's `lock` and `elect` build the same keys by hand (KV,
/// Watch, Lease): they and the services exclude each other and take
/// turns.
#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_and_elect_take_turns_with_the_services() {
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let ch = c.channel(0).await;
    let ctl = etcd35_bin("etcdctl");
    let spawn = |args: &[&str]| {
        Command::new(&ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", c.endpoint(0)))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // etcdctl holds, the service waits, etcdctl lets go on SIGINT.
    let mut holder = Kill(spawn(&["lock", "tl"]));
    let out = lines_of(holder.0.stdout.take().unwrap());
    let line = next_line(&out);
    assert!(line.starts_with("tl/"), "{line:?}");
    let lease = grant(&ch, 60).await;
    let mut lock = LockClient::new(ch.clone());
    let mut l2 = lock.clone();
    let waiter = tokio::spawn(async move { l2.lock(lock_req("tl", lease)).await });
    keys_in_line(&ch, b"tl/", 2).await;
    assert!(!waiter.is_finished(), "took etcdctl's lock");
    let sent = Command::new("kill")
        .args(["-INT", &holder.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let got = answer(waiter, "the service locks once etcdctl unlocks")
        .await
        .unwrap();
    // The service holds; etcdctl's command runs only after Unlock.
    let mut runner = Kill(spawn(&["lock", "tl", "echo", "ran-under-lock"]));
    keys_in_line(&ch, b"tl/", 2).await;
    assert!(
        runner.0.try_wait().unwrap().is_none(),
        "etcdctl took a held lock"
    );
    lock.unlock(UnlockRequest { key: got.key }).await.unwrap();
    let ran = lines_of(runner.0.stdout.take().unwrap());
    assert_eq!(next_line(&ran), "ran-under-lock");

    // `etcdctl elect -l` observes the service's campaign; etcdctl's own
    // campaign waits for the service's resignation.
    let mut elect = ElectionClient::new(ch.clone());
    let sl = grant(&ch, 60).await;
    let sk = elect
        .campaign(campaign_req("te", sl, "from-service"))
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    let mut listener = Kill(spawn(&["elect", "-l", "te"]));
    let heard = lines_of(listener.0.stdout.take().unwrap());
    assert_eq!(next_line(&heard).as_bytes(), sk.key.as_slice());
    assert_eq!(next_line(&heard), "from-service");
    let mut observe = elect.observe(leader_req("te")).await.unwrap().into_inner();
    assert_eq!(
        observe.message().await.unwrap().unwrap().kv.unwrap().value,
        b"from-service"
    );
    let _candidate = Kill(spawn(&["elect", "te", "from-etcdctl"]));
    keys_in_line(&ch, b"te/", 2).await;
    elect.resign(resign_req(&sk)).await.unwrap();
    let next = tokio::time::timeout(secs(10), observe.message())
        .await
        .expect("the service observes etcdctl's leadership")
        .unwrap()
        .unwrap();
    assert_eq!(next.kv.unwrap().value, b"from-etcdctl");
    assert!(next_line(&heard).starts_with("te/"));
    assert_eq!(next_line(&heard), "from-etcdctl");
}

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

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The same requests to etcd 3.5.1 and to secretd, through the JSON
/// gateway (each answer compared as JSON after masking cluster and member
/// IDs and terms) and through gRPC (codes and messages of the errors).
#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_answer_as_etcd_3_5_does() {
    let etcd = Etcd::start(&etcd35_bin("etcd"));
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let b = |s: &str| base64_of(s.as_bytes());
    let leader = |key: &str, rev: i64| {
        format!(
            r#"{{"name":"{}","key":"{}","rev":"{rev}","lease":"4660"}}"#,
            b("el"),
            b(key)
        )
    };
    let lock = |name: &str, lease: &str| format!(r#"{{"name":"{}","lease":"{lease}"}}"#, b(name));
    let named = |name: &str| format!(r#"{{"name":"{}"}}"#, b(name));
    let key = |k: &str| format!(r#"{{"key":"{}"}}"#, b(k));
    let campaign = |value: &str| {
        format!(
            r#"{{"name":"{}","lease":"4660","value":"{}"}}"#,
            b("el"),
            b(value)
        )
    };
    let proclaim = |rev: i64, value: &str| {
        format!(
            r#"{{"leader":{},"value":"{}"}}"#,
            leader("el/1234", rev),
            b(value)
        )
    };
    let resign = |rev: i64| format!(r#"{{"leader":{}}}"#, leader("el/1234", rev));
    let table: Vec<(&str, String)> = vec![
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"4660"}"#.into()),
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"4661"}"#.into()),
        ("/v3/lock/lock", lock("lk", "4660")),
        ("/v3/lock/lock", lock("lk", "4660")),
        ("/v3/lock/lock", lock("lk", "999")),
        ("/v3/lock/unlock", key("lk/1234")),
        ("/v3/lock/unlock", "{}".into()),
        ("/v3beta/lock/unlock", key("nothing")),
        ("/v3/election/leader", named("el")),
        ("/v3/election/campaign", campaign("v1")),
        ("/v3/election/campaign", campaign("v1b")),
        ("/v3/election/campaign", lock("el", "999")),
        ("/v3/election/leader", named("el")),
        ("/v3/election/proclaim", "{}".into()),
        ("/v3/election/proclaim", proclaim(1, "x")),
        ("/v3/election/proclaim", proclaim(4, "v2")),
        ("/v3/election/observe", named("el")),
        ("/v3/election/resign", "{}".into()),
        ("/v3/election/resign", r#"{"leader":{}}"#.into()),
        ("/v3/election/resign", resign(4)),
        ("/v3/election/resign", resign(4)),
        ("/v3/election/leader", named("el")),
        ("/v3/lock/lock", lock("w", "4660")),
    ];
    let sp = c.members[0].client_port;
    for (path, body) in &table {
        // Observe streams: what it says within a second.
        let read_for = if path.ends_with("observe") {
            secs(1)
        } else {
            Duration::ZERO
        };
        let theirs = http(etcd.client_port, "POST", path, body, read_for);
        let ours = http(sp, "POST", path, body, read_for);
        assert_eq!(
            (ours.0, masked(&ours.1)),
            (theirs.0, masked(&theirs.1)),
            "POST {path} {body}\n ours: {}\netcd's: {}",
            ours.1,
            theirs.1
        );
    }
    // A Lock that waits: answered once the holder unlocks, alike.
    let mut waiting = Vec::new();
    for port in [etcd.client_port, sp] {
        let body = format!(r#"{{"name":"{}","lease":"4661"}}"#, b("w"));
        waiting.push(std::thread::spawn(move || {
            http(port, "POST", "/v3/lock/lock", &body, secs(10))
        }));
    }
    for port in [etcd.client_port, sp] {
        let ch = secretd_client::channel(&format!("127.0.0.1:{port}"), None, None).unwrap();
        keys_in_line(&ch, b"w/", 2).await;
        let body = format!(r#"{{"key":"{}"}}"#, b("w/1234"));
        assert_eq!(
            http(port, "POST", "/v3/lock/unlock", &body, Duration::ZERO).0,
            200
        );
    }
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        (answers[1].0, masked(&answers[1].1)),
        (answers[0].0, masked(&answers[0].1)),
        "a waiting Lock: ours {}, etcd's {}",
        answers[1].1,
        answers[0].1
    );

    // gRPC: the same errors, with the same codes.
    let mut errors = Vec::new();
    for ep in [etcd.endpoint(), c.endpoint(0)] {
        let ch = secretd_client::channel(&ep, None, Some(secs(5))).unwrap();
        let (mut lock, mut elect) = (LockClient::new(ch.clone()), ElectionClient::new(ch));
        errors.push(vec![
            err_of(lock.lock(lock_req("g", 999)).await),
            err_of(lock.unlock(UnlockRequest::default()).await),
            err_of(elect.leader(leader_req("g")).await),
            err_of(elect.campaign(campaign_req("g", 999, "v")).await),
            err_of(elect.proclaim(ProclaimRequest::default()).await),
            err_of(elect.resign(ResignRequest::default()).await),
            err_of(
                elect
                    .proclaim(ProclaimRequest {
                        leader: Some(LeaderKey {
                            key: b"g/1".to_vec(),
                            rev: 5,
                            lease: 4660,
                            ..Default::default()
                        }),
                        value: vec![],
                    })
                    .await,
            ),
        ]);
    }
    assert_eq!(errors[1], errors[0], "ours, then etcd's");
}

/// The Rust client `etcd-client` (what issue 28's client tests run): its
/// `lock.rs` and `election.rs` examples' steps, and two of its clients
/// contending for one lock.
#[tokio::test(flavor = "multi_thread")]
async fn the_etcd_client_crate_locks_and_campaigns() {
    use etcd_client::{Client, LockOptions, ProclaimOptions, ResignOptions};
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let mut client = Client::connect([c.endpoint(0)], None).await.unwrap();

    // lock.rs: without a lease (the service grants one), then with one.
    let resp = client.lock("lock-test", None).await.unwrap();
    assert!(resp.key().starts_with(b"lock-test/"), "{:?}", resp.key());
    client.unlock(resp.key()).await.unwrap();
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let resp = client
        .lock("lock-test2", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap();
    assert_eq!(resp.key(), format!("lock-test2/{lease:x}").as_bytes());
    // A second client waits for it.
    let mut other = Client::connect([c.endpoint(0)], None).await.unwrap();
    let lease2 = other.lease_grant(60, None).await.unwrap().id();
    let waiter = tokio::spawn(async move {
        other
            .lock("lock-test2", Some(LockOptions::new().with_lease(lease2)))
            .await
    });
    let ch = c.channel(0).await;
    keys_in_line(&ch, b"lock-test2/", 2).await;
    assert!(!waiter.is_finished(), "two holders at once");
    client.unlock(resp.key()).await.unwrap();
    let got = tokio::time::timeout(secs(10), waiter)
        .await
        .expect("the second client locks once the first unlocks")
        .unwrap()
        .unwrap();
    assert_eq!(got.key(), format!("lock-test2/{lease2:x}").as_bytes());

    // election.rs: campaign, proclaim, observe, leader, resign.
    let lease = client.lease_grant(10, None).await.unwrap().id();
    let resp = client.campaign("myElection", "123", lease).await.unwrap();
    let leader = resp.leader().unwrap().clone();
    assert_eq!((leader.name(), leader.lease()), (&b"myElection"[..], lease));
    client
        .proclaim(
            "456",
            Some(ProclaimOptions::new().with_leader(leader.clone())),
        )
        .await
        .unwrap();
    let mut observe = client.observe(leader.name()).await.unwrap();
    let seen = tokio::time::timeout(secs(10), observe.message())
        .await
        .expect("observe answers")
        .unwrap()
        .unwrap();
    assert_eq!(seen.kv().unwrap().value(), b"456");
    let now = client.leader("myElection").await.unwrap();
    assert_eq!(now.kv().unwrap().key(), leader.key());
    client
        .resign(Some(ResignOptions::new().with_leader(leader)))
        .await
        .unwrap();
    let none = client.leader("myElection").await.unwrap_err();
    assert!(none.to_string().contains("election: no leader"), "{none}");
}
