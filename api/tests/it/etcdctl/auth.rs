//! etcd's users and roles driven by etcdctl 3.4 and 3.5.1 on a TLS
//! cluster, and the gateway's tokens beside them.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{etcdctl_bin, Cluster};

use super::base64_of;

/// etcdctl (`bin`) on a TLS cluster with the admin certificate, as `user`
/// (`name:password`) when given, with `stdin` fed in: (success, stdout and
/// stderr).
fn ctl_as(
    c: &Cluster,
    bin: &std::path::Path,
    endpoints: &[usize],
    user: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    let certs = c.tls.clone().expect("a TLS cluster");
    let (cert, key) = c.cert("admin");
    let eps: Vec<String> = endpoints
        .iter()
        .map(|i| format!("https://{}", c.endpoint(*i)))
        .collect();
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", eps.join(",")))
        .arg(format!("--cacert={}", certs.join("ca.pem").display()))
        .arg(format!("--cert={cert}"))
        .arg(format!("--key={key}"))
        .args(["--command-timeout=10s", "--dial-timeout=5s"]);
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    if let Some(input) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// An HTTPS JSON gateway call with the admin certificate and an optional
/// token, through curl: (HTTP status, body).
fn gateway_as(
    c: &Cluster,
    member: usize,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let certs = c.tls.clone().unwrap();
    let (cert, key) = c.cert("admin");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}", "--cacert"])
        .arg(certs.join("ca.pem"))
        .args(["--cert", &cert, "--key", &key, "-d", body]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: {t}")]);
    }
    let out = cmd
        .arg(format!("https://{}{path}", c.endpoint(member)))
        .output()
        .expect("curl (Debian's curl package)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// etcd's users and roles, driven by etcdctl 3.4 and 3.5.1 on a 3-member
/// TLS cluster: grants, refusals (never filtering), revocation (a live
/// watch included), a password change, the admin certificate's common
/// name as a user, token expiry and renewal over the gateway, tokens valid
/// on every member, and the auth state across a leader change and a
/// restart. `check perf` runs as root with auth on.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_auth_with_etcdctl_3_4_and_3_5() {
    let mut c = Cluster::start_tls(3, &["--bcrypt-cost", "4", "--auth-token-ttl", "3"]);
    c.wait_leader(crate::common::secs(20)).await;
    let etcd35 = crate::common::etcd35_bin("etcdctl");
    let bins = [etcdctl_bin(), etcd35.clone()];
    let all = [0, 1, 2];
    let ok = |bin: &std::path::Path, user: Option<&str>, args: &[&str]| {
        let (ok, out) = ctl_as(&c, bin, &all, user, args, None);
        assert!(ok, "{} {user:?} {args:?}: {out}", bin.display());
        out
    };
    let refused = |bin: &std::path::Path, user: Option<&str>, args: &[&str], why: &str| {
        let (ok, out) = ctl_as(&c, bin, &all, user, args, None);
        assert!(
            !ok && out.contains(why),
            "{} {user:?} {args:?} should fail with {why:?}: {out}",
            bin.display()
        );
    };
    let e35 = etcd35.as_path();
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
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/app/",
            "--prefix",
        ],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "app"],
        &["user", "add", "bob:bpw"],
        &["user", "grant-role", "bob", "reader"],
        &["auth", "enable"],
    ] {
        ok(e35, None, args);
    }
    let status = ok(e35, Some("root:rootpw"), &["auth", "status"]);
    assert!(status.contains("Authentication Status: true"), "{status}");
    refused(
        e35,
        Some("alice:apw"),
        &["auth", "status"],
        "permission denied",
    );

    let (root, alice, bob) = (Some("root:rootpw"), Some("alice:apw"), Some("bob:bpw"));
    const DENIED: &str = "etcdserver: permission denied";
    for bin in &bins {
        let bin = bin.as_path();
        ok(bin, alice, &["put", "/app/k", "v"]);
        assert_eq!(
            ok(bin, bob, &["get", "/app/k", "--print-value-only"]).trim(),
            "v"
        );
        refused(bin, bob, &["put", "/app/k", "w"], DENIED);
        refused(bin, alice, &["put", "/other", "x"], DENIED);
        // A range reaching past the grant is refused, not cut down.
        refused(bin, alice, &["get", "", "--prefix"], DENIED);
        refused(bin, alice, &["get", "/app/", "--from-key"], DENIED);
        refused(bin, bob, &["del", "/app/", "--prefix", "--prev-kv"], DENIED);
        refused(bin, bob, &["user", "list"], DENIED);
        refused(
            bin,
            Some("alice:wrong"),
            &["get", "/app/k"],
            "authentication failed, invalid user ID or password",
        );
        refused(
            bin,
            Some("nobody:x"),
            &["get", "/app/k"],
            "authentication failed",
        );
        // The admin certificate without a user acts as its CN, "admin":
        // no such user yet.
        refused(bin, None, &["get", "/app/k"], DENIED);
        let (okk, out) = ctl_as(
            &c,
            bin,
            &all,
            alice,
            &["txn"],
            Some("value(\"/app/k\") = \"v\"\n\nput /app/ok y\n\nput /other x\n\n"),
        );
        assert!(
            !okk && out.contains(DENIED),
            "txn writing outside the grant: {out}"
        );
        let roles = ok(bin, alice, &["user", "get", "alice"]);
        assert!(roles.contains("Roles: app"), "{roles}");
        refused(bin, alice, &["user", "get", "bob"], DENIED);
        let snap = c.dir.path().join("alice.snap");
        let (okk, out) = ctl_as(
            &c,
            bin,
            &[0],
            alice,
            &["snapshot", "save", snap.to_str().unwrap()],
            None,
        );
        assert!(!okk && out.contains(DENIED), "snapshot as alice: {out}");
        // Watching what one may not read: created and cancelled at once.
        let (_, out) = ctl_as(&c, bin, &[0], alice, &["watch", "", "--prefix"], None);
        assert!(out.contains("permission denied"), "{out}");
        // A lease: bob may not revoke one holding keys he may not write.
        let lease = ok(bin, alice, &["lease", "grant", "60"]);
        let id = lease.split_whitespace().nth(1).unwrap().to_string();
        ok(
            bin,
            alice,
            &["put", "/app/leased", "x", &format!("--lease={id}")],
        );
        refused(bin, bob, &["lease", "revoke", &id], DENIED);
        ok(bin, alice, &["lease", "revoke", &id]);
    }
    // etcdctl 3.5's --user NAME --password PW form.
    ok(
        e35,
        None,
        &["--user=alice", "--password=apw", "get", "/app/k"],
    );

    // The admin certificate's CN as a user: one without a password,
    // allowed to read /app/.
    ok(e35, root, &["user", "add", "admin", "--no-password"]);
    ok(e35, root, &["user", "grant-role", "admin", "reader"]);
    for bin in &bins {
        assert_eq!(
            ok(bin, None, &["get", "/app/k", "--print-value-only"]).trim(),
            "v"
        );
        refused(bin, None, &["put", "/app/k", "x"], DENIED);
    }
    // A user without a password cannot log in.
    // (etcdctl sends no login for an empty password, so ask the gateway.)
    for pw in ["", "x"] {
        let (code, body) = gateway_as(
            &c,
            0,
            "/v3/auth/authenticate",
            None,
            &format!(r#"{{"name":"admin","password":"{pw}"}}"#),
        );
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("authentication failed"), "{body}");
    }

    // Revoking: a live watch over the range is cancelled at its next
    // event, and writes stop.
    let mut watch = Command::new(&etcd35);
    let certs = c.tls.clone().unwrap();
    let (cert, key) = c.cert("admin");
    let mut watch = watch
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", c.endpoint(1)))
        .arg(format!("--cacert={}", certs.join("ca.pem").display()))
        .args([format!("--cert={cert}"), format!("--key={key}")])
        .args(["--user=alice:apw", "watch", "/app/", "--prefix"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The same over the gateway, where the cancel reason is visible
    // (etcd's client library closes a cancelled watch without it).
    let token = {
        let (code, body) = gateway_as(
            &c,
            1,
            "/v3/auth/authenticate",
            None,
            r#"{"name":"alice","password":"apw"}"#,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let gw_watch = Command::new("curl")
        .args(["-s", "-N", "-m", "4", "--cacert"])
        .arg(certs.join("ca.pem"))
        .args(["--cert", &cert, "--key", &key, "-H"])
        .arg(format!("Authorization: {token}"))
        .arg("-d")
        .arg(format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            base64_of("/app/"),
            base64_of("/app0")
        ))
        .arg(format!("https://{}/v3/watch", c.endpoint(1)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ok(e35, root, &["put", "/app/seen", "1"]);
    ok(
        e35,
        root,
        &["role", "revoke-permission", "app", "/app/", "--prefix"],
    );
    ok(e35, root, &["put", "/app/unseen", "2"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("/app/seen"), "{text}");
    assert!(
        !text.contains("/app/unseen"),
        "an event after the revoke reached the watcher: {text}"
    );
    assert!(text.contains("watch is canceled by the server"), "{text}");
    let gw = String::from_utf8_lossy(&gw_watch.wait_with_output().unwrap().stdout).into_owned();
    assert!(gw.contains(&base64_of("/app/seen")), "{gw}");
    assert!(!gw.contains(&base64_of("/app/unseen")), "{gw}");
    assert!(
        gw.contains(r#""cancel_reason":"rpc error: code = PermissionDenied desc = etcdserver: permission denied""#),
        "{gw}"
    );
    for bin in &bins {
        refused(bin, alice, &["put", "/app/k", "x"], DENIED);
        refused(bin, alice, &["get", "/app/k"], DENIED);
    }
    ok(
        e35,
        root,
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "/app/",
            "--prefix",
        ],
    );

    // A password change: the old one stops working.
    let (okk, out) = ctl_as(
        &c,
        e35,
        &all,
        root,
        &["user", "passwd", "alice", "--interactive=false"],
        Some("newpw\n"),
    );
    assert!(okk, "{out}");
    for bin in &bins {
        refused(bin, alice, &["get", "/app/k"], "authentication failed");
        ok(bin, Some("alice:newpw"), &["get", "/app/k"]);
    }
    let alice = Some("alice:newpw");

    // Tokens over the gateway: good on every member (each learns it from
    // the log), renewed by use, dead after the TTL (3 s) unused.
    let login = |member: usize| {
        let (code, body) = gateway_as(
            &c,
            member,
            "/v3/auth/authenticate",
            None,
            r#"{"name":"alice","password":"newpw"}"#,
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let range = format!(r#"{{"key":"{}"}}"#, base64_of("/app/k"));
    let token = login(0);
    for m in 0..3 {
        let (code, body) = gateway_as(&c, m, "/v3/kv/range", Some(&token), &range);
        assert_eq!(code, 200, "member {m}: {body}");
    }
    for _ in 0..5 {
        std::thread::sleep(crate::common::secs(1));
        let (code, body) = gateway_as(&c, 0, "/v3/kv/range", Some(&token), &range);
        assert_eq!(code, 200, "a token in use must stay alive: {body}");
    }
    std::thread::sleep(Duration::from_millis(4000));
    let (code, body) = gateway_as(&c, 0, "/v3/kv/range", Some(&token), &range);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("etcdserver: invalid auth token"), "{body}");
    // Without a token, the admin certificate acts as its CN's user.
    let (code, body) = gateway_as(&c, 0, "/v3/kv/range", None, &range);
    assert_eq!(code, 200, "{body}");

    // A leader change: auth holds on every member, for both etcdctls.
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let to = c.member_id((leader + 1) % 3).await;
    let (okk, out) = ctl_as(&c, e35, &[leader], root, &["move-leader", &to], None);
    assert!(okk, "move-leader: {out}");
    refused(e35, alice, &["move-leader", &to], DENIED);
    let new_leader = c.wait_leader(crate::common::secs(15)).await;
    assert_ne!(new_leader, leader);
    for bin in &bins {
        for m in 0..3 {
            let (okk, out) = ctl_as(&c, bin, &[m], alice, &["put", "/app/k", "after-move"], None);
            assert!(okk, "member {m}: {out}");
            let (okk, out) = ctl_as(&c, bin, &[m], bob, &["put", "/app/k", "x"], None);
            assert!(!okk && out.contains(DENIED), "member {m}: {out}");
        }
    }

    // A restart: users, roles and the switch come back from disk; tokens
    // do not (clients log in again).
    let token = login(2);
    c.kill9(2);
    c.spawn(2);
    c.wait_leader(crate::common::secs(20)).await;
    let (code, body) = gateway_as(&c, 2, "/v3/kv/range", Some(&token), &range);
    assert_eq!(code, 401, "a restarted member forgot its tokens: {body}");
    for bin in &bins {
        let (okk, out) = ctl_as(
            &c,
            bin,
            &[2],
            alice,
            &["get", "/app/k", "--print-value-only"],
            None,
        );
        assert!(okk && out.trim() == "after-move", "{out}");
        let (okk, out) = ctl_as(&c, bin, &[2], bob, &["put", "/app/k", "x"], None);
        assert!(!okk && out.contains(DENIED), "{out}");
    }
    let (okk, out) = ctl_as(&c, e35, &[2], root, &["auth", "status"], None);
    assert!(okk && out.contains("Authentication Status: true"), "{out}");

    // etcdctl 3.5's performance check runs, as root, with auth on. Its
    // PASS/FAIL verdict is a timing threshold, which a shared test machine
    // cannot promise: the benchmarks measure speed, this only that it works.
    let (_, out) = ctl_as(&c, e35, &all, root, &["check", "perf", "--load=s"], None);
    assert!(
        out.contains("Throughput is") && !out.contains("Error"),
        "check perf: {out}"
    );
}
