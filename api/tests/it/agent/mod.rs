//! The node agent end to end, with both backends: a real 3-member cluster,
//! a real `secretd agent` mounting FUSE or a tmpfs, and the files checked
//! the way a container's process sees them. Needs root and /dev/fuse; says
//! so and fails when they are missing (it never passes vacuously).
//!
//! - `serving`: live secrets, refused mount points, large states and tasks.
//! - `certs`: the node certificate as the agent's only identity.
//! - `isolation`: a broken task, or another user, reaches nothing else.
//! - `exec`: `agent exec` acting on changes.
//! - `templates`: templated configs, and templates that misbehave.
//!
//! The agent launcher (`Agent`) and the helpers here are shared with other
//! modules (`docker`, `hostile`).

mod certs;
mod exec;
mod isolation;
mod serving;
mod templates;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{secretd_bin, Cluster};

fn require_root_and_fuse() {
    assert!(
        crate::common::is_root(),
        "the agent tests need root (they mount FUSE and tmpfs): run them as root"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "the agent tests need /dev/fuse (modprobe fuse)"
    );
}

pub(crate) struct Agent {
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Agent {
    pub(crate) fn start(c: &Cluster, mount: &Path, backend: &str, log: &Path) -> Agent {
        Self::start_with(c, mount, backend, log, Vec::new())
    }

    pub(crate) fn start_with(
        c: &Cluster,
        mount: &Path,
        backend: &str,
        log: &Path,
        extra: Vec<String>,
    ) -> Agent {
        Self::start_as(c, "n1", mount, backend, log, extra)
    }

    /// An agent for node `node`, with `extra` flags.
    pub(crate) fn start_as(
        c: &Cluster,
        node: &str,
        mount: &Path,
        backend: &str,
        log: &Path,
        extra: Vec<String>,
    ) -> Agent {
        let mut args = vec![
            "agent".to_string(),
            "--node".into(),
            node.into(),
            "--mount".into(),
            mount.display().to_string(),
            "--backend".into(),
            backend.into(),
            "--endpoints".into(),
            c.endpoints(),
        ];
        args.extend(extra);
        let mut a = Agent {
            child: None,
            log: log.to_path_buf(),
            args,
            env: Vec::new(),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(secretd_bin())
                .args(&self.args)
                .envs(self.env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn secretd agent"),
        );
    }

    fn signal(&mut self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap();
        let status = self.child.take().unwrap().wait().unwrap();
        if sig == "TERM" {
            assert!(
                status.success(),
                "agent exit on SIGTERM: {status}\n{}",
                self.logs()
            );
        }
    }

    /// Whether the agent's process still runs.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

pub(crate) fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// A value whose every 6-byte chunk names its version: a torn or mixed
/// read shows up as differing chunks.
fn value(i: usize) -> Vec<u8> {
    format!("{i:06}").repeat(700).into_bytes()
}

/// `GET path` on a plain-HTTP listener: (status code, body).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    crate::common::http_response(&out)
}

/// Every regular file under `dir`, not following links.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(files_under(&p));
        } else if m.is_file() {
            out.push(p);
        }
    }
    out
}

/// Runs `cmd` as user nobody (uid and gid 65534, no other groups).
pub(crate) fn as_nobody(cmd: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(cmd)
        .output()
        .expect("setpriv (util-linux)")
}

/// A 1-member cluster with one secret `name` = `value`, served to task
/// `web.1` on node n1 at `password` by an agent with this backend; the
/// mount point.
pub(crate) async fn one_served_task(
    backend: &str,
    name: &str,
    value: &[u8],
) -> (Cluster, Agent, PathBuf) {
    one_served_task_with(backend, name, value, Vec::new()).await
}

/// `one_served_task`, the agent started with the `extra` flags.
async fn one_served_task_with(
    backend: &str,
    name: &str,
    value: &[u8],
    extra: Vec<String>,
) -> (Cluster, Agent, PathBuf) {
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", name, "-"], Some(value));
    let secret = format!("source={name},target=password");
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", &secret,
        ],
        None,
    );
    let mount = c.dir.path().join("mnt");
    let log = c.dir.path().join("agent.log");
    let agent = Agent::start_with(&c, &mount, backend, &log, extra);
    wait_for("the secret in the mount", crate::common::secs(15), || {
        read(&mount.join("web.1/password")).is_some()
    });
    (c, agent, mount)
}

/// SIGTERM to a child, and its exit status.
pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}
