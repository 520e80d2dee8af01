//! Smaller differences from etcd 3.5.1 that clients assert on (issue 28,
//! item 4), each checked with etcdctl 3.5.1 or etcd's wire answers:
//! alarms for any member id, Defragment and MoveLeader without a header,
//! etcd 3.5.1's version and error texts, `/metrics` on the client port
//! (with the `process_*` metrics `etcdctl check datascale` reads), and TLS
//! without client certificates (`--client-cert-auth=false`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{secretd_bin, Cluster};
use secretd_client::pb::etcdserverpb as pb;
use tonic::Code;

/// etcdctl 3.5.1 with `args` against `endpoints` (plain): (success,
/// stdout and stderr).
fn ctl(endpoints: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(crate::common::etcd35_bin("etcdctl"))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--command-timeout=30s", "--dial-timeout=5s"])
        .args(args)
        .output()
        .expect("run etcdctl 3.5.1");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The last line etcdctl printed: its error, without the client's log.
fn last_line(out: &str) -> &str {
    out.trim_end().lines().last().unwrap_or_default()
}

/// Alarms, Defragment, MoveLeader, promotion and the version, as etcd
/// 3.5.1 answers them (checked by hand against etcd 3.5.1; the gateway
/// table in `etcdctl/gateway.rs` compares the same side by side).
#[tokio::test(flavor = "multi_thread")]
async fn maintenance_answers_as_etcd_3_5_1() {
    let c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(20)).await;
    let mut m = pb::maintenance_client::MaintenanceClient::new(c.channel(leader).await);

    // Member id 0 is an id like any other: raised, listed, cleared.
    let raise = |member_id, alarm: pb::AlarmType| pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Activate as i32,
        member_id,
        alarm: alarm as i32,
    };
    let got = m
        .alarm(raise(0, pb::AlarmType::Nospace))
        .await
        .expect("etcd raises an alarm for member 0")
        .into_inner();
    assert_eq!(got.alarms.len(), 1, "{got:?}");
    assert_eq!((got.alarms[0].member_id, got.alarms[0].alarm), (0, 1));
    let none = m.alarm(raise(7, pb::AlarmType::None)).await.unwrap();
    assert!(none.into_inner().alarms.is_empty());
    // A list names every member's alarms, whatever member it names.
    let listed = m
        .alarm(pb::AlarmRequest {
            member_id: 99,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.alarms.len(), 1, "{listed:?}");
    let eps = c.endpoints();
    let (ok, out) = ctl(&eps, &["alarm", "list"]);
    assert!(ok && out.trim() == "alarm:NOSPACE", "{out}");
    let (ok, out) = ctl(&eps, &["alarm", "disarm"]);
    assert!(ok && out.contains("alarm:NOSPACE"), "{out}");
    let (ok, out) = ctl(&eps, &["alarm", "list"]);
    assert!(ok && out.trim().is_empty(), "{out}");

    // No header on Defragment and MoveLeader, as etcd answers them.
    let d = m.defragment(pb::DefragmentRequest {}).await.unwrap();
    assert!(d.into_inner().header.is_none());
    let me = c.member_id(leader).await;
    let moved = m
        .move_leader(pb::MoveLeaderRequest {
            target_id: u64::from_str_radix(&me, 16).unwrap(),
        })
        .await
        .unwrap();
    assert!(moved.into_inner().header.is_none());

    // etcd 3.5.1's texts (api/v3rpc/rpctypes/error.go), word for word.
    let at_leader = c.endpoint(leader);
    let (ok, out) = ctl(&at_leader, &["move-leader", "1234"]);
    assert!(!ok);
    assert_eq!(last_line(&out), "Error: etcdserver: bad leader transferee");
    let st = m
        .move_leader(pb::MoveLeaderRequest { target_id: 0x1234 })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::FailedPrecondition);
    let (ok, out) = ctl(&eps, &["member", "promote", &me]);
    assert!(!ok);
    assert_eq!(
        last_line(&out),
        "Error: etcdserver: can only promote a learner member"
    );
    let (ok, out) = ctl(&eps, &["member", "promote", "1234"]);
    assert!(!ok);
    assert_eq!(last_line(&out), "Error: etcdserver: member not found");

    // The version etcd 3.5.1 reports, where clients read it.
    let (ok, out) = ctl(&at_leader, &["endpoint", "status", "-w", "json"]);
    assert!(ok && out.contains(r#""version":"3.5.1""#), "{out}");
    let out = Command::new("curl")
        .args(["-s", &format!("http://{at_leader}/version")])
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"etcdserver":"3.5.1","etcdcluster":"3.5.0"}"#
    );
}

