//! Mutual TLS and roles on a 3-member cluster whose client and peer URLs are
//! all https: only certificates from the cluster's CA get in, each only as
//! far as its role allows, and each refusal is logged clearly.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Cluster;
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
    let mut cmd = std::process::Command::new(common::etcdctl_bin());
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.logs_tail().contains(needle)
        && !std::fs::read_to_string(&c.members[0].log)
            .unwrap_or_default()
            .contains(needle)
    {
        assert!(Instant::now() < deadline, "no log line with {needle:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_clusters_certificates_get_in_each_as_far_as_its_role() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let c = Cluster::start_tls(3, &["--audit-log", audit.to_str().unwrap()]);
    c.wait_leader(Duration::from_secs(20)).await;
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

    // The wrong role: a node agent may not use the KV or Secrets APIs.
    let (n1, n1_key) = c.cert("node-n1");
    let out = etcdctl_with(&c, &ca, Some((&n1, &n1_key)), &["get", "k"]);
    assert!(
        stderr(&out).contains("node agent n1 may not use the KV API"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(common::secretctl_bin())
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
        "Error response from daemon: node agent n1 may not use the Secrets API\n"
    );
    // Peers only speak raft: the admin cannot use the peer port.
    let peer = format!("https://127.0.0.1:{}", c.members[0].peer_port);
    let tls = secretd_fuse::connect::ClientTls::load(
        Path::new(&ca),
        Some(Path::new(&admin)),
        Some(Path::new(&admin_key)),
    )
    .unwrap();
    let ch =
        secretd_fuse::connect::channel(&peer, Some(&tls), Some(Duration::from_secs(5))).unwrap();
    let err = secretd_api::pb::raftpb::raft_client::RaftClient::new(ch)
        .cluster_info(secretd_api::pb::raftpb::ClusterInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.message(), "admin may not use the peer API");

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
