//! The role matrix over the wire: every RPC for every role through raw
//! gRPC, and the JSON gateway keeping the same matrix.

use std::path::Path;

use crate::common::Cluster;
use secretd_api::pb::secretstore::{agent_client::AgentClient, FetchRequest};

use super::{rustls_client, stderr};

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
