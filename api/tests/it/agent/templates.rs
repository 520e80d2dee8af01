//! Templated configs: rendered per task, and a template that is a bomb or
//! leaks errors stays in its own task.

use super::{
    http_get, one_served_task, one_served_task_with, read, require_root_and_fuse, wait_for,
};

/// Swarm's templated configs (`--template-driver golang`): the agent
/// renders each for its task (context, environment, the task's secrets),
/// renders again when a secret it reads rotates, and a template that
/// cannot render fails its own task only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templated_configs_render_per_task() {
    require_root_and_fuse();
    let (c, agent, mount) = one_served_task("fuse", "db_pw", b"hunter2").await;
    let tpl = "task={{.Task.Name}} svc={{.Service.Name}} node={{.Node.ID}} \
               host={{.Node.Hostname}} user={{env \"APP_USER\"}} pw={{secret \"password\"}}\n";
    c.sctl(
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "app_tpl",
            "-",
        ],
        Some(tpl.as_bytes()),
    );
    c.sctl(
        &[
            "config",
            "create",
            "--template-driver",
            "golang",
            "bad_tpl",
            "-",
        ],
        Some(b"{{secret \"nope\"}}"),
    );
    assert_eq!(
        c.sctl(
            &[
                "config",
                "inspect",
                "-f",
                "{{json .Spec.Templating}}",
                "app_tpl"
            ],
            None
        ),
        "{\"Name\":\"golang\"}\n"
    );
    for (task, user) in [("api.1", "alice"), ("api.2", "bob")] {
        c.sctl(
            &[
                "task",
                "create",
                task,
                "--node",
                "n1",
                "--secret",
                "source=db_pw,target=password",
                "--config",
                "source=app_tpl,target=/etc/app.conf",
                "--env",
                &format!("APP_USER={user}"),
            ],
            None,
        );
    }
    c.sctl(
        &[
            "task",
            "create",
            "broken.1",
            "--node",
            "n1",
            "--config",
            "source=bad_tpl,target=/etc/b.conf",
        ],
        None,
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let want = |task: &str, svc: &str, user: &str, pw: &str| {
        format!(
            "task={task} svc={svc} node=n1 host={} user={user} pw={pw}\n",
            host.trim()
        )
    };
    let conf = |task: &str| mount.join(task).join("etc/app.conf");
    wait_for("the rendered configs", crate::common::secs(15), || {
        read(&conf("api.2")).is_some()
    });
    assert_eq!(
        read(&conf("api.1")).unwrap(),
        want("api.1", "api", "alice", "hunter2").as_bytes()
    );
    assert_eq!(
        read(&conf("api.2")).unwrap(),
        want("api.2", "api", "bob", "hunter2").as_bytes()
    );
    // The broken template fails its task alone, with the reason.
    wait_for(
        "the render error in the log",
        crate::common::secs(15),
        || agent.logs().contains("cannot render config"),
    );
    assert!(
        agent
            .logs()
            .contains("template: line 1, column 3: error calling secret: the task has no secret with that target"),
        "{}",
        agent.logs()
    );
    assert!(!mount.join("broken.1/etc/b.conf").exists());
    assert_eq!(read(&mount.join("web.1/password")).unwrap(), b"hunter2");

    // A rotation of the secret it reads renders it again.
    c.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"s3cond"));
    wait_for("the re-rendered config", crate::common::secs(15), || {
        read(&conf("api.1")) == Some(want("api.1", "api", "alice", "s3cond").into_bytes())
    });

    // Mistakes are refused with the reason.
    let out = c.secretctl(
        &["config", "create", "--template-driver", "jinja", "x", "-"],
        Some(b"x"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("template driver 'jinja' is not supported")
    );
    let out = c.secretctl(
        &["task", "create", "t.1", "--node", "n1", "--env", "1X=y"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("environment variable name '1X' is not valid"));
    let out = c.secretctl(
        &["task", "create", "t.1", "--node", "n1", "--env", "NOEQUALS"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
}

/// A figure (in KiB) of /proc/<pid>/status, such as `VmHWM`: the peak
/// resident memory.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// D9 and D15 (issue 27): a template bomb (a config repeating a 400 KiB
/// secret 1,536 times, 600 MiB unbounded) fails its own task with the
/// limit's message, in bounded memory; a templated secret that does not
/// parse fails with where the mistake is, never with its text, in the log
/// and on /health; the node's other task keeps being served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_bombs_and_leaky_errors_stay_in_their_task() {
    require_root_and_fuse();
    let port = crate::common::free_port();
    let metrics = vec![
        "--listen-metrics-urls".to_string(),
        format!("http://127.0.0.1:{port}"),
    ];
    let (c, mut agent, mount) = one_served_task_with("fuse", "db_pw", b"pw-1", metrics).await;
    let password = mount.join("web.1/password");
    assert_eq!(read(&password).unwrap(), b"pw-1");
    let pid = agent.child.as_ref().unwrap().id();
    let peak_before_kib = status_kib(pid, "VmHWM");

    c.sctl(&["secret", "create", "big", "-"], Some(&[b'B'; 400 * 1024]));
    let bomb = "{{secret \"big\"}}".repeat(1536);
    let leaky = "user=app\n{{if hunter2-TOPSECRET}}";
    for (kind, name, data) in [
        ("config", "bomb", bomb.as_str()),
        ("secret", "leaky", leaky),
    ] {
        c.sctl(
            &[kind, "create", "--template-driver", "golang", name, "-"],
            Some(data.as_bytes()),
        );
    }
    c.sctl(
        &[
            "task",
            "create",
            "bomb.1",
            "--node",
            "n1",
            "--secret",
            "source=big,target=big",
            "--config",
            "source=bomb,target=/etc/bomb.conf",
        ],
        None,
    );
    c.sctl(
        &[
            "task",
            "create",
            "leak.1",
            "--node",
            "n1",
            "--secret",
            "source=leaky,target=app.conf",
        ],
        None,
    );
    let mut health = String::new();
    wait_for(
        "/health to report both tasks",
        crate::common::secs(20),
        || {
            let (code, body) = http_get(port, "/health");
            health = body;
            code == 503 && health.contains("\"bomb.1\"") && health.contains("\"leak.1\"")
        },
    );
    wait_for("both failures in the log", crate::common::secs(10), || {
        let logs = agent.logs();
        logs.contains("task=bomb.1") && logs.contains("task=leak.1")
    });
    // The other task is still served: a rotation reaches it.
    c.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"pw-2"));
    wait_for("web.1 rotated", crate::common::secs(15), || {
        read(&password) == Some(b"pw-2".to_vec())
    });
    assert!(agent.child.as_mut().unwrap().try_wait().unwrap().is_none());
    let peak_grew_kib = status_kib(pid, "VmHWM") - peak_before_kib;

    let logs = agent.logs();
    let failed: serde_json::Value = serde_json::from_str(&health).unwrap();
    let failed = &failed["failed_tasks"];
    let (bomb_why, leak_why) = (
        failed["bomb.1"].as_str().unwrap(),
        failed["leak.1"].as_str().unwrap(),
    );
    eprintln!("peak grew by {peak_grew_kib} KiB\nbomb.1: {bomb_why}\nleak.1: {leak_why}");
    // Measured: unbounded, the render's buffer grew to hold 600 MiB
    // and the peak grew by 2.5 GiB; bounded, by 2.5-5 MiB (the 1000 KiB
    // output buffer, the 400 KiB secret, the fetches and the new tasks).
    assert!(
        peak_grew_kib < 64 * 1024,
        "the agent's peak memory grew by {peak_grew_kib} KiB"
    );
    assert!(
        bomb_why
            .contains("the rendered text is larger than 1024000 bytes, the limit for this file"),
        "{bomb_why}"
    );
    assert!(
        leak_why.contains("(app.conf): template: line 2, column 3: unsupported action"),
        "{leak_why}"
    );
    for text in ["TOPSECRET", "hunter2", "BBBB", "pw-1", "pw-2"] {
        assert!(!health.contains(text), "{text:?} on /health: {health}");
        assert!(!logs.contains(text), "{text:?} in the log:\n{logs}");
    }
    agent.signal("TERM");
}
