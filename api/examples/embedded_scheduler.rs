//! A small scheduler with secretd embedded: it keeps its nodes' tasks in
//! its own in-process member, gives a node a secret (a secret, then a task
//! on node `n1` mounting it), and a real node agent (`secretd agent`,
//! spawned here) serves the file; it prints the file, rotates the secret,
//! prints it again, and stops. The agent reaches the member over a
//! plaintext loopback listener on a free port; the scheduler itself uses
//! the in-process client, through no socket.
//!
//! Needs root (the agent mounts FUSE, or a tmpfs without /dev/fuse) and
//! the `secretd` binary: `cargo build -p secretd-api --bin secretd`, then
//!   cargo run -p secretd-api --example embedded_scheduler
//! (`SECRETD_BIN` names another binary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use secretd_api::embed::{mount, Client, Config, EmbedError, Member, Role};

/// The scheduler's view of the store: which node runs which task, and
/// which secrets each task gets.
struct Scheduler {
    store: Client,
}

impl Scheduler {
    /// Gives `node` a task `task` that mounts a new secret `name` at
    /// `/run/secretd/<task>/<name>` on that node.
    async fn assign(
        &self,
        node: &str,
        task: &str,
        name: &str,
        value: &[u8],
    ) -> Result<(), EmbedError> {
        match self
            .store
            .secret_create(name, value.to_vec(), Default::default())
            .await
        {
            Ok(_) | Err(EmbedError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        let placed = self
            .store
            .task_create(task, node, vec![mount(name, name)], Vec::new());
        match placed.await {
            Ok(_) | Err(EmbedError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many tasks `node` runs, as the store has it.
    async fn load(&self, node: &str) -> Result<usize, EmbedError> {
        Ok(self.store.task_list(node).await?.len())
    }
}

/// The `secretd` binary: `SECRETD_BIN`, or the one beside this example's
/// directory (`target/<profile>/secretd`).
fn secretd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SECRETD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dir.join("secretd")
}

/// `secretd agent` for `node`, serving its tasks' files under `mount`.
fn start_agent(node: &str, mount: &Path, port: u16) -> std::io::Result<Child> {
    let backend = if Path::new("/dev/fuse").exists() {
        "fuse"
    } else {
        "tmpfs"
    };
    Command::new(secretd_bin())
        .args(["agent", "--node", node, "--backend", backend, "--mount"])
        .arg(mount)
        .args(["--endpoints", &format!("127.0.0.1:{port}")])
        .spawn()
}

/// Waits (at most 20 s) until `path` holds `want`, and prints it.
async fn served(path: &Path, want: &[u8]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read(path).ok().as_deref() != Some(want) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} never held the value",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{}: {}", path.display(), String::from_utf8_lossy(want));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid takes nothing and cannot fail.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the node agent mounts FUSE or a tmpfs: run this example as root"
    );
    let dir = tempfile::tempdir()?;
    let config =
        Config::new("scheduler", dir.path().join("member")).client_urls(&["http://127.0.0.1:0"]);
    let member = Member::start(config).await?;
    member.ready(Duration::from_secs(30)).await?;
    let port = member.client_addrs()[0].port();
    println!("embedded member ready; agents connect to 127.0.0.1:{port}");

    let scheduler = Scheduler {
        store: member.client(Role::Admin),
    };
    scheduler
        .assign("n1", "web.1", "db-password", b"hunter2")
        .await?;
    println!("node n1 runs {} task(s)", scheduler.load("n1").await?);

    let mnt = dir.path().join("mnt");
    let mut agent = start_agent("n1", &mnt, port)?;
    let file = mnt.join("web.1/db-password");
    let shown = async {
        served(&file, b"hunter2").await?;
        scheduler
            .store
            .secret_rotate("db-password", b"correct horse".to_vec())
            .await?;
        served(&file, b"correct horse").await?;
        anyhow::Ok(())
    };
    let result = shown.await;
    // SIGTERM: the agent unmounts and exits; then the member stops.
    // SAFETY: kill with our child's pid and a signal number.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    agent.wait()?;
    member.stop().await?;
    result
}
