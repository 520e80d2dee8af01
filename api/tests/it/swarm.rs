//! Docker Swarm gets its secrets from secretd: a real dockerd in swarm
//! mode asks `secretd docker-plugin` for a secret created with `docker
//! secret create --driver`, and a service's task reads secretd's value at
//! `/run/secrets/NAME`; a rotation reaches the next task; a service
//! outside the plugin's policy gets nothing.
//!
//! dockerd is confined as in `docker.rs`: its own network namespace
//! (loopback only), no bridge or firewall rules on the host, its data in
//! the test's folder, an image imported from Debian's busybox-static. Swarm
//! mode makes a `docker_gwbridge` bridge and an ingress veth, inside that
//! namespace only; the test checks the host has neither. The plugin's
//! socket is where dockerd looks for a plugin that is not managed,
//! `/run/docker/plugins/NAME.sock`, under a name of this run's own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use secretd_client::pb::secretstore::{driver_client::DriverClient, DriverFetchRequest};

use crate::agent::wait_for;
use crate::common::{secs, Cluster};
use crate::docker::{require_docker, Dockerd, IMAGE};

/// `secretd docker-plugin`, stopped (SIGTERM) when dropped.
struct Plugin {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Plugin {
    fn start(c: &Cluster, name: &str, policy: &Path) -> Plugin {
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let log = c.dir.path().join("plugin.log");
        let (cert, key) = c.cert("driver-swarm");
        let ca = c.tls.as_ref().unwrap().join("ca.pem");
        let child = Command::new(crate::common::secretd_bin())
            .args(["docker-plugin", "--name", name, "--policy"])
            .arg(policy)
            .args(["--endpoints", &c.endpoints(), "--cacert"])
            .arg(&ca)
            .args(["--cert", &cert, "--key", &key])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start secretd docker-plugin");
        let mut p = Plugin { child, socket, log };
        wait_for("the plugin's socket", secs(30), || {
            if let Some(st) = p.child.try_wait().unwrap() {
                panic!("the plugin exited ({st}):\n{}", p.log());
            }
            p.socket.exists()
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        // SAFETY: kill(2) on the PID of the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The Driver API, asked directly: a driver's certificate gets the value;
/// an admin's and a node agent's are refused, as they are for each other's
/// APIs.
async fn only_a_driver_may_fetch(c: &Cluster) {
    let ask = DriverFetchRequest {
        secret: "db_pw".into(),
        service_name: "direct".into(),
        ..Default::default()
    };
    let mut driver = DriverClient::new(c.channel_as(0, "driver-swarm"));
    let got = driver.fetch(ask.clone()).await.unwrap().into_inner();
    assert_eq!(got.data, b"s3cret-v1");
    assert_eq!(got.version, 1);
    for cert in ["admin", "node-n1"] {
        let mut other = DriverClient::new(c.channel_as(0, cert));
        let e = other.fetch(ask.clone()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{cert}: {e}");
        assert!(
            e.message().contains("only a secret driver's certificate"),
            "{e}"
        );
    }
    let nosuch = DriverFetchRequest {
        secret: "nosuch".into(),
        ..ask
    };
    let e = driver.fetch(nosuch).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
}

/// Network interfaces of the host's namespace (this process's).
fn host_links() -> String {
    std::fs::read_to_string("/proc/net/dev").unwrap()
}

/// The running container of `service` other than `not`, once it prints
/// `want` for `/run/secrets/app_pw`.
fn task_reading(docker: &Dockerd, service: &str, not: Option<&str>, want: &str) -> String {
    let mut found = String::new();
    let label = format!("label=com.docker.swarm.service.name={service}");
    wait_for(
        &format!("a {service} task reading {want:?}"),
        secs(120),
        || {
            let ps = docker.ok(&["ps", "-q", "--no-trunc", "--filter", &label]);
            for id in ps.lines().filter(|id| Some(*id) != not) {
                let out = docker.docker(&["exec", id, "cat", "/run/secrets/app_pw"]);
                if out.status.success() && out.stdout == want.as_bytes() {
                    found = id.to_string();
                    return true;
                }
            }
            false
        },
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_services_get_their_secrets_from_secretd() {
    require_docker();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = audit_dir.path().join("audit.log");
    let mut c = Cluster::prepare_with(1, &["--audit-log", audit.to_str().unwrap()], true);
    c.spawn(0);
    c.wait_leader(secs(30)).await;
    c.sctl(&["secret", "create", "db_pw", "-"], Some(b"s3cret-v1"));
    only_a_driver_may_fetch(&c).await;

    let policy = c.dir.path().join("swarm-policy.json");
    std::fs::write(
        &policy,
        r#"{"rules":[{"services":["web"],"secrets":["db_pw"]}]}"#,
    )
    .unwrap();
    let name = format!("secretd-it-{}", std::process::id());
    let plugin = Plugin::start(&c, &name, &policy);

    let docker = Dockerd::start_with(&c.dir.path().join("docker"), "--debug");
    docker.ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    let links = host_links();
    assert!(
        !links.contains("docker_gwbridge:") && !links.contains("docker0:"),
        "swarm mode made a bridge on the host:\n{links}"
    );
    docker.import_busybox();

    // Swarm keeps a reference only: the value is secretd's.
    let data = c.dir.path().join("data");
    std::fs::write(&data, b"a value").unwrap();
    let with_data = docker.docker(&[
        "secret",
        "create",
        "--driver",
        &name,
        "x",
        data.to_str().unwrap(),
    ]);
    assert!(!with_data.status.success(), "{with_data:?}");
    docker.ok(&[
        "secret",
        "create",
        "--driver",
        &name,
        "--label",
        "secretd.source=db_pw",
        "app_pw",
    ]);
    let driver = docker.ok(&["secret", "inspect", "-f", "{{.Spec.Driver.Name}}", "app_pw"]);
    assert_eq!(driver.trim(), name);

    let service = |svc: &str| {
        docker.ok(&[
            "service", "create", "--detach", "--name", svc, "--secret", "app_pw", IMAGE, "sleep",
            "1000000",
        ]);
    };
    service("web");
    let first = task_reading(&docker, "web", None, "s3cret-v1");

    // A rotation in secretd reaches the next task (the plugin answers
    // DoNotReuse, so Swarm asks again).
    c.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"s3cret-v2"));
    docker.ok(&["service", "update", "--detach", "--force", "web"]);
    task_reading(&docker, "web", Some(&first), "s3cret-v2");

    // Outside the policy: no value, and the task fails. dockerd keeps the
    // plugin's words in its debug log; the task's error is Swarm's own.
    service("intruder");
    wait_for("the intruder's task to fail", secs(120), || {
        docker
            .ok(&[
                "service",
                "ps",
                "intruder",
                "--no-trunc",
                "--format",
                "{{.Error}}",
            ])
            .contains("unable to get secret")
    });
    assert!(
        docker
            .log()
            .contains(r#"service \"intruder\" may not receive secret \"db_pw\""#),
        "dockerd's log lacks the plugin's refusal:\n{}",
        docker.log()
    );
    let running = docker.ok(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.swarm.service.name=intruder",
        "--filter",
        "status=running",
    ]);
    assert!(
        running.trim().is_empty(),
        "an intruder task runs: {running}"
    );

    docker.ok(&["service", "rm", "web", "intruder"]);
    let _ = docker.docker(&["swarm", "leave", "--force"]);
    drop(docker);
    let socket = plugin.socket.clone();
    let log = plugin.stop();
    assert!(!socket.exists(), "the plugin left its socket behind");
    assert!(
        log.contains("delivered") && log.contains("refused"),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "the plugin logged a value:\n{log}");

    // The member audited each delivery with Swarm's names, never a value.
    let audit = std::fs::read_to_string(&audit).unwrap();
    let delivered: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("secret.deliver") && l.contains("service web"))
        .collect();
    assert!(delivered.len() >= 2, "{audit}");
    assert!(
        delivered.iter().all(|l| l.contains("driver/swarm")),
        "{audit}"
    );
    assert!(!audit.contains("s3cret"), "the audit holds a value");
}
