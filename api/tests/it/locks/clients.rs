//! Other clients on the same keys: etcdctl 3.5.1's `lock` and `elect`
//! (built by hand through KV and Watch), and the `etcd-client` crate.

use std::process::{Command, Stdio};

use secretd_client::pb::v3electionpb::election_client::ElectionClient;
use secretd_client::pb::v3lockpb::{lock_client::LockClient, UnlockRequest};

use crate::common::{etcd35_bin, secs, Cluster};

use super::{answer, campaign_req, grant, keys_in_line, leader_req, lock_req, resign_req};

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
