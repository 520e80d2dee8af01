//! A real orchestrator on secretd: Patroni managing PostgreSQL through
//! the JSON gateway, failing over when its leader or secretd's dies.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Cluster;

/// Runs `args` as the `postgres` user (PostgreSQL refuses root); `setpriv`
/// execs, so the child's PID is the program's own.
fn as_postgres(args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .args(args)
    // Not root's home: Patroni and psql write there.
    .env("HOME", "/tmp");
    c
}

/// `patronictl list -f json`: (member, role, state, timeline) per member.
/// The secretd leader, asked through etcdctl as `user` (auth is on).
fn leader_as(c: &Cluster, user: &str) -> usize {
    let out = c.etcdctl(&[
        &format!("--user={user}"),
        "endpoint",
        "status",
        "-w",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let st = v.as_array().unwrap();
    let leader = st[0]["Status"]["leader"].as_u64().unwrap();
    let ep = st
        .iter()
        .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
        .and_then(|s| s["Endpoint"].as_str())
        .expect("the leader among the endpoints")
        .to_string();
    (0..c.members.len())
        .find(|i| ep.ends_with(&c.endpoint(*i)))
        .unwrap()
}

fn patroni_members(conf: &std::path::Path) -> Vec<(String, String, String, i64)> {
    let out = as_postgres(&[
        "patronictl",
        "-c",
        conf.to_str().unwrap(),
        "list",
        "-f",
        "json",
    ])
    .output()
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["Member"].as_str().unwrap_or("").to_string(),
                        m["Role"].as_str().unwrap_or("").to_string(),
                        m["State"].as_str().unwrap_or("").to_string(),
                        m["TL"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn psql(port: u16, sql: &str) -> String {
    let out = as_postgres(&[
        "psql",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-tAc",
        sql,
    ])
    .output()
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A real orchestrator on secretd: two PostgreSQL 15 instances managed by
/// Debian's Patroni 3.0.2, whose `etcd3:` DCS (the JSON gateway) is a
/// 3-member secretd cluster. A leader is elected and a replica streams; a
/// row written on the leader reaches the replica; after `kill -9` of the
/// leader's Patroni and PostgreSQL the replica takes over within TTL +
/// loop_wait; and when secretd's own leader is killed, Patroni keeps its
/// leader lock through secretd's election.
#[tokio::test(flavor = "multi_thread")]
async fn patroni_fails_over_on_secretd() {
    for need in [
        "/usr/bin/patroni",
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/bin/setpriv",
    ] {
        assert!(
            std::path::Path::new(need).exists(),
            "{need} is missing: this test needs Debian's patroni and postgresql (scripts/deps.sh --test installs them)"
        );
    }
    assert!(
        crate::common::is_root(),
        "this test runs PostgreSQL as user postgres: run it as root"
    );
    let (ttl_s, loop_wait_s) = (20u64, 2u64);
    let mut c = Cluster::start_with(3, &["--bcrypt-cost", "4"]);
    c.wait_leader(crate::common::secs(15)).await;
    // Patroni logs in as its own etcd user, allowed only its namespace.
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "patroni"],
        &[
            "role",
            "grant-permission",
            "patroni",
            "readwrite",
            "/service/",
            "--prefix",
        ],
        &["user", "add", "patroni:patronipw"],
        &["user", "grant-role", "patroni", "patroni"],
        &["auth", "enable"],
    ] {
        c.ok(args);
    }
    let dir = tempfile::Builder::new()
        .prefix("patroni")
        .tempdir_in("/tmp")
        .unwrap();
    let d = dir.path().to_path_buf();
    let hosts: Vec<String> = (0..3).map(|i| c.endpoint(i)).collect();
    let mut confs = Vec::new();
    let mut pg_ports = Vec::new();
    for n in 1..=2 {
        let (api, pg) = (crate::common::free_port(), crate::common::free_port());
        let conf = d.join(format!("p{n}.yml"));
        std::fs::write(
            &conf,
            format!(
                "scope: secretd-test\nname: p{n}\nrestapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
                 etcd3:\n  hosts: {hosts}\n  username: patroni\n  password: patronipw\n\
                 bootstrap:\n  dcs:\n    ttl: {ttl_s}\n    loop_wait: {loop_wait_s}\n    retry_timeout: 5\n    postgresql:\n      use_pg_rewind: false\n\
                 \x20 initdb:\n  - encoding: UTF8\n  pg_hba:\n  - host replication replicator 127.0.0.1/32 trust\n  - host all all 127.0.0.1/32 trust\n  - local all all trust\n\
                 postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {data}\n  pgpass: {data}.pgpass\n  bin_dir: /usr/lib/postgresql/15/bin\n\
                 \x20 authentication:\n    replication: {{username: replicator, password: rep}}\n    superuser: {{username: postgres, password: pg}}\n\
                 \x20 parameters:\n    unix_socket_directories: {sock}\n",
                hosts = hosts.join(","),
                data = d.join(format!("p{n}")).display(),
                sock = d.display(),
            ),
        )
        .unwrap();
        confs.push(conf);
        pg_ports.push(pg);
    }
    assert!(Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&d)
        .status()
        .unwrap()
        .success());
    /// Patroni processes and their PostgreSQL, killed by PID at the end.
    struct Procs {
        patronis: Vec<std::process::Child>,
        data: Vec<std::path::PathBuf>,
    }
    impl Drop for Procs {
        fn drop(&mut self) {
            for p in &mut self.patronis {
                let _ = p.kill();
                let _ = p.wait();
            }
            for d in &self.data {
                if let Ok(pid) = std::fs::read_to_string(d.join("postmaster.pid")) {
                    if let Some(pid) = pid.lines().next() {
                        let _ = Command::new("kill")
                            .args(["-9", pid])
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
        }
    }
    let mut procs = Procs {
        patronis: Vec::new(),
        data: vec![d.join("p1"), d.join("p2")],
    };
    for (n, conf) in confs.iter().enumerate() {
        let log = std::fs::File::create(d.join(format!("p{}.log", n + 1))).unwrap();
        procs.patronis.push(
            as_postgres(&["/usr/bin/patroni", conf.to_str().unwrap()])
                .current_dir(&d)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    // A leader and a running replica, the replica streaming.
    let deadline = Instant::now() + crate::common::secs(60);
    let leader = loop {
        let m = patroni_members(&confs[0]);
        let leader = m.iter().find(|x| x.1 == "Leader" && x.2 == "running");
        let replica = m.iter().any(|x| x.1 == "Replica" && x.2 == "running");
        if let (Some(l), true) = (leader, replica) {
            break l.0.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no leader and replica: {m:?}\n{}",
            std::fs::read_to_string(d.join("p1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (li, ri) = if leader == "p1" { (0, 1) } else { (1, 0) };
    let deadline = Instant::now() + crate::common::secs(20);
    while psql(pg_ports[li], "select state from pg_stat_replication") != "streaming" {
        assert!(Instant::now() < deadline, "the replica never streamed");
        std::thread::sleep(Duration::from_millis(250));
    }
    psql(
        pg_ports[li],
        "create table t(x int); insert into t values (42)",
    );
    let deadline = Instant::now() + crate::common::secs(20);
    while psql(pg_ports[ri], "select x from t") != "42" {
        assert!(
            Instant::now() < deadline,
            "the row never reached the replica"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // kill -9 the leader's Patroni and its PostgreSQL.
    let _ = procs.patronis[li].kill();
    let _ = procs.patronis[li].wait();
    let pid = std::fs::read_to_string(procs.data[li].join("postmaster.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.lines().next().unwrap()])
        .status()
        .unwrap();
    let killed = Instant::now();
    let other = if li == 0 { "p2" } else { "p1" };
    let deadline = killed + crate::common::secs(60);
    loop {
        let m = patroni_members(&confs[ri]);
        if m.iter()
            .any(|x| x.0 == other && x.1 == "Leader" && x.2 == "running")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {m:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = killed.elapsed();
    eprintln!("patroni failover took {took:?} (ttl {ttl_s}s + loop_wait {loop_wait_s}s)");
    // Polling adds up to a quarter second, a busy machine a little more.
    assert!(
        took <= crate::common::secs(ttl_s + loop_wait_s + 3),
        "failover took {took:?}, more than ttl + loop_wait"
    );
    // The promotion moves the new leader to timeline 2 just after it
    // takes the role.
    let deadline = Instant::now() + crate::common::secs(20);
    let tl = loop {
        let t = patroni_members(&confs[ri])
            .iter()
            .find(|x| x.0 == other)
            .map(|x| x.3)
            .unwrap_or(0);
        if t >= 2 {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader's timeline never moved"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Patroni wrote only in its namespace, as its user; nobody else reads it.
    let out = c.etcdctl(&[
        "--user=patroni:patronipw",
        "get",
        "/service/",
        "--prefix",
        "--keys-only",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/service/secretd-test/leader"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.etcdctl(&["get", "/service/", "--prefix"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name is empty"));
    // secretd's leader dies: Patroni keeps its lock through the election,
    // checked for longer than its TTL.
    let sl = leader_as(&c, "root:rootpw");
    c.kill9(sl);
    let until = Instant::now() + crate::common::secs(ttl_s + 5);
    while Instant::now() < until {
        let m = patroni_members(&confs[ri]);
        if let Some(x) = m.iter().find(|x| x.0 == other) {
            assert!(
                x.1 == "Leader" && x.3 == tl,
                "Patroni lost its leader lock: {m:?}"
            );
        }
        std::thread::sleep(crate::common::secs(1));
    }
    assert_eq!(psql(pg_ports[ri], "select x from t"), "42");
    drop(procs);
}
