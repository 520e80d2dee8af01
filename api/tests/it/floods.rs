//! Connection floods against a member's listeners (issue 27: D11 on the
//! peer and client ports, D19 on the metrics port), on loopback only and
//! bounded in count and time. The attacker's sockets bind to 127.0.0.66
//! before connecting: Linux routes all of 127.0.0.0/8 to `lo`, so it is
//! another source than the members and clients, which use 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretd_api::pb::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{free_port, Cluster};
use crate::tls::rustls_client;

/// Where the attacker's connections come from.
pub(crate) const ATTACKER: [u8; 4] = [127, 0, 0, 66];

/// Silent TCP connections from `ATTACKER` to member ports, `per_port` at
/// once on each, each reopened (after 100 ms) when the member closes it.
/// Ends by itself at its deadline, or when dropped.
pub(crate) struct Flood {
    /// Per port: connections the member closed.
    closed: Arc<Vec<AtomicUsize>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    pub(crate) fn start(ports: &[u16], per_port: usize, lasting: Duration) -> Flood {
        let closed: Arc<Vec<AtomicUsize>> =
            Arc::new(ports.iter().map(|_| AtomicUsize::new(0)).collect());
        let until = tokio::time::Instant::now() + lasting;
        let mut tasks = Vec::new();
        for (i, &port) in ports.iter().enumerate() {
            for _ in 0..per_port {
                let closed = closed.clone();
                tasks.push(tokio::spawn(async move {
                    while tokio::time::Instant::now() < until {
                        if let Some(mut s) = silent_connection(port).await {
                            if !closed_by(&mut s, until).await {
                                return;
                            }
                            closed[i].fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }));
            }
        }
        Flood { closed, tasks }
    }

    /// Waits until the member closed at least `n` connections on every
    /// port, so that each of its caps for this source is reached.
    async fn wait_closed(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let counts: Vec<usize> = self
                .closed
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            if counts.iter().all(|c| *c >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the flood never reached the members' caps within {within:?}: closed {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn silent_connection(port: u16) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind((ATTACKER, 0).into()).ok()?;
    let connect = s.connect(([127, 0, 0, 1], port).into());
    tokio::time::timeout(crate::common::secs(1), connect)
        .await
        .ok()?
        .ok()
}

/// Reads `s` (sending nothing) until the other side closes it: true, or
/// false if it is still open at `until`.
async fn closed_by<S: AsyncRead + Unpin>(s: &mut S, until: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(until, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// How many of `conns` the other side closes within `within`.
async fn count_closed<S: AsyncRead + Unpin>(conns: &mut [S], within: Duration) -> usize {
    let until = tokio::time::Instant::now() + within;
    let closed = futures::future::join_all(conns.iter_mut().map(|s| closed_by(s, until))).await;
    closed.into_iter().filter(|c| *c).count()
}

/// A raft stream's hello to member `to_index`'s peer port over TLS with
/// `cert`, from 127.0.0.1: the member's answer, or why there was none.
async fn member_hello(
    c: &Cluster,
    to_index: usize,
    cert: &str,
    (from, cluster_id, to): (u64, u64, u64),
) -> Result<(u8, String), String> {
    let cfg = Arc::new(rustls_client(c, cert));
    let tcp = TcpStream::connect(("127.0.0.1", c.members[to_index].peer_port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(crate::common::raft_hello(&mut s, from, cluster_id, to).await)
}

/// (member id, cluster id) of member `i`.
async fn ids(c: &Cluster, i: usize) -> (u64, u64) {
    let st = MaintenanceClient::new(c.channel(i).await)
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let h = st.header.expect("a header");
    (h.member_id, h.cluster_id)
}

/// D11: an admin's certificate holds no slot of the peer port (20
/// connections that finished their handshake: all but the refusing lane's
/// 4 are closed at once, those 4 after 5 s without a request). Then 48
/// silent connections from one source, reopened when closed, on every
/// member's peer port and on member 1's client port: members still
/// handshake (each of 5 raft stream hellos answered within 5 s), admins
/// keep writing through the flooded client port (each put within
/// etcdctl's 10 s), and member 3, restarted during the flood, rejoins (it
/// serves a write made through member 2 within 30 s).
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_flood_starves_no_member() {
    let mut c = Cluster::prepare_with(3, &[], true);
    // 256 descriptors: 48 client connections, 12 client handshakes, 3 per
    // source (`conn::Limits::clients`); the peer port's budget is fixed.
    c.nofile_max = Some(256);
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(crate::common::secs(20)).await;
    let (n1, cluster_id) = ids(&c, 0).await;
    let (n2, _) = ids(&c, 1).await;

    let cfg = Arc::new(rustls_client(&c, "admin"));
    let mut admins = Vec::new();
    for _ in 0..20 {
        let tcp = TcpStream::connect(("127.0.0.1", c.members[0].peer_port))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connect = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp);
        let s = tokio::time::timeout(crate::common::secs(5), connect)
            .await
            .expect("a handshake within 5 s")
            .expect("the handshake succeeds: the refusal comes after it");
        admins.push(s);
    }
    let at_once = count_closed(&mut admins, Duration::from_millis(2_500)).await;
    assert!(
        at_once >= 20 - 4,
        "an admin's certificate held {} peer connections",
        20 - at_once
    );
    assert_eq!(
        count_closed(&mut admins, crate::common::secs(15)).await,
        20,
        "the refusing lane's connections were kept"
    );
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(
        log.contains("which admits member certificates only"),
        "no log line for the admin on the peer port"
    );

    let mut ports: Vec<u16> = c.members.iter().map(|m| m.peer_port).collect();
    ports.push(c.members[0].client_port);
    let flood = Flood::start(&ports, 48, crate::common::secs(120));
    flood.wait_closed(8, crate::common::secs(30)).await;
    for attempt in 0..5 {
        let t = Instant::now();
        let hello = member_hello(&c, 0, "member-n2", (n2, cluster_id, n1));
        let r = tokio::time::timeout(crate::common::secs(5), hello).await;
        assert!(
            matches!(&r, Ok(Ok((0, _)))),
            "member hello {attempt} during the flood: {r:?} after {:?}",
            t.elapsed()
        );
    }
    for i in 0..3 {
        let put = c.etcdctl_at(&c.endpoint(0), &["put", &format!("during{i}"), "v"]);
        let err = String::from_utf8_lossy(&put.stderr);
        assert!(
            put.status.success(),
            "put {i} through the flooded client port: {err}"
        );
    }
    c.kill9(2);
    c.spawn(2);
    // A put may time out while the restarted member rejoins under the
    // flood (on a loaded machine); the same put again is harmless.
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        let put = c.etcdctl_at(&c.endpoint(1), &["put", "after-restart", "v"]);
        if put.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no put through member 2 within 30 s: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        let out = c.etcdctl_at(
            &c.endpoint(2),
            &[
                "get",
                "after-restart",
                "--consistency=s",
                "--print-value-only",
            ],
        );
        if String::from_utf8_lossy(&out.stdout) == "v\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member did not rejoin within 30 s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(flood);
}

/// D19: 300 idle connections to the metrics port of a member with 256
/// descriptors. Past the metrics listener's cap they are closed at once;
/// the client port keeps serving (each of 5 puts within etcdctl's 10 s),
/// the cap is logged once rather than per refusal, the idle connections
/// are closed after the idle timeout (3 s here; bound: 30 s), and the
/// metrics port serves again.
#[tokio::test(flavor = "multi_thread")]
async fn a_metrics_flood_starves_neither_clients_nor_storage() {
    let metrics_port = free_port();
    let url = format!("http://127.0.0.1:{metrics_port}");
    let mut c = Cluster::prepare(
        1,
        &[
            "--listen-metrics-urls",
            &url,
            "--idle-connection-timeout",
            "3s",
        ],
    );
    c.nofile_max = Some(256);
    c.spawn(0);
    c.wait_leader(crate::common::secs(20)).await;
    let mut held = Vec::new();
    for _ in 0..300 {
        let connect = TcpStream::connect(("127.0.0.1", metrics_port));
        if let Ok(Ok(s)) = tokio::time::timeout(crate::common::secs(1), connect).await {
            held.push(s);
        }
    }
    for i in 0..5 {
        c.ok(&["put", &format!("k{i}"), "v"]);
    }
    assert_eq!(c.ok(&["get", "k4", "--print-value-only"]), "v\n");
    assert_eq!(
        count_closed(&mut held, crate::common::secs(30)).await,
        held.len(),
        "idle metrics connections were kept"
    );
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
    let cap_lines = log
        .lines()
        .filter(|l| l.contains("refused a connection") && l.contains("metrics"))
        .count();
    // One line, or two if this test took over a minute (one a minute).
    assert!(
        (1..=2).contains(&cap_lines),
        "{cap_lines} lines for the metrics cap:\n{log}"
    );
    let health = http_get(metrics_port, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

/// A plain HTTP/1.1 GET on loopback: the whole response, within 10 s.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(crate::common::secs(10), s.read_to_end(&mut out))
        .await
        .expect("a response within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
