//! The hostile tier (issue 27): one 3-member TLS cluster with a node agent
//! of each backend, attacked at once by every class the security reviews
//! found, each bounded in count and time, on loopback only:
//! - requests at and past the limits (a txn nested 50 deep, which once
//!   stopped every member for good; oversized puts; too many txn ops);
//! - silent connections from another source on every port (client, peer,
//!   metrics, the agents' health);
//! - stream floods (a node certificate opening agent streams past its
//!   share; many watch streams);
//! - a template bomb and a template whose error would echo secret text;
//! - a node state larger than one message;
//! - refused requests by the thousand (the log and audit flood);
//! - a half-closed watch stream;
//! - the local user `nobody`.
//!
//! Meanwhile a well-behaved admin writes and reads. The promises checked:
//! no member or agent stops; every one of the admin's requests is
//! answered, each within `VICTIM_LATENCY_MAX_MS`; the agents keep
//! delivering (a removal and a rotation reach the mounts); no secret text
//! in any log, audit line or `/health`; nothing acknowledged is lost.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretd_api::pb::etcdserverpb::{
    kv_client::KvClient, request_op, watch_client::WatchClient, watch_request::RequestUnion,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use secretd_api::pb::secretstore::{agent_client::AgentClient, AgentWatchRequest};

use crate::agent::{as_nobody, files_under, http_get, read, wait_for, Agent};
use crate::common::{free_port, Cluster};
use crate::floods::Flood;
use secretd_store::node::entry::nested_txn;

/// How long the attacks last.
const ATTACK_MS: u64 = 20_000;
/// The longest a well-behaved admin's request may take meanwhile. Stated
/// generously: CI machines are loaded, and the bound is about being
/// served at all (a starved member answers in tens of seconds, or never).
const VICTIM_LATENCY_MAX_MS: u128 = 5_000;
/// Secret text that must never appear in a log, an audit line or /health.
const SECRET_TEXTS: [&str; 4] = [
    "hunter2-TOPSECRET",
    "victim-secret-1",
    "victim-secret-2",
    "BIGSECRETBYTES",
];

fn put(key: &str, value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

/// Requests at and past the limits, `rounds` times; each must be refused
/// with INVALID_ARGUMENT (and none may be committed).
async fn limit_requests(c: &Cluster, rounds: usize) {
    let mut kv = KvClient::new(c.channel(1).await);
    let many = TxnRequest {
        success: (0..129)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(put(
                    &format!("ops{i}"),
                    b"v",
                ))),
            })
            .collect(),
        ..Default::default()
    };
    for _ in 0..rounds {
        for t in [nested_txn(50), nested_txn(33), many.clone()] {
            let e = kv.txn(t).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        let e = kv.put(put("big", &vec![b'x'; 2 << 20])).await.unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange
            ),
            "{e:?}"
        );
    }
}

/// A node certificate asking for what it may not: refusals by the thousand.
async fn refusal_flood(c: &Cluster, count: usize) {
    let mut kv = KvClient::new(c.channel_as(0, "node-n2"));
    for _ in 0..count {
        let e = kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
}

/// A node certificate opening agent streams past its share: the share is
/// served, the rest refused saying why. Held until `stop`.
async fn agent_stream_flood(c: &Cluster, stop: Arc<AtomicBool>) {
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        let mut a = AgentClient::new(c.channel_as(0, "node-n1"));
        match a
            .watch(AgentWatchRequest {
                node: "n1".into(),
                parts: true,
            })
            .await
        {
            Ok(s) => held.push(s),
            Err(e) if e.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(e) => panic!("agent stream: {e:?}"),
        }
    }
    assert!(refused >= 45, "only {refused} of 50 streams refused");
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Watch streams by the hundred on one connection each, each with a few
/// watchers, held until `stop`.
async fn watch_flood(c: &Cluster, stop: Arc<AtomicBool>) {
    let mut held = Vec::new();
    for conn in 0..3 {
        let channel = c.channel(conn % 3).await;
        for _ in 0..100 {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            for w in 0..5 {
                let _ = tx
                    .send(WatchRequest {
                        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                            key: format!("flood/{w}").into_bytes(),
                            ..Default::default()
                        })),
                    })
                    .await;
            }
            if let Ok(s) = WatchClient::new(channel.clone())
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
            {
                held.push((tx, s));
            }
        }
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A watch whose client closes its sending side after creating: events
/// must keep coming (D20). Returns once one arrived.
async fn half_closed_watch(c: &Cluster) {
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"half".to_vec(),
            ..Default::default()
        })),
    };
    let mut s = WatchClient::new(c.channel(2).await)
        .watch(tokio_stream::iter(vec![create]))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().expect("created").created);
    KvClient::new(c.channel(0).await)
        .put(put("half", b"after the half-close"))
        .await
        .unwrap();
    let m = tokio::time::timeout(crate::common::secs(30), s.message())
        .await
        .expect("an event after the half-close")
        .unwrap()
        .expect("the stream still open");
    assert_eq!(m.events.len(), 1);
}

