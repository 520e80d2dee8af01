//! Which certificates get in, and as whom: the cluster's CA only, each
//! role only as far as it goes, a member only as itself, a node only to
//! the versions its tasks serve.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use secretd_api::pb::secretstore::{agent_client::AgentClient, FetchRequest};
use secretd_api::tls::pki::{save, Ca};

use super::{rustls_client, stderr};

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
