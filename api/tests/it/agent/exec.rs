//! `agent exec`: a command run with its task's files, acting on changes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::secretd_bin;
use secretd_api::pb::secretstore::{secrets_client::SecretsClient, RotateRequest};

use super::{one_served_task, require_root_and_fuse, terminate};

/// The log file at `log` says each of `needles`.
fn assert_logged(log: &Path, needles: &[&str]) {
    let logged = std::fs::read_to_string(log).unwrap();
    for n in needles {
        assert!(logged.contains(n), "{n:?} not in the log:\n{logged}");
    }
}

/// `agent exec --on-change`: CMD is signalled, or restarted, when a secret
/// of its task changes; a burst of rotations is one action; the log names
/// the secret; SIGTERM to `agent exec` reaches CMD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuse_agent_exec_acts_on_changes() {
    agent_exec_acts_on_changes("fuse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_agent_exec_acts_on_changes() {
    agent_exec_acts_on_changes("tmpfs").await;
}

async fn agent_exec_acts_on_changes(backend: &str) {
    use std::io::BufRead;
    require_root_and_fuse();
    let (c, _agent, mount) = one_served_task(backend, "db_pw", b"v0").await;
    let mut secrets = SecretsClient::new(c.channel(0).await);
    let mut version = 0;

    // Starts `agent exec` with these flags and a shell script as CMD; its
    // stdout lines arrive on the channel, its log goes to a file. It starts
    // with SIGHUP ignored, as under `nohup`: CMD must still get it (a shell
    // started with a signal ignored cannot trap it).
    let exec = |flags: &[&str], script: &str, log: &Path| {
        let mut cmd = Command::new(secretd_bin());
        // SAFETY: between fork and exec, `signal` and `setpgid` only. A
        // group of its own, so a failing test kills CMD with it (`Reaped`).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .args([
                "agent",
                "--mount",
                mount.to_str().unwrap(),
                "--endpoints",
                &c.endpoints(),
            ])
            .args(["exec", "--task", "web.1"])
            .args(flags)
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        (Reaped(child), rx)
    };
    let next = |rx: &std::sync::mpsc::Receiver<String>, within: Duration| {
        rx.recv_timeout(within)
            .unwrap_or_else(|e| panic!("no line from CMD within {within:?}: {e}"))
    };

    // signal=HUP, with a 2 s quiet period: three quick rotations are one HUP.
    let log = c.dir.path().join("exec-hup.log");
    let (mut child, rx) = exec(
        &["--on-change", "signal=HUP", "--on-change-quiet-ms", "2000"],
        "trap 'echo hup $(cat /run/secrets/password)' HUP; echo ready; while :; do sleep 0.05; done",
        &log,
    );
    assert_eq!(next(&rx, crate::common::secs(15)), "ready");
    let rotate = |version: usize| RotateRequest {
        name_or_id: "db_pw".into(),
        data: format!("v{version}").into_bytes(),
    };
    for _ in 0..3 {
        version += 1;
        secrets.rotate(rotate(version)).await.unwrap();
    }
    assert_eq!(next(&rx, crate::common::secs(15)), "hup v3");
    assert!(
        rx.recv_timeout(crate::common::secs(4)).is_err(),
        "a burst of rotations must be one signal"
    );
    assert_logged(&log, &["secret db_pw (password)", "signalling"]);
    // SIGTERM to `agent exec` reaches CMD, and its status is exec's.
    assert_eq!(terminate(&mut child.0).code(), Some(128 + 15));

    // restart: a new CMD process that reads the new version.
    let log = c.dir.path().join("exec-restart.log");
    let (mut child, rx) = exec(
        &["--on-change", "restart", "--on-change-quiet-ms", "100"],
        "echo start $$ $(cat /run/secrets/password); exec sleep 1000",
        &log,
    );
    let first = next(&rx, crate::common::secs(15));
    assert!(first.ends_with(" v3"), "{first}");
    version += 1;
    secrets.rotate(rotate(version)).await.unwrap();
    let second = next(&rx, crate::common::secs(15));
    assert!(second.ends_with(" v4"), "{second}");
    assert_ne!(
        first.split(' ').nth(1),
        second.split(' ').nth(1),
        "a new process"
    );
    assert_logged(&log, &["restarting", "secret db_pw"]);
    assert_eq!(terminate(&mut child.0).code(), Some(128 + 15));

    // A mistaken value is refused before anything runs.
    let out = Command::new(secretd_bin())
        .args([
            "agent",
            "--mount",
            mount.to_str().unwrap(),
            "exec",
            "--task",
            "web.1",
        ])
        .args(["--on-change", "signal=NOPE", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a signal name"));
}

/// `agent exec` in a process group of its own, with its CMD: whatever
/// is left of the group when the test ends (a failed assertion
/// included) is killed, so no CMD outlives the test.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the group this test created.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}