/// `/metrics` on the client port with Prometheus' process metrics, and
/// `etcdctl check datascale`, which reads `process_resident_memory_bytes`
/// there before and after its load, passes.
#[tokio::test(flavor = "multi_thread")]
async fn check_datascale_reads_the_client_ports_metrics() {
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(20)).await;
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", c.endpoint(0))])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    for m in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "secretd_raft_applied_index ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(m)),
            "no {m:?} in /metrics: {text}"
        );
    }
    let (ok, out) = ctl(&c.endpoints(), &["check", "datascale", "--load=s"]);
    assert!(
        ok && out.contains("PASS: Approximate system memory used"),
        "check datascale: {out}"
    );
    // go-grpc-prometheus's counters, as etcd exports them (the etcd-client
    // crate counts its logins by them): the check's puts, and a refusal.
    let (ok, _) = ctl(&c.endpoints(), &["move-leader", "1234"]);
    assert!(!ok);
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", c.endpoint(0))])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let handled = |method: &str, code: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("grpc_server_handled_total{")
                    && l.contains(&format!("grpc_method=\"{method}\""))
                    && l.contains(&format!("grpc_code=\"{code}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(handled("Put", "OK") >= 1.0, "{text}");
    assert_eq!(handled("MoveLeader", "FailedPrecondition"), 1.0, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("grpc_server_started_total{")
                && l.contains(r#"grpc_type="unary""#)),
        "{text}"
    );
}

/// A member run with the given flags (plain peer URL, TLS client URL with
/// member n1's dev certificate): killed when dropped.
struct Member(std::process::Child);

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_member(c: &Cluster, extra: &[&str]) -> Command {
    let m = &c.members[0];
    let (cert, key) = c.cert("member-n1");
    let client = format!("https://127.0.0.1:{}", m.client_port);
    let peer = format!("http://127.0.0.1:{}", m.peer_port);
    let mut cmd = Command::new(secretd_bin());
    cmd.args(["--name", "n1", "--data-dir"])
        .arg(&m.data_dir)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("n1={peer}")])
        .args(["--cert-file", &cert, "--key-file", &key])
        .args(extra)
        .env("SECRETD_LOG", "info");
    cmd
}

/// curl over https to member 0 with only the CA (no client certificate),
/// or with `cert` from the dev CA: (HTTP status, body).
fn curl(c: &Cluster, cert: Option<&str>, method: &str, path: &str, body: &str) -> (u16, String) {
    let ca = c.tls.as_ref().unwrap().join("ca.pem");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "-X", method, "--cacert"])
        .arg(ca);
    if let Some(name) = cert {
        let (crt, key) = c.cert(name);
        cmd.args(["--cert", &crt, "--key", &key]);
    }
    if !body.is_empty() {
        cmd.args(["-d", body]);
    }
    let out = cmd
        .arg(format!(
            "https://localhost:{}{path}",
            c.members[0].client_port
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// etcdctl 3.5.1 over https with only the CA, as `user` if given.
fn ctl_tls(c: &Cluster, user: Option<&str>, args: &[&str]) -> (bool, String) {
    let ca = c.tls.as_ref().unwrap().join("ca.pem");
    let mut all = vec![format!("--cacert={}", ca.display())];
    all.extend(user.map(|u| format!("--user={u}")));
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    ctl(
        &format!("https://localhost:{}", c.members[0].client_port),
        &all,
    )
}

/// `--cert-file`/`--key-file` without `--trusted-ca-file`: etcd serves TLS
/// without client certificates; secretd keeps requiring them by default,
/// and its error names the flag that gives etcd's behaviour and what a
/// caller without a certificate may then do. With `--client-cert-auth=false`
/// such a caller gets etcd's API (governed by etcd's users and roles) and
/// nothing of secretd's own; a snapshot needs etcd's root. `/metrics` is
/// gated: an admin certificate reads it, a node agent's does not.
#[tokio::test(flavor = "multi_thread")]
async fn tls_without_client_certificates_as_etcd() {
    let c = Cluster::prepare_with(1, &[], true);
    let out = tls_member(&c, &[]).output().expect("run secretd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "no --trusted-ca-file",
        "--client-cert-auth=false",
        "etcd's API only",
        "none of secretd's secrets, configs, tasks, settings or agent APIs",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }

    let log = std::fs::File::create(&c.members[0].log).unwrap();
    let _member = Member(
        tls_member(&c, &["--client-cert-auth=false", "--bcrypt-cost", "4"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn secretd"),
    );
    let deadline = Instant::now() + crate::common::secs(20);
    while !ctl_tls(&c, None, &["put", "k", "v"]).0 {
        assert!(
            Instant::now() < deadline,
            "etcdctl without a certificate never got in: {}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out) = ctl_tls(&c, None, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v", "{out}");
    assert!(
        std::fs::read_to_string(&c.members[0].log)
            .unwrap()
            .contains("CLIENTS NEED NO CERTIFICATE"),
        "no warning at start"
    );
    // secretd's own APIs are refused, etcd's gateway routes are not.
    let secrets = Command::new(crate::common::secretctl_bin())
        .env("SECRETCTL_CACERT", c.tls.as_ref().unwrap().join("ca.pem"))
        .env(
            "SECRETCTL_ENDPOINTS",
            format!("https://localhost:{}", c.members[0].client_port),
        )
        .args(["secret", "ls"])
        .output()
        .expect("secretctl");
    let text = String::from_utf8_lossy(&secrets.stderr);
    assert!(
        !secrets.status.success() && text.contains("a client without a certificate may not call"),
        "{text}"
    );
    let (code, body) = curl(&c, None, "POST", "/v3/kv/range", r#"{"key":"aw=="}"#);
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(&c, None, "GET", "/metrics", "");
    assert!(code == 200 && body.contains("process_open_fds"), "{code}");
    // A snapshot: only for etcd's root.
    let snap = c.dir.path().join("anon.db");
    let (ok, out) = ctl_tls(&c, None, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(
        !ok && out.contains("only etcd's root user may take one"),
        "{out}"
    );
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let (ok, out) = ctl_tls(&c, None, args);
        assert!(ok, "{args:?}: {out}");
    }
    let (ok, out) = ctl_tls(&c, None, &["get", "k"]);
    assert!(
        !ok && out.contains("etcdserver: user name is empty"),
        "{out}"
    );
    let root = Some("root:rootpw");
    let (ok, out) = ctl_tls(&c, root, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v", "{out}");
    let (ok, out) = ctl_tls(&c, root, &["snapshot", "save", snap.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// `/metrics` on a mutual-TLS client port: the admin reads it, a node
/// agent's certificate is refused, as every etcd path is.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_the_client_port_follow_the_role_matrix() {
    let c = Cluster::start_tls(1, &[]);
    c.wait_leader(crate::common::secs(20)).await;
    let (code, body) = curl(&c, Some("admin"), "GET", "/metrics", "");
    assert!(
        code == 200 && body.contains("process_resident_memory_bytes"),
        "{code}"
    );
    let (code, body) = curl(&c, Some("node-n1"), "GET", "/metrics", "");
    assert_eq!(code, 403, "{body}");
}
