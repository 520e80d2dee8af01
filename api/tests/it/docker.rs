//! The main use, end to end, with Docker itself: a real `dockerd` runs a
//! container that bind-mounts the node agent's view of its task at
//! `/run/secrets`, exactly as the README shows.
//!
//! Docker is confined: `dockerd` runs inside a network namespace of its own
//! (`unshare --net`, loopback only) with `--bridge=none --iptables=false
//! --ip6tables=false`, its data and exec roots in the test's temp folder,
//! and every container on `--network none`. It never creates a bridge on
//! the host or touches the host's firewall. The image is built here from
//! Debian's `busybox-static` with `docker import`; nothing is pulled. Every
//! process is stopped by its PID and every mount it left is undone.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::agent::wait_for;

pub(crate) const IMAGE: &str = "secretd-test/busybox:local";

pub(crate) fn require_docker() {
    assert!(
        crate::common::is_root(),
        "the Docker test needs root (dockerd, FUSE): run it as root"
    );
    for tool in ["dockerd", "docker", "unshare", "busybox"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "the Docker test needs `{tool}`: scripts/deps.sh --test installs docker.io and busybox-static"
        );
    }
    assert!(
        Path::new("/dev/fuse").exists(),
        "the Docker test needs /dev/fuse (modprobe fuse)"
    );
}

