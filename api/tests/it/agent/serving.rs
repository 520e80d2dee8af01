//! The agent serving live secrets with each backend: values that change
//! under readers, mount points it refuses, and node states and tasks past
//! their first sizes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{secretd_bin, Cluster};
use secretd_api::pb::secretstore::{secrets_client::SecretsClient, RotateRequest};

use super::{read, require_root_and_fuse, value, wait_for, Agent};

fn is_mounted(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

fn consistent(b: &[u8]) -> bool {
    b.len() == 4200 && b.chunks(6).all(|c| c == &b[..6])
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn agent_end_to_end(backend: &str) {
    require_root_and_fuse();
    let mut c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let conf_dir = c.dir.path().join("etc-app");
    let conf_target = conf_dir.join("app.conf");
    c.sctl(&["secret", "create", "db_pw", "-"], Some(b"hunter2"));
    c.sctl(
        &["config", "create", "app_conf", "-"],
        Some(b"listen 80;\n"),
    );
    c.sctl(
        &[
            "task",
            "create",
            "web.1",
            "--node",
            "n1",
            "--secret",
            "source=db_pw,target=password,uid=1000,gid=1001,mode=0400",
            "--config",
            &format!("source=app_conf,target={}", conf_target.display()),
        ],
        None,
    );
    c.sctl(
        &[
            "task", "create", "other.1", "--node", "n2", "--secret", "db_pw",
        ],
        None,
    );

    let mount = c.dir.path().join("mnt");
    let mut agent = Agent::start(&c, &mount, backend, &c.dir.path().join("agent.log"));
    let pw = mount.join("web.1/password");
    let conf = mount
        .join("web.1")
        .join(conf_target.strip_prefix("/").unwrap());
    wait_for("the secret in the mount", crate::common::secs(15), || {
        read(&pw).is_some()
    });

    // Bytes, mode, uid and gid as assigned; other nodes' tasks absent.
    assert_eq!(read(&pw).unwrap(), b"hunter2");
    let m = std::fs::metadata(&pw).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.len()),
        (0o400, 1000, 1001, 7)
    );
    assert_eq!(read(&conf).unwrap(), b"listen 80;\n");
    assert_eq!(std::fs::metadata(&conf).unwrap().mode() & 0o7777, 0o444);
    assert!(!mount.join("other.1").exists());

    // Read-only for everyone, root included.
    let e = std::fs::write(&pw, b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(30), "write: {e}"); // EROFS
    assert_eq!(
        std::fs::write(mount.join("web.1/new"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(30)
    );
    assert!(std::fs::remove_file(&pw).is_err());
    assert!(std::fs::rename(&pw, mount.join("web.1/moved")).is_err());
    assert!(
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o444)).is_err()
    );
    // A user who is not the owner cannot read a 0400 secret.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(&pw)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));

    // `agent exec`: the task's files at /run/secrets and the config at its
    // target, read-only, as the task's user.
    let out = Command::new(secretd_bin())
        .args(["agent", "--mount", mount.to_str().unwrap(), "--endpoints", &c.endpoints()])
        .args(["exec", "--task", "web.1", "--uid", "1000", "--gid", "1001", "--"])
        .args(["sh", "-c"])
        .arg(format!(
            "cat /run/secrets/password; cat {}; id -u; echo x > /run/secrets/password || echo refused",
            conf_target.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hunter2listen 80;\n1000\nrefused\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !conf_dir.exists(),
        "exec created {} on the host",
        conf_dir.display()
    );

    // 100 rotations while a reader hammers the file: every read is one
    // whole version; report how long each rotation took to be readable.
    let mut secrets = SecretsClient::new(c.channel(0).await);
    secrets
        .rotate(RotateRequest {
            name_or_id: "db_pw".into(),
            data: value(0),
        })
        .await
        .unwrap();
    wait_for("the first rotation", crate::common::secs(10), || {
        read(&pw) == Some(value(0))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let hammer = {
        let (stop, reads, pw) = (stop.clone(), reads.clone(), pw.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(b) = read(&pw) {
                    assert!(
                        consistent(&b),
                        "torn or mixed read: {:?}...",
                        &b[..b.len().min(40)]
                    );
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut delays = Vec::new();
    for i in 1..=100 {
        secrets
            .rotate(RotateRequest {
                name_or_id: "db_pw".into(),
                data: value(i),
            })
            .await
            .unwrap();
        let t = Instant::now();
        wait_for("a rotation to show", crate::common::secs(10), || {
            read(&pw) == Some(value(i))
        });
        delays.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().expect("the reader saw only whole versions");
    delays.sort();
    eprintln!(
        "{backend}: rotate-to-readable over 100 rotations: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} concurrent reads, none torn",
        percentile(&delays, 0.5).as_secs_f64() * 1000.0,
        percentile(&delays, 0.99).as_secs_f64() * 1000.0,
        delays.last().unwrap().as_secs_f64() * 1000.0,
        reads.load(Ordering::Relaxed)
    );
    assert!(reads.load(Ordering::Relaxed) > 0);

    // A reader that holds the file open across a rotation reads the
    // version it opened to the end, even when the kernel has dropped its
    // cached pages meanwhile (FUSE then asks the agent for the old bytes).
    {
        use std::io::Read;
        let mut f = std::fs::File::open(&pw).unwrap();
        let mut head = vec![0u8; 600];
        f.read_exact(&mut head).unwrap();
        c.sctl(&["secret", "rotate", "db_pw", "-"], Some(&value(555)));
        wait_for(
            "the rotation past an open reader",
            crate::common::secs(10),
            || read(&pw) == Some(value(555)),
        );
        // SAFETY: a valid open descriptor; the advice only drops clean
        // cached pages of this file.
        let rc = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(rc, 0);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        head.extend(rest);
        assert_eq!(
            head,
            value(100),
            "{backend}: an open reader saw another version"
        );
        c.sctl(&["secret", "rotate", "db_pw", "-"], Some(&value(100)));
        wait_for("the rotation back", crate::common::secs(10), || {
            read(&pw) == Some(value(100))
        });
    }

    // The cluster goes away: the agent keeps serving what it has, then
    // reconnects and catches up with what changed meanwhile.
    for i in 0..3 {
        c.kill9(i);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read(&pw), Some(value(100)));
    for i in 0..3 {
        c.spawn(i);
    }
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "rotate", "db_pw", "-"], Some(&value(101)));
    wait_for(
        "the agent to reconnect and update",
        crate::common::secs(20),
        || read(&pw) == Some(value(101)),
    );

    // SIGTERM unmounts; a restart rebuilds the mount from the cluster.
    agent.signal("TERM");
    assert!(!is_mounted(&mount), "still mounted after SIGTERM");
    assert!(!pw.exists());
    agent.spawn();
    wait_for("the rebuilt mount", crate::common::secs(15), || {
        read(&pw) == Some(value(101))
    });

    // kill -9 leaves a stale mount; the next start cleans it.
    agent.signal("KILL");
    assert!(is_mounted(&mount));
    agent.spawn();
    wait_for(
        "the stale mount to be cleaned",
        crate::common::secs(15),
        || agent.logs().contains("cleaned up a mount left by an agent"),
    );
    wait_for("the mount after a crash", crate::common::secs(15), || {
        read(&pw) == Some(value(101))
    });

    // A second agent on the same mount point is refused.
    let out = Command::new(secretd_bin())
        .args([
            "agent",
            "--node",
            "n1",
            "--mount",
            mount.to_str().unwrap(),
            "--backend",
            backend,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is busy"));

    // Removing the task removes its directory.
    c.sctl(&["task", "rm", "web.1"], None);
    wait_for(
        "the task's directory to go",
        crate::common::secs(10),
        || !mount.join("web.1").exists(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fuse_agent_serves_live_secrets() {
    agent_end_to_end("fuse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_agent_serves_live_secrets() {
    agent_end_to_end("tmpfs").await;
}

#[test]
fn unusable_mount_points_are_refused_clearly() {
    require_root_and_fuse();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let out = Command::new(secretd_bin())
        .args(["agent", "--node", "n1", "--mount", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default(),
        format!("secretd: mount point {} is not a directory", file.display())
    );
    let out = Command::new(secretd_bin())
        .args(["agent", "--mount", "/tmp/x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node is required"));
}

/// D10: forty valid tasks, each with 60 KB of environment, made the node's
/// state larger than one message, and the agent applied nothing after: a
/// removed task's secret stayed readable in the mount, rotations stopped.
/// The state now goes in parts: removals and rotations still arrive.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_state_past_one_message_still_reaches_the_mount() {
    require_root_and_fuse();
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", "victim_pw", "-"], Some(b"victim-1"));
    c.sctl(&["secret", "create", "kept_pw", "-"], Some(b"kept-1"));
    let env = format!("BIG={}", "e".repeat(60_000));
    for i in 0..40 {
        let name = format!("big.{i}");
        let mut args = vec!["task", "create", name.as_str(), "--node", "n1", "--env"];
        args.push(&env);
        if i == 0 {
            args.extend(["--secret", "source=kept_pw,target=pw"]);
        }
        c.sctl(&args, None);
    }
    let victim = ["--secret", "source=victim_pw,target=pw"];
    let mut args = vec!["task", "create", "victim.1", "--node", "n1"];
    args.extend(victim);
    c.sctl(&args, None);
    let mount = c.dir.path().join("mnt");
    let agent = Agent::start(&c, &mount, "tmpfs", &c.dir.path().join("agent.log"));
    wait_for("every task", crate::common::secs(30), || {
        read(&mount.join("victim.1/pw")) == Some(b"victim-1".to_vec())
            && read(&mount.join("big.0/pw")) == Some(b"kept-1".to_vec())
            && mount.join("big.39").is_dir()
    });
    c.sctl(&["task", "rm", "victim.1"], None);
    wait_for("the removal", crate::common::secs(15), || {
        !mount.join("victim.1").exists()
    });
    c.sctl(&["secret", "rotate", "kept_pw", "-"], Some(b"kept-2"));
    wait_for("the rotation", crate::common::secs(15), || {
        read(&mount.join("big.0/pw")) == Some(b"kept-2".to_vec())
    });
    assert!(
        !agent.logs().contains("agent stream failed"),
        "{}",
        agent.logs()
    );
}

/// D17: the tmpfs backend was a fixed 64 MiB and wrote every update as a
/// whole second copy, so a task of about 35 MB could never rotate (ENOSPC,
/// the old value served with no end). The tmpfs now grows with the node's
/// files, and an update writes only what changed: a task of 72 MB is
/// shown, and its secret rotates.
#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_holds_and_rotates_a_task_larger_than_its_first_size() {
    require_root_and_fuse();
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    let chunk = vec![b'c'; 900 * 1024];
    let mut args: Vec<String> = ["task", "create", "huge.1", "--node", "n1"]
        .map(String::from)
        .to_vec();
    for i in 0..80 {
        c.sctl(&["config", "create", &format!("big{i}"), "-"], Some(&chunk));
        args.extend(["--config".into(), format!("source=big{i},target=/cfg/{i}")]);
    }
    c.sctl(&["secret", "create", "huge_pw", "-"], Some(b"huge-1"));
    args.extend(["--secret".into(), "source=huge_pw,target=pw".into()]);
    c.sctl(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let mount = c.dir.path().join("mnt");
    let agent = Agent::start(&c, &mount, "tmpfs", &c.dir.path().join("agent.log"));
    wait_for("72 MB of files", crate::common::secs(60), || {
        read(&mount.join("huge.1/pw")) == Some(b"huge-1".to_vec())
            && std::fs::metadata(mount.join("huge.1/cfg/79")).is_ok_and(|m| m.len() == 900 * 1024)
    });
    c.sctl(&["secret", "rotate", "huge_pw", "-"], Some(b"huge-2"));
    wait_for("the rotation", crate::common::secs(30), || {
        read(&mount.join("huge.1/pw")) == Some(b"huge-2".to_vec())
    });
    assert_eq!(
        std::fs::read(mount.join("huge.1/cfg/0")).unwrap().len(),
        900 * 1024
    );
    assert!(
        !agent.logs().contains("cannot serve this task"),
        "{}",
        agent.logs()
    );
}