/// The local user `nobody`: reads nothing of a member's data or an
/// agent's mount, and its idle connections to the agents' /health hold
/// nothing for long.
fn as_the_local_nobody(c: &Cluster, mounts: &[&Path], health_ports: &[u16]) {
    for m in &c.members {
        let out = as_nobody(&["ls", m.data_dir.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "nobody listed {}",
            m.data_dir.display()
        );
    }
    for mount in mounts {
        let out = as_nobody(&["ls", mount.to_str().unwrap()]);
        assert!(!out.status.success(), "nobody listed {}", mount.display());
    }
    let mut held = Vec::new();
    for port in health_ports {
        for _ in 0..50 {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", *port)) {
                held.push(s);
            }
        }
    }
    drop(held);
}

/// The logs and audit files under `dir`, read whole.
fn texts_under(dir: &Path) -> Vec<(String, String)> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|x| x == "log" || x == "1")
                || p.to_string_lossy().contains("audit")
        })
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            (p.display().to_string(), text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_tier_leaves_the_cluster_serving() {
    assert!(
        crate::common::is_root() && Path::new("/dev/fuse").exists(),
        "the hostile tier needs root and /dev/fuse (it mounts both agent backends)"
    );
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let mut c = Cluster::prepare_with(
        3,
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--audit-log-max-bytes",
            "4194304",
        ],
        true,
    );
    let mut metrics_ports = Vec::new();
    for i in 0..3 {
        let port = free_port();
        c.members[i].metrics_port = Some(port);
        metrics_ports.push(port);
        c.spawn(i);
    }
    c.wait_leader(crate::common::secs(30)).await;

    // What the agents serve: a task per node with a secret that rotates,
    // a victim task to remove, a template bomb and a leaky template.
    c.sctl(
        &["secret", "create", "app_pw", "-"],
        Some(b"victim-secret-1"),
    );
    c.sctl(
        &["secret", "create", "big", "-"],
        Some(&[b"BIGSECRETBYTES".repeat(28_000), b"!".to_vec()].concat()),
    );
    c.sctl(
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "bomb",
            "-",
        ],
        Some("{{secret \"big\"}}".repeat(1_500).as_bytes()),
    );
    c.sctl(
        &[
            "secret",
            "create",
            "--template-driver",
            "golang",
            "leaky",
            "-",
        ],
        Some(b"x\n{{if hunter2-TOPSECRET}}"),
    );
    for (node, task) in [("n1", "app.1"), ("n2", "app.2"), ("n1", "gone.1")] {
        c.sctl(
            &[
                "task",
                "create",
                task,
                "--node",
                node,
                "--secret",
                "source=app_pw,target=pw",
            ],
            None,
        );
    }
    c.sctl(
        &[
            "task",
            "create",
            "bomb.1",
            "--node",
            "n2",
            "--secret",
            "source=big,target=big",
            "--config",
            "source=bomb,target=/bomb.conf",
        ],
        None,
    );
    c.sctl(
        &[
            "task",
            "create",
            "leak.1",
            "--node",
            "n2",
            "--secret",
            "source=leaky,target=leak",
        ],
        None,
    );
    // A node state past one message for n1 (D10).
    let env = format!("BIG={}", "e".repeat(60_000));
    for i in 0..40 {
        let name = format!("env.{i}");
        c.sctl(
            &["task", "create", &name, "--node", "n1", "--env", &env],
            None,
        );
    }

    let ca = c.tls.as_ref().unwrap().join("ca.pem").display().to_string();
    let start_agent = |node: &str, backend: &str, port: u16| {
        let (crt, key) = c.cert(&format!("node-{node}"));
        let mount = c.dir.path().join(format!("mnt-{node}"));
        let args = vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".into(),
            crt,
            "--key".into(),
            key,
            "--listen-metrics-urls".into(),
            format!("http://127.0.0.1:{port}"),
        ];
        let log = c.dir.path().join(format!("agent-{node}.log"));
        (
            Agent::start_as(&c, node, &mount, backend, &log, args),
            mount,
        )
    };
    let health_ports = [free_port(), free_port()];
    let (mut fuse_agent, fuse_mnt) = start_agent("n1", "fuse", health_ports[0]);
    let (mut tmpfs_agent, tmpfs_mnt) = start_agent("n2", "tmpfs", health_ports[1]);
    wait_for("both agents serving", crate::common::secs(30), || {
        read(&fuse_mnt.join("app.1/pw")) == Some(b"victim-secret-1".to_vec())
            && read(&fuse_mnt.join("gone.1/pw")).is_some()
            && fuse_mnt.join("env.39").is_dir()
            && read(&tmpfs_mnt.join("app.2/pw")) == Some(b"victim-secret-1".to_vec())
    });

    // The attacks, all at once, each bounded.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood_ports: Vec<u16> = c
        .members
        .iter()
        .flat_map(|m| [m.client_port, m.peer_port])
        .collect();
    flood_ports.extend(&metrics_ports);
    flood_ports.extend(health_ports);
    let flood = Flood::start(&flood_ports, 16, Duration::from_millis(ATTACK_MS));
    let c = Arc::new(c);
    let attacks = {
        let (c1, c2, c3, c4, s1, s2) = (
            c.clone(),
            c.clone(),
            c.clone(),
            c.clone(),
            stop.clone(),
            stop.clone(),
        );
        vec![
            tokio::spawn(async move { limit_requests(&c1, 50).await }),
            tokio::spawn(async move { refusal_flood(&c2, 5_000).await }),
            tokio::spawn(async move { agent_stream_flood(&c3, s1).await }),
            tokio::spawn(async move { watch_flood(&c4, s2).await }),
        ]
    };

    // The well-behaved admin, meanwhile: every request answered in time.
    let mut kv = KvClient::new(c.channel(0).await);
    let started = Instant::now();
    let (mut acked, mut slowest_ms) = (Vec::new(), 0u128);
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(ATTACK_MS) {
        let key = format!("victim/{i:05}");
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(VICTIM_LATENCY_MAX_MS as u64) * crate::common::time_scale(),
            kv.put(put(&key, key.as_bytes())),
        )
        .await;
        let took = t.elapsed().as_millis();
        slowest_ms = slowest_ms.max(took);
        match r {
            Ok(Ok(_)) => acked.push(key),
            other => panic!(
                "the admin's put {key} was not served within {VICTIM_LATENCY_MAX_MS} ms: {other:?}"
            ),
        }
        if i == 20 {
            half_closed_watch(&c).await;
            as_the_local_nobody(&c, &[&fuse_mnt, &tmpfs_mnt], &health_ports);
            // The agents keep delivering: a removal and a rotation.
            c.sctl(&["task", "rm", "gone.1"], None);
            c.sctl(
                &["secret", "rotate", "app_pw", "-"],
                Some(b"victim-secret-2"),
            );
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in attacks {
        a.await.expect("an attack's own checks");
    }
    drop(flood);
    println!(
        "hostile tier: {} admin puts, slowest {slowest_ms} ms",
        acked.len()
    );

    // Delivery went on: the removal and the rotation reached both mounts.
    wait_for(
        "the removal and the rotation",
        crate::common::secs(30),
        || {
            !fuse_mnt.join("gone.1").exists()
                && read(&fuse_mnt.join("app.1/pw")) == Some(b"victim-secret-2".to_vec())
                && read(&tmpfs_mnt.join("app.2/pw")) == Some(b"victim-secret-2".to_vec())
        },
    );
    // The bomb and the leak failed their own tasks, saying why, and only them.
    let (_, health) = http_get(health_ports[1], "/health");
    assert!(
        health.contains("bomb.1") && health.contains("larger than"),
        "{health}"
    );
    assert!(health.contains("leak.1"), "{health}");
    assert!(!health.contains("app.2"), "{health}");
    // No member, no agent stopped.
    let mut c = Arc::try_unwrap(c).unwrap_or_else(|_| panic!("attacks still hold the cluster"));
    for i in 0..3 {
        assert!(
            c.exited(i).is_none(),
            "member {i} stopped:\n{}",
            c.logs_tail()
        );
    }
    assert!(
        fuse_agent.running(),
        "the FUSE agent stopped:\n{}",
        fuse_agent.logs()
    );
    assert!(
        tmpfs_agent.running(),
        "the tmpfs agent stopped:\n{}",
        tmpfs_agent.logs()
    );
    // Nothing acknowledged is lost, on any member.
    for m in 0..3 {
        let mut kv = KvClient::new(c.channel(m).await);
        let got = kv
            .range(RangeRequest {
                key: b"victim/".to_vec(),
                range_end: b"victim0".to_vec(),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let keys: Vec<String> = got
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        assert_eq!(keys, acked, "member {m} lost acknowledged writes");
    }
    // No secret text anywhere it could leak to.
    let (_, fuse_health) = http_get(health_ports[0], "/health");
    let mut places = texts_under(c.dir.path());
    places.extend(texts_under(audit_dir.path()));
    places.push(("n1 /health".into(), fuse_health));
    places.push(("n2 /health".into(), health));
    for (place, text) in &places {
        for secret in SECRET_TEXTS {
            assert!(!text.contains(secret), "{secret:?} in {place}");
        }
    }
    let audit_bytes: u64 = ["audit.log", "audit.log.1"]
        .iter()
        .map(|f| std::fs::metadata(audit_dir.path().join(f)).map_or(0, |m| m.len()))
        .sum();
    assert!(
        audit_bytes <= 4 << 20,
        "the audit log holds {audit_bytes} bytes"
    );
}