/// A `dockerd` in a network namespace of its own, with everything it owns
/// under `dir`.
pub(crate) struct Dockerd {
    child: Option<Child>,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        Dockerd::start_with(dir, "")
    }

    /// With more flags for dockerd (`--debug`, for the swarm test).
    pub(crate) fn start_with(dir: &Path, flags: &str) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        // `exec` keeps the PID: the child we hold is dockerd itself.
        let script = format!(
            "ip link set lo up && exec dockerd --data-root {d}/data --exec-root {d}/exec \
             --pidfile {d}/dockerd.pid -H unix://{d}/docker.sock --storage-driver vfs \
             --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false {flags}",
            d = dir.display()
        );
        let child = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn unshare --net dockerd");
        let mut d = Dockerd {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + crate::common::secs(60);
        while !d.docker(&["version"]).status.success() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited ({status}):\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn command(&self) -> Command {
        let mut c = Command::new("docker");
        c.env(
            "DOCKER_HOST",
            format!("unix://{}/docker.sock", self.dir.display()),
        )
        .env("DOCKER_CONFIG", self.dir.join("client"));
        c
    }

    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `docker run --rm --network none -v VOLUME IMAGE CMD...`.
    fn run(&self, volume: &str, cmd: &[&str]) -> Output {
        self.command()
            .args(["run", "--rm", "--network", "none", "-v", volume, IMAGE])
            .args(cmd)
            .output()
            .expect("run docker")
    }

    /// Builds the test image from Debian's busybox-static: `/bin/busybox`
    /// and a link per applet, and the folders a container expects.
    pub(crate) fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for d in ["run", "tmp", "proc", "sys", "dev", "etc"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let busybox = which("busybox");
        std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
        let list = Command::new(&busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
            }
        }
        let tar = self.dir.join("rootfs.tar");
        let st = Command::new("tar")
            .args([
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "tar the busybox root");
        self.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// Every mount point left under our folder (netns files, the data
    /// root's bind), deepest first.
    fn leftover_mounts(&self) -> Vec<String> {
        let prefix = self.dir.display().to_string();
        let mut m: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        m.sort_by_key(|p| std::cmp::Reverse(p.len()));
        m
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.command().args(["rm", "-f", "secretd-reader"]).output();
        // containerd is dockerd's child; its PID is in its pid file.
        let containerd = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + crate::common::secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                signal(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = containerd {
            let deadline = Instant::now() + crate::common::secs(10);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive(pid) {
                signal(pid, libc::SIGKILL);
            }
        }
        for m in self.leftover_mounts() {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a PID we started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A container that prints `/run/secrets/password` in a loop, and its
/// lines with the time each reached the test.
fn start_reader(docker: &Dockerd, volume: &str) -> (Child, mpsc::Receiver<(Instant, String)>) {
    let mut reader = docker
        .command()
        .args([
            "run",
            "--rm",
            "--name",
            "secretd-reader",
            "--network",
            "none",
            "-v",
            volume,
            IMAGE,
        ])
        .args([
            "sh",
            "-c",
            "while :; do cat /run/secrets/password; echo; usleep 2000; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = reader.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    (reader, rx)
}

/// How long after `after` the container printed `want`.
fn seen(
    lines: &mpsc::Receiver<(Instant, String)>,
    want: &str,
    after: Instant,
    within: Duration,
) -> Duration {
    let deadline = after + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) if line == want => return at.saturating_duration_since(after),
            Ok(_) => {}
            Err(e) => panic!("the container never printed {want:?} ({e})"),
        }
    }
}

/// Rotates `web_pw` to v1..=v`n`, timing each from the rotate call's
/// answer to the container's line.
fn rotations_reach_the_container(
    c: &crate::common::Cluster,
    lines: &mpsc::Receiver<(Instant, String)>,
    n: usize,
) {
    let mut delays = Vec::new();
    for i in 1..=n {
        let value = format!("v{i}");
        c.sctl(&["secret", "rotate", "web_pw", "-"], Some(value.as_bytes()));
        let rotated = Instant::now();
        delays.push(seen(lines, &value, rotated, crate::common::secs(10)));
    }
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    println!(
        "RESULT docker rotation_visible_ms p50={:.1} p99={:.1} max={:.1} (n={n})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        delays.last().unwrap().as_secs_f64() * 1e3
    );
    // The 100 ms goal is checked on the median: one slow round on a noisy
    // shared box says nothing about the agent (bench agent measures p99).
    assert!(
        p50 <= Duration::from_millis(100),
        "rotation seen after {p50:?} (median)"
    );
}

/// The container cannot write its secret: not through the read-only
/// volume, and not through a writable one (the agent refuses).
fn container_cannot_write(docker: &Dockerd, view: &Path) {
    let w = docker.docker(&[
        "exec",
        "secretd-reader",
        "sh",
        "-c",
        "echo x > /run/secrets/password",
    ]);
    assert!(!w.status.success());
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("Read-only file system"),
        "{w:?}"
    );
    let rw = format!("{}:/run/secrets", view.display());
    let w = docker.run(&rw, &["sh", "-c", "echo x > /run/secrets/password"]);
    assert!(!w.status.success());
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("Read-only file system"),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_container_reads_the_agents_secrets() {
    require_docker();
    let (c, _agent, mount) = crate::agent::one_served_task("fuse", "web_pw", b"v0").await;
    let view = mount.join("web.1");

    // Other tests add interfaces meanwhile (the fault suite's veths), so
    // only Docker's own bridge is looked for.
    let bridge = || {
        std::fs::read_to_string("/proc/net/dev")
            .unwrap()
            .contains("docker0:")
    };
    let bridge_before = bridge();
    let docker = Dockerd::start(&c.dir.path().join("docker"));
    assert!(
        bridge_before || !bridge(),
        "dockerd must not create a bridge (docker0) on the host"
    );
    docker.import_busybox();
    let volume = format!("{}:/run/secrets:ro", view.display());

    // The README's command: the container reads the secret.
    let out = docker.run(&volume, &["cat", "/run/secrets/password"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"v0");

    // A long-running container reads the file in a loop; every rotation
    // shows up in what it prints.
    let (mut reader, lines) = start_reader(&docker, &volume);
    seen(&lines, "v0", Instant::now(), crate::common::secs(30));
    let rotations = 20;
    rotations_reach_the_container(&c, &lines, rotations);

    container_cannot_write(&docker, &view);
    assert_eq!(
        std::fs::read(view.join("password")).unwrap(),
        format!("v{rotations}").as_bytes()
    );

    // The task goes: the container lists nothing at /run/secrets, either
    // an empty directory (exit 0) or, once the agent's directory is gone,
    // "No such file or directory" (exit 1); both were seen, run to run.
    // Reading the secret fails with ENOENT. The README says exactly this.
    c.sctl(&["task", "rm", "web.1"], None);
    let ls = || docker.docker(&["exec", "secretd-reader", "ls", "-A", "/run/secrets"]);
    wait_for(
        "the container's view to empty",
        crate::common::secs(15),
        || ls().stdout.is_empty(),
    );
    let o = ls();
    let empty = o.status.success() && o.stderr.is_empty();
    let enoent = o.status.code() == Some(1)
        && String::from_utf8_lossy(&o.stderr) == "ls: /run/secrets: No such file or directory\n";
    assert!(o.stdout.is_empty() && (empty || enoent), "{o:?}");
    let gone = docker.docker(&["exec", "secretd-reader", "cat", "/run/secrets/password"]);
    assert!(!gone.status.success(), "{gone:?}");
    assert_eq!(
        String::from_utf8_lossy(&gone.stderr),
        "cat: can't open '/run/secrets/password': No such file or directory\n"
    );

    docker.ok(&["rm", "-f", "secretd-reader"]);
    let _ = reader.wait();
    drop(docker);
    let left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("{}/docker/", c.dir.path().display())))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}
