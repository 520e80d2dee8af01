//! The embeddable member (`secretd_api::embed`) in this test process: the
//! in-process client's KV, Watch and Lease; a restart on the same data
//! directory; the role matrix applied to in-process identities as to
//! certificates; and the embedded scheduler's flow with a real node agent
//! (root and FUSE, or it fails saying so). Members here keep the process's
//! umask and limits (`harden_process(false)`): tests share one process.

use std::path::Path;
use std::time::{Duration, Instant};

use secretd_api::embed::{mount, Config, EmbedError, EventKind, Member, Role};

use crate::common::{is_root, secretd_bin, secs};

async fn member(dir: &Path, client_urls: &[&str]) -> Member {
    let mut config = Config::new("embedded", dir).harden_process(false);
    if !client_urls.is_empty() {
        config = config.client_urls(client_urls);
    }
    let m = Member::start(config).await.expect("start");
    m.ready(secs(30)).await.expect("ready");
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_watch_and_leases_in_process_and_a_restart_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(&dir.path().join("m"), &[]).await;
    assert!(m.client_addrs().is_empty(), "no socket unless asked for");
    let c = m.client(Role::Admin);
    let mut w = c.watch(b"app/", true, 0).await.unwrap();
    let rev = c.put(b"app/a", b"1").await.unwrap();
    let got = c.get(b"app/a").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.mod_revision), (&b"1"[..], rev));
    let events = w.next().await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind, events[0].kv.key.as_slice()),
        (EventKind::Put, &b"app/a"[..])
    );
    // Compare-and-swap on the version.
    assert!(!c.put_if_version(b"app/a", b"2", 0).await.unwrap());
    assert!(c.put_if_version(b"app/a", b"2", 1).await.unwrap());
    assert_eq!(
        w.next().await.unwrap()[0].prev.as_ref().unwrap().value,
        b"1"
    );
    // A lease: renewed once, then revoked with its key.
    let lease = c.lease_grant(60).await.unwrap();
    c.put_with_lease(b"app/leased", b"x", lease.id)
        .await
        .unwrap();
    assert!(c.lease_keep_alive_once(lease.id).await.unwrap() > 0);
    c.lease_revoke(lease.id).await.unwrap();
    assert_eq!(c.get(b"app/leased").await.unwrap(), None);
    let err = c.lease_keep_alive_once(lease.id).await.unwrap_err();
    assert!(matches!(err, EmbedError::NotFound(_)), "{err:?}");
    assert_eq!(c.get_prefix(b"app/", 0).await.unwrap().len(), 1);
    assert_eq!(c.delete(b"app/a").await.unwrap(), 1);
    // The reserved range stays out of reach, as over the network.
    let err = c.put(b"\xff\xffsecretd/x", b"v").await.unwrap_err();
    assert!(!matches!(err, EmbedError::Stopped), "{err:?}");
    c.put(b"kept", b"across a restart").await.unwrap();
    m.stop().await.expect("stop");
    // Clients and watchers of a stopped member say so.
    assert!(matches!(c.get(b"kept").await, Err(EmbedError::Stopped)));
    assert!(matches!(w.next().await, Err(EmbedError::Stopped)));
    let m = member(&dir.path().join("m"), &[]).await;
    let kept = m.client(Role::Admin).get(b"kept").await.unwrap().unwrap();
    assert_eq!(kept.value, b"across a restart");
    m.stop().await.expect("second stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_process_identities_meet_the_same_role_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let m = member(&dir.path().join("m"), &[]).await;
    let admin = m.client(Role::Admin);
    let node = m.client(Role::Node("n1".into()));
    let anonymous = m.client(Role::Anonymous);
    admin
        .secret_create("s", b"v".to_vec(), Default::default())
        .await
        .unwrap();
    let dup = admin
        .secret_create("s", b"v".to_vec(), Default::default())
        .await;
    assert!(matches!(dup, Err(EmbedError::AlreadyExists(_))), "{dup:?}");
    let missing = admin.secret_inspect("nope").await;
    assert!(
        matches!(missing, Err(EmbedError::NotFound(_))),
        "{missing:?}"
    );
    // A node agent's identity: no admin call, no etcd call, as a node
    // certificate is refused them on the client port.
    let refused = [
        node.secret_create("t", b"v".to_vec(), Default::default())
            .await
            .err(),
        node.secret_inspect("s").await.err(),
        node.secret_rotate("s", b"w".to_vec()).await.err(),
        node.task_create("web.1", "n1", vec![mount("s", "s")], vec![])
            .await
            .err(),
        node.task_list("n1").await.err(),
        node.config_list("").await.err(),
        node.put(b"k", b"v").await.err(),
        node.watch(b"k", false, 0).await.err(),
        node.lease_grant(10).await.err(),
        anonymous.secret_list("").await.err(),
    ];
    for e in refused {
        assert!(matches!(e, Some(EmbedError::PermissionDenied(_))), "{e:?}");
    }
    // etcd's API is open to a client without a certificate, as on the wire.
    anonymous.put(b"k", b"v").await.unwrap();
    assert_eq!(admin.secret_list("").await.unwrap().len(), 1);
    // Too large for the wire is too large in process.
    let big = admin.put(b"big", &vec![0u8; 3 << 20]).await;
    assert!(
        matches!(big, Err(EmbedError::ResourceExhausted(_))),
        "{big:?}"
    );
    m.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn start_errors_are_types_a_program_can_match() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", busy.local_addr().unwrap());
    let config = Config::new("e", dir.path().join("a"))
        .harden_process(false)
        .client_urls(&[&url]);
    let err = Member::start(config).await.err();
    assert!(
        matches!(&err, Some(EmbedError::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse),
        "{err:?}"
    );
    let mut config = Config::new("e", dir.path().join("b")).harden_process(false);
    config.flags_mut().election_timeout = 200;
    let err = Member::start(config).await.err();
    assert!(
        matches!(&err, Some(EmbedError::Config(m)) if m.contains("--election-timeout")),
        "{err:?}"
    );
}

/// SIGTERM to the agent, and its exit.
fn terminate(agent: &mut std::process::Child) {
    // SAFETY: kill with a child's pid and a signal number.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let _ = agent.wait();
}

async fn served(path: &Path, want: &[u8], agent_log: &Path) {
    let deadline = Instant::now() + secs(20);
    while std::fs::read(path).ok().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{} never held {:?}; agent log:\n{}",
            path.display(),
            String::from_utf8_lossy(want),
            std::fs::read_to_string(agent_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The example's flow: an embedded member with a loopback client port, a
/// scheduler placing a task with a secret on node n1 in process, a real
/// agent serving the file, a rotation reaching it, and a clean stop.
#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_scheduler_places_a_secret_a_real_agent_serves() {
    assert!(is_root(), "the agent mounts FUSE: run this test as root");
    assert!(
        Path::new("/dev/fuse").exists(),
        "the agent needs /dev/fuse (modprobe fuse)"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = member(&dir.path().join("m"), &["http://127.0.0.1:0"]).await;
    let port = m.client_addrs()[0].port();
    let sched = m.client(Role::Admin);
    sched
        .secret_create("db-password", b"hunter2".to_vec(), Default::default())
        .await
        .unwrap();
    let task = sched.task_create(
        "web.1",
        "n1",
        vec![mount("db-password", "db-password")],
        vec![],
    );
    assert_eq!(task.await.unwrap().node, "n1");
    assert_eq!(sched.task_list("n1").await.unwrap().len(), 1);
    let (mnt, log) = (dir.path().join("mnt"), dir.path().join("agent.log"));
    let mut agent = std::process::Command::new(secretd_bin())
        .args(["agent", "--node", "n1", "--backend", "fuse", "--mount"])
        .arg(&mnt)
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let file = mnt.join("web.1/db-password");
    served(&file, b"hunter2", &log).await;
    assert_eq!(
        sched
            .secret_rotate("db-password", b"correct horse".to_vec())
            .await
            .unwrap(),
        2
    );
    served(&file, b"correct horse", &log).await;
    terminate(&mut agent);
    m.stop().await.expect("a clean stop once the agent is gone");
}
