//! What one task, or one user, cannot do to another: a broken task breaks
//! nothing else, and other users read nothing on the mount.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Cluster;

use super::{as_nobody, files_under, http_get, read, require_root_and_fuse, wait_for, Agent};

/// Every regular file under `dir` (symlinks not followed) that holds
/// `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

/// D2 and D3: malformed tasks are refused at creation; and a task the
/// agent cannot serve breaks nothing else: the node's other tasks,
/// additions, rotations and removals all apply, the failure shows in the
/// log and in /health, no plaintext copy of the broken task is left
/// anywhere, and an agent started while it exists serves the rest.
async fn one_broken_task_breaks_nothing_else(backend: &str) {
    require_root_and_fuse();
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", "a", "-"], Some(b"secret-of-a-1"));
    c.sctl(&["secret", "create", "b", "-"], Some(b"secret-of-b-1"));
    c.sctl(&["config", "create", "conf", "-"], Some(b"config-of-conf"));
    // Each malformed task, as its mount flags, and the refusal it gets.
    let malformed: [(&[&str], &str); 7] = [
        (
            &[
                "--secret",
                "source=a,target=etc",
                "--config",
                "source=conf,target=/etc/app.conf",
            ],
            "collide",
        ),
        (
            &[
                "--secret",
                "source=a,target=a",
                "--config",
                "source=conf,target=/a/b",
            ],
            "collide",
        ),
        (
            &["--secret", "source=a,target=..data"],
            "may not start with '..'",
        ),
        (
            &["--secret", "source=a,target=..."],
            "may not start with '..'",
        ),
        (
            &["--secret", "source=a,target=..2024_01"],
            "may not start with '..'",
        ),
        (
            &["--config", "source=conf,target=/..data"],
            "may not start with '..'",
        ),
        (
            &["--config", "source=conf,target=/..data/x"],
            "may not start with '..'",
        ),
    ];
    for (mounts, refusal) in malformed {
        let mut args = vec!["task", "create", "bad0", "--node", "n1"];
        args.extend_from_slice(mounts);
        let (_, err) = c.sctl_err(&args, None);
        assert!(err.contains(refusal), "{mounts:?}: {err}");
    }
    c.sctl(
        &[
            "task",
            "create",
            "web.1",
            "--node",
            "n1",
            "--secret",
            "source=a,target=password",
        ],
        None,
    );
    c.sctl(
        &[
            "task",
            "create",
            "bad",
            "--node",
            "n1",
            "--secret",
            "source=b,target=password",
            "--config",
            "source=conf,target=/etc/app.conf",
        ],
        None,
    );
    let mount = c.dir.path().join("mnt");
    let port = crate::common::free_port();
    let log = c.dir.path().join("agent.log");
    let start = || {
        let mut a = Agent {
            child: None,
            log: log.clone(),
            args: vec![
                "agent".into(),
                "--node".into(),
                "n1".into(),
                "--mount".into(),
                mount.display().to_string(),
                "--backend".into(),
                backend.into(),
                "--endpoints".into(),
                c.endpoints(),
                "--listen-metrics-urls".into(),
                format!("http://127.0.0.1:{port}"),
            ],
            env: vec![("SECRETD_TEST_FAIL_TASK".into(), "bad".into())],
        };
        a.spawn();
        a
    };
    let mut agent = start();
    wait_for("web.1", crate::common::secs(15), || {
        read(&mount.join("web.1/password")) == Some(b"secret-of-a-1".to_vec())
    });
    wait_for(
        "/health to report the broken task",
        crate::common::secs(10),
        || {
            let (code, body) = http_get(port, "/health");
            code == 503 && body.contains("\"bad\"")
        },
    );
    assert!(http_get(port, "/metrics")
        .1
        .contains("secretd_agent_tasks_failed 1"));
    wait_for("the failure in the log", crate::common::secs(10), || {
        agent.logs().contains("cannot serve this task")
    });
    // Later changes for the node still apply.
    c.sctl(
        &[
            "task",
            "create",
            "web.2",
            "--node",
            "n1",
            "--secret",
            "source=a,target=pw",
        ],
        None,
    );
    wait_for("a new task", crate::common::secs(10), || {
        read(&mount.join("web.2/pw")).is_some()
    });
    c.sctl(&["secret", "rotate", "a", "-"], Some(b"secret-of-a-2"));
    wait_for("a rotation", crate::common::secs(10), || {
        read(&mount.join("web.2/pw")) == Some(b"secret-of-a-2".to_vec())
    });
    c.sctl(&["task", "rm", "web.1"], None);
    wait_for("a removal", crate::common::secs(10), || {
        !mount.join("web.1").exists()
    });
    // Two retries later: no copy of the broken task's plaintext anywhere in
    // the mount (FUSE: the tree; tmpfs: every file, timestamped directories
    // included).
    std::thread::sleep(crate::common::secs(11));
    assert!(files_holding(&mount, b"secret-of-b-1").is_empty());
    assert!(files_holding(&mount, b"config-of-conf").is_empty());
    assert!(!mount.join("bad/password").exists());
    if backend == "tmpfs" {
        {
            let task = "web.2";
            let stamps = std::fs::read_dir(mount.join(task))
                .unwrap()
                .flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("..") && n != "..data"
                })
                .count();
            assert_eq!(stamps, 1, "{task}: leftover timestamped directories");
        }
    }
    // An agent started while the broken task exists serves the others.
    agent.signal("TERM");
    let mut agent = start();
    wait_for("web.2 after a restart", crate::common::secs(15), || {
        read(&mount.join("web.2/pw")) == Some(b"secret-of-a-2".to_vec())
    });
    c.sctl(&["task", "rm", "bad"], None);
    wait_for("/health healthy again", crate::common::secs(15), || {
        http_get(port, "/health").0 == 200
    });
    agent.signal("TERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn fuse_agent_isolates_a_broken_task() {
    one_broken_task_breaks_nothing_else("fuse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_agent_isolates_a_broken_task() {
    one_broken_task_breaks_nothing_else("tmpfs").await;
}

/// D6: another local user reaches nothing through the mount: not the list
/// of tasks, not a secret at the default mode 0444. Through a bind mount of
/// its task's directory (what a container gets), a task's uid reads its
/// file, and any other uid cannot enter.
async fn other_users_read_nothing(backend: &str) {
    require_root_and_fuse();
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(15)).await;
    c.sctl(&["secret", "create", "s", "-"], Some(b"nobody-must-not"));
    c.sctl(
        &[
            "task",
            "create",
            "web.1",
            "--node",
            "n1",
            "--secret",
            "source=s,target=password",
        ],
        None,
    );
    c.sctl(
        &[
            "task",
            "create",
            "mine.1",
            "--node",
            "n1",
            "--secret",
            "source=s,target=pw,uid=65534,gid=65534,mode=0400",
        ],
        None,
    );
    // Let nobody reach the mount point itself, so the mount's own modes
    // are what is tested.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(c.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mount = c.dir.path().join("mnt");
    let _agent = Agent::start(&c, &mount, backend, &c.dir.path().join("agent.log"));
    wait_for("the files", crate::common::secs(15), || {
        read(&mount.join("web.1/password")).is_some() && read(&mount.join("mine.1/pw")).is_some()
    });
    let root_meta = std::fs::metadata(&mount).unwrap();
    assert_eq!(root_meta.mode() & 0o777, 0o700, "the mount root");
    let ls = as_nobody(&["ls", mount.to_str().unwrap()]);
    assert!(
        !ls.status.success(),
        "nobody listed the tasks: {}",
        String::from_utf8_lossy(&ls.stdout)
    );
    let cat = as_nobody(&["cat", mount.join("web.1/password").to_str().unwrap()]);
    assert!(!cat.status.success());
    assert!(String::from_utf8_lossy(&cat.stderr).contains("Permission denied"));
    // What a container sees: a bind mount of the task's directory.
    let binds = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(binds.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut mounted = Vec::new();
    for task in ["web.1", "mine.1"] {
        let dst = binds.path().join(task);
        std::fs::create_dir(&dst).unwrap();
        let st = Command::new("mount")
            .args([
                "--bind",
                mount.join(task).to_str().unwrap(),
                dst.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        mounted.push(dst);
    }
    let mine = as_nobody(&["cat", binds.path().join("mine.1/pw").to_str().unwrap()]);
    let web = as_nobody(&["cat", binds.path().join("web.1/password").to_str().unwrap()]);
    let web_ls = as_nobody(&["ls", binds.path().join("web.1").to_str().unwrap()]);
    for dst in &mounted {
        let _ = Command::new("umount").arg(dst).status();
    }
    assert_eq!(
        mine.stdout,
        b"nobody-must-not",
        "{}",
        String::from_utf8_lossy(&mine.stderr)
    );
    assert!(!web.status.success(), "nobody read another uid's task");
    assert!(!web_ls.status.success(), "nobody listed another uid's task");
}

#[tokio::test(flavor = "multi_thread")]
async fn fuse_mount_refuses_other_users() {
    other_users_read_nothing("fuse").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tmpfs_mount_refuses_other_users() {
    other_users_read_nothing("tmpfs").await;
}
