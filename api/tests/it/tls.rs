//! Mutual TLS and roles on a 3-member cluster whose client and peer URLs are
//! all https: only certificates from the cluster's CA get in, each only as
//! far as its role allows, and each refusal is logged clearly.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use secretd_api::pb::secretstore::{agent_client::AgentClient, FetchRequest};
use secretd_api::tls::pki::{save, Ca};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// etcdctl against member 0 with the given certificate files.
fn etcdctl_with(
    c: &Cluster,
    ca: &str,
    cert: Option<(&str, &str)>,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::common::etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", c.endpoint(0)))
        .arg(format!("--cacert={ca}"))
        .arg("--command-timeout=3s")
        .arg("--dial-timeout=2s");
    if let Some((crt, key)) = cert {
        cmd.arg(format!("--cert={crt}")).arg(format!("--key={key}"));
    }
    cmd.args(args).output().unwrap()
}

fn wait_log(c: &Cluster, needle: &str) {
    let deadline = Instant::now() + crate::common::secs(10);
    while !c.logs_tail().contains(needle)
        && !std::fs::read_to_string(&c.members[0].log)
            .unwrap_or_default()
            .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "no log line with {needle:?}:\n{}",
            std::fs::read_to_string(&c.members[0].log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("refused"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_clusters_certificates_get_in_each_as_far_as_its_role() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let c = Cluster::start_tls(3, &["--audit-log", audit.to_str().unwrap()]);
    c.wait_leader(crate::common::secs(20)).await;
    let certs = c.tls.clone().unwrap();
    let ca = certs.join("ca.pem").display().to_string();
    let (admin, admin_key) = c.cert("admin");

    // The admin's certificate works with Debian's etcdctl, and with secretctl.
    let out = etcdctl_with(&c, &ca, Some((&admin, &admin_key)), &["put", "k", "v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(c.ok(&["get", "k", "--print-value-only"]), "v\n");
    c.sctl(&["secret", "create", "db_pw", "-"], Some(b"hunter2"));

    // No client certificate: refused, and the member says why.
    let out = etcdctl_with(&c, &ca, None, &["get", "k"]);
    assert!(!out.status.success());
    wait_log(&c, "reason=peer sent no certificates");

    // A certificate from another CA: refused.
    let other = Ca::new("another CA").unwrap();
    let dir = c.dir.path().join("other");
    std::fs::create_dir_all(&dir).unwrap();
    let (oc, ok) = save(&dir, "admin", &other.issue("admin", None, false).unwrap()).unwrap();
    let out = etcdctl_with(
        &c,
        &ca,
        Some((oc.to_str().unwrap(), ok.to_str().unwrap())),
        &["get", "k"],
    );
    assert!(!out.status.success());
    wait_log(&c, "UnknownIssuer");

    // An expired certificate from the right CA: refused.
    let ca_key = certs.join("ca-key.pem");
    assert!(ca_key.exists());
    let (ec, ek) = expired_admin(&c, &dir);
    let out = etcdctl_with(&c, &ca, Some((&ec, &ek)), &["get", "k"]);
    assert!(!out.status.success());
    wait_log(&c, "invalid peer certificate: certificate expired");

    // One not valid yet: refused, without claiming it expired.
    let (fc, fk) = save(
        &dir,
        "future",
        &ca_for(&c).issue_not_yet_valid("admin").unwrap(),
    )
    .unwrap();
    let out = etcdctl_with(
        &c,
        &ca,
        Some((fc.to_str().unwrap(), fk.to_str().unwrap())),
        &["get", "k"],
    );
    assert!(!out.status.success());
    assert!(!stderr(&out).contains("expired"), "{}", stderr(&out));
    wait_log(&c, "the client certificate is not valid yet");

    // The wrong role: a node agent may not use the KV or Secrets APIs.
    let (n1, n1_key) = c.cert("node-n1");
    let out = etcdctl_with(&c, &ca, Some((&n1, &n1_key)), &["get", "k"]);
    assert!(
        stderr(&out).contains("node agent n1 may not call /etcdserverpb.KV/Range"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(crate::common::secretctl_bin())
        .args([
            "--endpoints",
            &c.endpoint(0),
            "--cacert",
            &ca,
            "--cert",
            &n1,
            "--key",
            &n1_key,
            "secret",
            "ls",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stderr(&out),
        "Error response from daemon: rpc error: code = PermissionDenied desc = node agent n1 may not call /secretstore.v1.Secrets/List: it is for admin certificates only\n"
    );
    // Plain HTTP to a member that serves TLS: said so, with the fix.
    let http = format!("http://{}", c.endpoint(0));
    let out = std::process::Command::new(crate::common::secretctl_bin())
        .args(["--endpoints", &http, "secret", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "cannot talk to secretd at {http}: it serves TLS; use --endpoints https://{} with --cacert (and --cert/--key)\n",
            c.endpoint(0)
        )
    );
    // Peers only speak raft: the admin cannot use the peer port.
    let peer = format!("https://127.0.0.1:{}", c.members[0].peer_port);
    let tls = secretd_client::ClientTls::load(
        Path::new(&ca),
        Some(Path::new(&admin)),
        Some(Path::new(&admin_key)),
    )
    .unwrap();
    let ch = secretd_client::channel(&peer, Some(&tls), Some(crate::common::secs(5))).unwrap();
    let err = secretd_api::pb::raftpb::raft_client::RaftClient::new(ch)
        .cluster_info(secretd_api::pb::raftpb::ClusterInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "admin may not call /secretd.raft.v1.Raft/ClusterInfo: it is for cluster members only (the peer port)"
    );

    // Agents: n2 cannot fetch what only n1's task uses; it can once the
    // task moves to n2, and loses it when the task moves back.
    let secret_id = c
        .sctl(&["secret", "inspect", "-f", "{{.ID}}", "db_pw"], None)
        .trim()
        .to_string();
    let fetch = |node: &'static str, cert: &'static str| {
        let mut a = AgentClient::new(c.channel_as(0, cert));
        let secret_id = secret_id.clone();
        async move {
            a.fetch(FetchRequest {
                node: node.into(),
                task: "web.1".into(),
                secret: true,
                object_id: secret_id,
                version: 1,
            })
            .await
        }
    };
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", "db_pw",
        ],
        None,
    );
    assert_eq!(
        fetch("n1", "node-n1").await.unwrap().into_inner().data,
        b"hunter2"
    );
    let e = fetch("n1", "node-n2").await.unwrap_err();
    assert_eq!(e.message(), "this certificate is for node n2, not n1");
    let e = fetch("n2", "node-n2").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    c.sctl(&["task", "rm", "web.1"], None);
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n2", "--secret", "db_pw",
        ],
        None,
    );
    assert_eq!(
        fetch("n2", "node-n2").await.unwrap().into_inner().data,
        b"hunter2"
    );
    assert_eq!(
        fetch("n1", "node-n1").await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    c.sctl(&["task", "rm", "web.1"], None);
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", "db_pw",
        ],
        None,
    );
    assert_eq!(
        fetch("n2", "node-n2").await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    assert_eq!(
        fetch("n1", "node-n1").await.unwrap().into_inner().data,
        b"hunter2"
    );
}

/// The cluster's development CA, as an issuer.
fn ca_for(c: &Cluster) -> Ca {
    Ca::load(
        &c.tls.as_ref().unwrap().join("ca.pem"),
        &c.tls.as_ref().unwrap().join("ca-key.pem"),
    )
    .unwrap()
}

/// An admin certificate from the cluster's CA that expired in 2020.
fn expired_admin(c: &Cluster, dir: &Path) -> (String, String) {
    // The dev CA's key is on disk; re-create an issuer from it.
    let ca = Ca::load(
        &c.tls.as_ref().unwrap().join("ca.pem"),
        &c.tls.as_ref().unwrap().join("ca-key.pem"),
    )
    .unwrap();
    let (crt, key) = save(dir, "expired", &ca.issue("admin", None, true).unwrap()).unwrap();
    (crt.display().to_string(), key.display().to_string())
}

/// Bytes in, bytes out: lets a test call any gRPC path with any message.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Calls `path` with one empty message; the status it ends with (Ok when
/// it answered a message, or was still streaming after 3 s).
async fn call_raw(ch: tonic::transport::Channel, path: &'static str) -> tonic::Status {
    let mut g = tonic::client::Grpc::new(ch);
    let run = async {
        g.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let req = tonic::Request::new(futures::stream::iter(vec![Vec::<u8>::new()]));
        let mut resp = g
            .streaming(req, http::uri::PathAndQuery::from_static(path), Raw)
            .await?
            .into_inner();
        resp.message().await?;
        Ok::<_, tonic::Status>(())
    };
    match tokio::time::timeout(crate::common::secs(3), run).await {
        Ok(Ok(())) | Err(_) => tonic::Status::ok(""),
        Ok(Err(s)) => s,
    }
}

/// D1: each role × each RPC, over the wire, on both ports: the role matrix
/// refuses exactly what `authz::decide` says, and the admin cannot fetch a
/// secret's plaintext through the agent API (audited as a denial).
#[tokio::test(flavor = "multi_thread")]
async fn role_matrix_over_the_wire() {
    use secretd_api::authz::{decide, Decision, MATRIX};
    use secretd_api::identity::Role;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let c = Cluster::start_tls(1, &["--audit-log", audit.to_str().unwrap()]);
    c.wait_leader(crate::common::secs(20)).await;
    let certs = c.tls.clone().unwrap();
    let ca = certs.join("ca.pem");
    let roles = [
        ("admin", Role::Admin),
        ("node-n1", Role::Node("n1".into())),
        ("member-n1", Role::Member("n1".into())),
    ];
    let mut checked = 0;
    for port in [c.members[0].client_port, c.members[0].peer_port] {
        for (cert, role) in &roles {
            let (crt, key) = c.cert(cert);
            let tls =
                secretd_client::ClientTls::load(&ca, Some(Path::new(&crt)), Some(Path::new(&key)))
                    .unwrap();
            let ch = secretd_client::channel(
                &format!("127.0.0.1:{port}"),
                Some(&tls),
                Some(crate::common::secs(5)),
            )
            .unwrap();
            for (path, _) in MATRIX {
                let st = call_raw(ch.clone(), path).await;
                let gate_denied = st.code() == tonic::Code::PermissionDenied
                    && st.message().contains(" may not call ");
                let expect_denied = matches!(decide(role, path), Decision::Deny(_));
                assert_eq!(
                    gate_denied, expect_denied,
                    "{role} × {path} on port {port}: {st:?}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 3 * MATRIX.len());

    // The attack: the admin assigns a task and fetches its secret.
    let id = c
        .sctl(&["secret", "create", "db_pw", "-"], Some(b"hunter2"))
        .trim()
        .to_string();
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", "db_pw",
        ],
        None,
    );
    let e = AgentClient::new(c.channel_as(0, "admin"))
        .fetch(FetchRequest {
            node: "n1".into(),
            task: "web.1".into(),
            secret: true,
            object_id: id.clone(),
            version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = AgentClient::new(c.channel_as(0, "admin"))
        .watch(secretd_api::pb::secretstore::AgentWatchRequest {
            node: "n1".into(),
            parts: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let log = std::fs::read_to_string(&audit).unwrap();
    let denial = log
        .lines()
        .find(|l| l.contains("/secretstore.v1.Agent/Fetch"))
        .unwrap_or_else(|| panic!("no audit line for the admin's fetch:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(denial).unwrap();
    assert_eq!(v["who"], "admin");
    assert_eq!(v["outcome"], "denied");
    assert!(
        !log.contains("\"outcome\":\"ok\"") || !log.contains("secret.deliver"),
        "{log}"
    );
    // The node itself still gets it.
    let got = AgentClient::new(c.channel_as(0, "node-n1"))
        .fetch(FetchRequest {
            node: "n1".into(),
            task: "web.1".into(),
            secret: true,
            object_id: id,
            version: 1,
        })
        .await
        .unwrap();
    assert_eq!(got.into_inner().data, b"hunter2");
}

/// D8: a node fetches exactly the versions its tasks serve now: the
/// current one when a task follows, the pinned one when it pins.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_fetches_only_the_versions_its_tasks_serve() {
    let c = Cluster::start_tls(1, &[]);
    c.wait_leader(crate::common::secs(20)).await;
    let id = c
        .sctl(&["secret", "create", "db_pw", "-"], Some(b"v1"))
        .trim()
        .to_string();
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", "db_pw",
        ],
        None,
    );
    c.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"v2"));
    let fetch = |task: &'static str, version: u64| {
        let mut a = AgentClient::new(c.channel_as(0, "node-n1"));
        let id = id.clone();
        async move {
            a.fetch(FetchRequest {
                node: "n1".into(),
                task: task.into(),
                secret: true,
                object_id: id,
                version,
            })
            .await
            .map(|r| r.into_inner().data)
        }
    };
    assert_eq!(fetch("web.1", 2).await.unwrap(), b"v2");
    let e = fetch("web.1", 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("version 1"), "{}", e.message());
    c.sctl(
        &[
            "task",
            "create",
            "pinned.1",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,version=1",
        ],
        None,
    );
    assert_eq!(fetch("pinned.1", 1).await.unwrap(), b"v1");
    assert_eq!(
        fetch("pinned.1", 2).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
}

/// D7: a member's certificate speaks only as that member, on every peer
/// RPC that names a sender.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_certificate_speaks_only_as_its_member() {
    use secretd_api::pb::raftpb::{raft_client::RaftClient, FetchKekRequest, RaftBatch};
    let c = Cluster::start_tls(3, &[]);
    c.wait_leader(crate::common::secs(20)).await;
    // The first secret makes KEK generation 1.
    c.sctl(&["secret", "create", "s", "-"], Some(b"x"));
    let id = |hex: String| u64::from_str_radix(&hex, 16).unwrap();
    let (n2, n3) = (id(c.member_id(1).await), id(c.member_id(2).await));
    let certs = c.tls.clone().unwrap();
    let (crt, key) = c.cert("member-n2");
    let tls = secretd_client::ClientTls::load(
        &certs.join("ca.pem"),
        Some(Path::new(&crt)),
        Some(Path::new(&key)),
    )
    .unwrap();
    let peer = format!("127.0.0.1:{}", c.members[0].peer_port);
    let ch = secretd_client::channel(&peer, Some(&tls), Some(crate::common::secs(5))).unwrap();
    let mut raft = RaftClient::new(ch);
    let info = raft
        .cluster_info(secretd_api::pb::raftpb::ClusterInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let kek = |from: u64| FetchKekRequest {
        cluster_id: info.cluster_id,
        from,
        generation: 1,
    };
    // As itself: the key. As n3: refused, and the member logs who tried.
    raft.fetch_kek(kek(n2)).await.unwrap();
    let e = raft.fetch_kek(kek(n3)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "the certificate of member n2 may not speak as member {n3:x}"
        )),
        "{}",
        e.message()
    );
    // A raft batch that claims to come from n3.
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.from = n3;
    m.to = id(c.member_id(0).await);
    let bytes = protobuf::Message::write_to_bytes(&m).unwrap();
    let batch = RaftBatch {
        cluster_id: info.cluster_id,
        from: n3,
        messages: vec![bytes.into()],
    };
    let e = raft
        .send(futures::stream::iter(vec![batch]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    wait_log(
        &c,
        "refused peer traffic: the certificate is another member's",
    );
    // The raft stream without gRPC (`peer::raw`) binds the certificate the
    // same way, and admits members only.
    let me = id(c.member_id(0).await);
    let (code, why) = raw_tls_hello(&c, "member-n2", n3, info.cluster_id, me).await;
    assert_eq!(code, 1);
    assert!(
        why.contains(&format!(
            "the certificate of member n2 may not speak as member {n3:x}"
        )),
        "{why}"
    );
    let (code, why) = raw_tls_hello(&c, "member-n2", n2, info.cluster_id, me).await;
    assert_eq!((code, why.as_str()), (0, ""));
    let (code, why) = raw_tls_hello(&c, "node-n1", n2, info.cluster_id, me).await;
    assert_eq!(code, 1);
    assert!(why.contains("it is for cluster members only"), "{why}");
    // Unknown IDs are printed in hex, and said to be.
    let e = raft.fetch_kek(kek(0x1092)).await.unwrap_err();
    assert_eq!(
        e.message(),
        "member 1092 (hex ID) is not a member of this cluster"
    );
}

/// D4: a node agent's certificate (the least privileged role) opens more
/// connections than a member with `ulimit -n 256` has descriptors for, and
/// sends nothing on them. The admin's writes, and raft, keep working; the
/// idle connections are closed after `--idle-connection-timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_starves_neither_admins_nor_raft() {
    let mut c = Cluster::prepare_with(3, &["--idle-connection-timeout", "4s"], true);
    c.nofile_max = Some(256);
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(crate::common::secs(20)).await;
    let cfg = rustls_client(&c, "node-n1");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let addr = format!("127.0.0.1:{}", c.members[0].client_port);
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(tcp) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        if let Ok(Ok(s)) =
            tokio::time::timeout(crate::common::secs(2), connector.connect(name, tcp)).await
        {
            held.push(s);
        }
    }
    // The admin writes through the flooded member; the write commits only
    // if raft still runs between the members.
    for i in 0..5 {
        let out = c.etcdctl(&["put", &format!("k{i}"), "v"]);
        assert!(out.status.success(), "put {i}: {}", stderr(&out));
    }
    assert_eq!(c.ok(&["get", "k4", "--print-value-only"]), "v\n");
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("refused a connection"), "no refusal logged");
    // Idle connections are closed: every held stream reads EOF or an error.
    tokio::time::sleep(crate::common::secs(6)).await;
    let mut open = 0;
    for mut s in held {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await;
        // Ok(Ok(0)) is EOF; Ok(Err) a reset; a timeout means still open.
        // A few bytes may arrive first (the server's HTTP/2 settings).
        loop_until_closed(&mut s, r, &mut open).await;
    }
    assert_eq!(open, 0, "idle connections were kept open");
}

async fn loop_until_closed(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    first: Result<std::io::Result<usize>, tokio::time::error::Elapsed>,
    open: &mut usize,
) {
    use tokio::io::AsyncReadExt;
    let mut r = first;
    for _ in 0..16 {
        match r {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Err(_) => {
                *open += 1;
                return;
            }
            Ok(Ok(_)) => {
                let mut b = [0u8; 256];
                r = tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await;
            }
        }
    }
    *open += 1;
}

/// A rustls client presenting `cert` from the cluster's dev CA.
/// A raft stream's hello over TLS with `cert`: the member's answer.
async fn raw_tls_hello(
    c: &Cluster,
    cert: &str,
    from: u64,
    cluster_id: u64,
    to: u64,
) -> (u8, String) {
    let cfg = std::sync::Arc::new(rustls_client(c, cert));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", c.members[0].peer_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    crate::common::raft_hello(&mut s, from, cluster_id, to).await
}

pub(crate) fn rustls_client(c: &Cluster, cert: &str) -> rustls::ClientConfig {
    let certs = c.tls.clone().unwrap();
    let (crt, key) = c.cert(cert);
    let mut roots = rustls::RootCertStore::empty();
    for ca in secretd_api::tls::read_certs(&certs.join("ca.pem")).unwrap() {
        roots.add(ca).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            secretd_api::tls::read_certs(Path::new(&crt)).unwrap(),
            secretd_api::tls::read_key(Path::new(&key)).unwrap(),
        )
        .unwrap()
}

/// One HTTP/1.1 request over TLS with a certificate of the cluster's dev
/// CA: (status, body).
async fn https_post(c: &Cluster, cert: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = rustls_client(c, cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(c.endpoint(0)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(crate::common::secs(5), s.read_to_end(&mut out)).await;
    crate::common::http_response(&out)
}

/// etcd's JSON gateway over HTTPS (HTTP/1.1, ALPN) keeps the role matrix:
/// the admin's certificate works, a node agent's gets etcd's JSON error
/// shape with 403, and the reserved range stays out of reach.
#[tokio::test(flavor = "multi_thread")]
async fn the_json_gateway_keeps_the_role_matrix() {
    let c = Cluster::start_tls(1, &[]);
    c.wait_leader(crate::common::secs(20)).await;
    let put = r#"{"key":"Zm9v","value":"YmFy"}"#;
    let (code, body) = https_post(&c, "admin", "/v3/kv/put", put).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = https_post(&c, "admin", "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
    assert_eq!(code, 200);
    assert!(body.contains(r#""value":"YmFy""#), "{body}");
    let (code, body) = https_post(&c, "node-n1", "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
    assert_eq!(code, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(v["code"], 7);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("node agent n1 may not call /etcdserverpb.KV/Range"),
        "{body}"
    );
    // Nothing the matrix does not name is reachable, spelled however; the
    // public paths are.
    for path in [
        "/v3/kv/%72ange",
        "/v3/kv/range/",
        "/v3//kv/range",
        "/v3/auth/nope",
    ] {
        let (code, body) = https_post(&c, "node-n1", path, r#"{"key":"Zm9v"}"#).await;
        assert_eq!(code, 404, "{path}: {body}");
    }
    // curl over HTTP/2: a refusal reads the request body before it
    // answers, so the client gets the 403 or 404, not a stream reset
    // (it did 1 time in 3 before).
    let certs = c.tls.clone().unwrap();
    let (n1, n1_key) = c.cert("node-n1");
    for (path, want) in [("/v3/kv/range", "403"), ("/v3/kv/nope", "404")] {
        for _ in 0..10 {
            let out = std::process::Command::new("curl")
                .args(["-s", "--http2", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg("--cacert")
                .arg(certs.join("ca.pem"))
                .args(["--cert", &n1, "--key", &n1_key, "-d", r#"{"key":"Zm9v"}"#])
                .arg(format!("https://{}{path}", c.endpoint(0)))
                .output()
                .expect("curl (Debian's curl package)");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                want,
                "{path}: {}",
                stderr(&out)
            );
        }
    }
    let (code, body) = https_post(&c, "node-n1", "/health", "").await;
    assert_eq!(code, 405, "/health is GET only: {body}");
    // etcdctl 3.4 and 3.5.1 with an https:// endpoint, per-endpoint
    // commands included.
    let certs = c.tls.clone().unwrap();
    let (admin, admin_key) = c.cert("admin");
    let etcd35 = crate::common::etcd35_bin("etcdctl");
    for bin in [crate::common::etcdctl_bin(), etcd35] {
        for args in [
            vec!["endpoint", "status"],
            vec!["endpoint", "hashkv"],
            vec!["member", "list", "-w", "table"],
            vec!["put", "via", "https"],
            vec!["get", "via"],
        ] {
            let out = std::process::Command::new(&bin)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints=https://{}", c.endpoint(0)))
                .arg(format!("--cacert={}", certs.join("ca.pem").display()))
                .arg(format!("--cert={admin}"))
                .arg(format!("--key={admin_key}"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} {args:?}: {}",
                bin.display(),
                stderr(&out)
            );
        }
    }
    // The reserved range: base64 of "\xff\xffsecretd/".
    let (code, body) = https_post(
        &c,
        "admin",
        "/v3/kv/put",
        r#"{"key":"//9zZWNyZXRkL3g=","value":"eA=="}"#,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("reserved"), "{body}");
}

/// D14: a node certificate could open any number of `Agent.Watch` streams,
/// each woken by every change to read every task: 2,000 of them took
/// `secret create` from 3 ms to 1.2 s. A node holds a few at most (an
/// agent needs one); past that it is told so, other nodes are not
/// affected, and a closed stream frees its place.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_holds_a_bounded_number_of_agent_streams() {
    use secretd_api::objects::agent::STREAMS_PER_NODE_MAX;
    use secretd_api::pb::secretstore::{agent_client::AgentClient, AgentWatchRequest};
    let c = Cluster::start_tls(1, &[]);
    c.wait_leader(crate::common::secs(15)).await;
    let watch = |node: &'static str| {
        let channel = c.channel_as(0, &format!("node-{node}"));
        async move {
            AgentClient::new(channel)
                .watch(AgentWatchRequest {
                    node: node.into(),
                    parts: true,
                })
                .await
        }
    };
    let mut held = Vec::new();
    for i in 0..STREAMS_PER_NODE_MAX {
        let mut s = watch("n1")
            .await
            .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        s.get_mut().message().await.expect("a first state");
        held.push(s);
    }
    let e = watch("n1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("an agent needs one"), "{e:?}");
    // Another node is not held back by n1's streams.
    watch("n2").await.expect("n2's stream");
    // A closed stream frees its place (once the member sees it closed).
    held.pop();
    let deadline = std::time::Instant::now() + crate::common::secs(15);
    loop {
        match watch("n1").await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the place never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// D18: every refused request wrote an audit line and a WARN line: a node
/// certificate made 10 MB of audit log in 10 s, and 83k refusals filled
/// the disk until the member stopped. Refusals are now written once per
/// window per (role, RPC), the rest counted in one line when the window
/// ends, and the audit log keeps to its byte budget.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_counted_not_each_written() {
    use secretd_api::pb::etcdserverpb::{kv_client::KvClient, RangeRequest};
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let c = Cluster::start_tls(
        1,
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--audit-log-max-bytes",
            "1048576",
        ],
    );
    c.wait_leader(crate::common::secs(20)).await;
    let mut kv = KvClient::new(c.channel_as(0, "node-n1"));
    let range = || RangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    };
    let refusals = 3_000;
    for _ in 0..refusals {
        let e = kv.range(range()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }
    let lines = |needle: &str| {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        text.lines().filter(|l| l.contains(needle)).count()
    };
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    let warned = log.matches("refused a request: wrong role").count();
    assert!(warned <= 2, "{warned} WARN lines for {refusals} refusals");
    let audited = lines("/etcdserverpb.KV/Range");
    assert!(
        audited <= 2,
        "{audited} audit lines for {refusals} refusals"
    );
    // Once the window is over, one line counts the rest.
    let deadline = Instant::now() + crate::common::secs(40);
    while lines("\"denied x") == 0 {
        assert!(Instant::now() < deadline, "no count of the refusals");
        let _ = kv.range(range()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let count = text
        .lines()
        .find(|l| l.contains("\"denied x"))
        .and_then(|l| l.split("\"denied x").nth(1))
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a count");
    assert!(count >= refusals - 2, "counted {count} of {refusals}");
    let total = std::fs::metadata(&audit).unwrap().len()
        + std::fs::metadata(audit.with_extension("log.1")).map_or(0, |m| m.len());
    assert!(total <= 1 << 20, "the audit log holds {total} bytes");
    // The member is fine, and an admin's write goes through.
    assert_eq!(c.etcdctl(&["put", "after", "v"]).status.code(), Some(0));
}
