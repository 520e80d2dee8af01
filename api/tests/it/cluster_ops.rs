//! Operations an etcd operator runs, through Debian's etcdctl: backup and
//! restore into a new cluster, leader moves, request limits, and
//! auto-compaction.

use std::time::{Duration, Instant};

use crate::common::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_save_and_restore_into_a_new_cluster() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    for i in 0..50 {
        c.ok(&["put", &format!("b/{i:02}"), &format!("v{i}")]);
    }
    c.ok(&["del", "b/07"]);
    c.sctl(&["secret", "create", "db_pw", "-"], Some(b"pw"));
    // etcd's users and roles are part of the state a backup carries.
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "b/",
            "--prefix",
        ],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "reader"],
    ] {
        c.ok(args);
    }
    let before = c.ok(&["get", "b/", "--prefix"]);
    let rev_before = c.ok(&["get", "b/00", "-w", "json"]);
    let backup = c.dir.path().join("backup.db");
    let out = c.etcdctl_at(
        &c.endpoint(1),
        &["snapshot", "save", backup.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A new cluster, three members, each restored from the same backup.
    let mut r = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let out = r.restore(i, &backup);
        assert!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Secrets come back sealed; one member gets an old member's keys/
    // directory (the README's procedure) and the others fetch from it.
    let keys = r.members[0].data_dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for f in ["wrap.key", "keyring"] {
        std::fs::copy(c.members[0].data_dir.join("keys").join(f), keys.join(f)).unwrap();
    }
    for i in 0..3 {
        r.spawn(i);
    }
    r.wait_leader(crate::common::secs(15)).await;
    assert_eq!(r.ok(&["get", "b/", "--prefix"]), before);
    assert_eq!(
        r.sctl(&["secret", "ls", "--format", "{{.Name}}"], None),
        "db_pw\n"
    );
    let deadline = Instant::now() + crate::common::secs(20);
    for i in 0..3 {
        loop {
            let out = r.secretctl_at(&r.endpoint(i), &["cluster", "settings"], None);
            if String::from_utf8_lossy(&out.stdout).contains("held by this member:   1\n") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restored member {i} lacks the KEK"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    r.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"pw2"));
    // Revisions are kept; the identity is new.
    let rev = |s: &str| {
        s.split("\"mod_revision\":")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(rev(&r.ok(&["get", "b/00", "-w", "json"])), rev(&rev_before));
    assert_eq!(r.ok(&["member", "list"]).lines().count(), 3);
    assert_ne!(c.member_id(0).await, r.member_id(0).await);
    r.ok(&["put", "b/new", "x"]);
    // The users and roles came back: enable auth and use them.
    assert_eq!(r.ok(&["user", "list"]), "alice\nroot\n");
    assert!(r.ok(&["role", "get", "reader"]).contains("[b/, b0)"));
    r.ok(&["auth", "enable"]);
    let out = r.etcdctl(&["--user=alice:apw", "get", "b/00", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v0\n");
    let out = r.etcdctl(&["--user=alice:apw", "put", "b/00", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    let out = r.etcdctl(&["get", "b/00"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name is empty"));
    // Restoring over an existing data directory is refused.
    let out = r.restore(0, &backup);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[tokio::test(flavor = "multi_thread")]
async fn move_leader_and_request_limits() {
    let c = Cluster::start(3);
    let leader = c.wait_leader(crate::common::secs(15)).await;
    let target = (leader + 1) % 3;
    let target_id = c.member_id(target).await;
    let out = c.etcdctl_at(&c.endpoint(leader), &["move-leader", &target_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.wait_leader(crate::common::secs(10)).await, target);
    // Only the leader can move leadership (etcdctl checks this itself too).
    let out = c.etcdctl_at(&c.endpoint(leader), &["move-leader", &target_id]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && (err.contains("etcdserver: not leader") || err.contains("no leader endpoint given")),
        "{err}"
    );

    // A txn over --max-txn-ops (128) is refused, whole.
    let mut script = String::from("\n");
    for i in 0..129 {
        script.push_str(&format!("put t/{i} x\n"));
    }
    script.push_str("\n\n"); // ends the success ops, then the (empty) failure ops
    let out = crate::common::etcdctl_stdin(&c.endpoints(), &["txn"], script.as_bytes());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("etcdserver: too many operations in txn request"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.ok(&["get", "t/", "--prefix", "--keys-only"]), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn revision_auto_compaction() {
    let c = Cluster::start_with(
        1,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "5",
        ],
    );
    c.wait_leader(crate::common::secs(10)).await;
    for i in 0..20 {
        c.ok(&["put", "ac", &i.to_string()]);
    }
    // Revisions 2..=21 exist; within a few checks only the newest 5 remain.
    let deadline = Instant::now() + crate::common::secs(20);
    loop {
        let out = c.etcdctl(&["get", "ac", "--rev=2"]);
        if String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted") {
            break;
        }
        assert!(Instant::now() < deadline, "never auto-compacted");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(c.ok(&["get", "ac", "--rev=17"]), "ac\n15\n");
}

fn put_stdin(c: &Cluster, key: &str, value: &[u8]) -> std::process::Output {
    crate::common::etcdctl_stdin(&c.endpoints(), &["put", key], value)
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_alarm_raised_then_disarmed_after_compaction_and_defrag() {
    let c = Cluster::start_with(3, &["--quota-backend-bytes", "3000000"]);
    c.wait_leader(crate::common::secs(15)).await;
    let value: Vec<u8> = (0..250_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut refused = None;
    for i in 0..40 {
        let out = put_stdin(&c, &format!("q/{i:02}"), &value);
        if !out.status.success() {
            assert!(
                String::from_utf8_lossy(&out.stderr)
                    .contains("etcdserver: mvcc: database space exceeded"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            refused = Some(i);
            break;
        }
    }
    assert!(refused.is_some(), "the quota never refused a write");
    assert!(c.ok(&["alarm", "list"]).contains("alarm:NOSPACE"));
    // Refused everywhere, even small writes; reads and deletes still work.
    let out = c.etcdctl(&["put", "small", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("database space exceeded"));
    assert_eq!(c.ok(&["get", "q/00", "--keys-only"]), "q/00\n\n");
    c.ok(&["del", "q/", "--prefix"]);
    let rev = crate::common::header_revision(&c.ok(&["get", "x", "-w", "json"])).to_string();
    c.ok(&["compaction", &rev]);
    c.ok(&["defrag"]);
    c.ok(&["alarm", "disarm"]);
    assert_eq!(c.ok(&["alarm", "list"]), "");
    assert_eq!(c.ok(&["put", "small", "x"]).trim(), "OK");
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_auto_compaction() {
    let c = Cluster::start_with(
        1,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "2s",
        ],
    );
    c.wait_leader(crate::common::secs(10)).await;
    for i in 0..10 {
        c.ok(&["put", "pc", &i.to_string()]);
    }
    // History older than 2 s goes; the newest value stays.
    let deadline = Instant::now() + crate::common::secs(20);
    loop {
        let out = c.etcdctl(&["get", "pc", "--rev=2"]);
        if String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted") {
            break;
        }
        assert!(Instant::now() < deadline, "never auto-compacted");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(c.ok(&["get", "pc"]), "pc\n9\n");
}

/// A plain HTTP GET on loopback: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_health_on_their_own_listener() {
    let port = crate::common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let c = Cluster::start_with(1, &["--listen-metrics-urls", &url]);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", "a", "-"], Some(b"x"));
    c.sctl(&["secret", "create", "b", "-"], Some(b"y"));
    c.ok(&["lease", "grant", "60"]);
    let (status, body) = http_get(port, "/health");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, r#"{"health":"true","reason":""}"#);
    let (_, m) = http_get(port, "/metrics");
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("secretd_secrets"), 2.0);
    assert_eq!(value("secretd_leases"), 1.0);
    assert_eq!(value("secretd_server_has_leader"), 1.0);
    assert!(value("secretd_disk_wal_fsync_duration_seconds_count") >= 3.0);
    assert!(value("secretd_apply_duration_seconds_count") >= 3.0);
    assert!(m.contains("secretd_watch_publish_duration_seconds_bucket"));
    assert!(m.contains("secretd_watchers "));
    // A https metrics URL is refused clearly.
    let out = std::process::Command::new(crate::common::secretd_bin())
        .args(["--listen-metrics-urls", "https://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics are served over http:// only"));
}

/// Entries under `dir` (itself included) that group or others may use.
fn loose_entries(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let m = std::fs::symlink_metadata(dir).unwrap();
    if m.file_type().is_symlink() {
        return out;
    }
    if m.permissions().mode() & 0o077 != 0 {
        out.push(format!(
            "{} {:o}",
            dir.display(),
            m.permissions().mode() & 0o777
        ));
    }
    if m.is_dir() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.extend(loose_entries(&e.path()));
        }
    }
    out
}

/// D5: with umask 022 a member still keeps its data directory to itself
/// (0700, files 0600), as etcd does, and so is its audit log; a data
/// directory loosened while it was down is tightened at start, and logged.
#[tokio::test(flavor = "multi_thread")]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let mut c = Cluster::prepare(1, &["--audit-log", audit.to_str().unwrap()]);
    c.umask = Some(0o022);
    c.spawn(0);
    c.wait_leader(crate::common::secs(15)).await;
    c.ok(&["put", "k", "plain-value"]);
    c.sctl(&["secret", "create", "s", "-"], Some(b"x"));
    c.sctl(&["config", "create", "conf", "-"], Some(b"plain-config"));
    let data = c.members[0].data_dir.clone();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(loose_entries(&data), Vec::<String>::new());
    assert_eq!(mode(&audit), 0o600);
    c.kill9(0);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let some_file = std::fs::read_dir(data.join("db"))
        .unwrap()
        .flatten()
        .find(|e| e.path().is_file())
        .unwrap()
        .path();
    std::fs::set_permissions(&some_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.spawn(0);
    c.wait_leader(crate::common::secs(15)).await;
    assert_eq!(loose_entries(&data), Vec::<String>::new());
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(
        log.contains("the data directory was readable by other users"),
        "{log}"
    );
}
