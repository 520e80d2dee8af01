//! `secretd agent exec --task T -- CMD ...`: the steps a container runtime
//! takes, for a standalone process. CMD runs in a new mount namespace
//! where the task's directory is bind-mounted read-only at `/run/secrets`
//! and each config is bind-mounted read-only at its target path. Nothing
//! changes outside the namespace, except that `/run/secrets` and a
//! missing config target are created (empty) as mount points.
//!
//! The namespace is made in the child between fork and exec: `unshare`
//! refuses a multi-threaded process, and the agent's runtime has threads.
//! Everything the child needs is prepared before the fork, so the child
//! only makes system calls.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::pb::{tasks_client::TasksClient, TaskRef};
use crate::AgentArgs;

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// The task whose files CMD gets.
    #[arg(long)]
    pub task: String,
    /// Run CMD as this user id.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Run CMD as this group id.
    #[arg(long)]
    pub gid: Option<u32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).context("path contains a NUL byte")
}

/// (source, target) bind mounts, made read-only.
struct Binds(Vec<(CString, CString)>);

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Binds {
    /// Runs in the forked child: system calls only.
    fn apply(&self, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
        // SAFETY: plain system calls on NUL-terminated strings prepared
        // before the fork; no allocation, no locks.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &self.0 {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV,
                    std::ptr::null(),
                ))?;
            }
            if let Some(g) = gid {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(g))?;
            }
            if let Some(u) = uid {
                check(libc::setuid(u))?;
            }
        }
        Ok(())
    }
}

/// Creates an empty mount point (file or directory) if none exists.
fn mount_point(path: &Path, dir: bool) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if dir {
        std::fs::create_dir_all(path)
    } else {
        std::fs::File::create(path).map(drop)
    }
    .with_context(|| format!("cannot create the mount point {}", path.display()))
}

pub async fn run(agent: &AgentArgs, a: &ExecArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("secretd agent exec must run as root (it makes a mount namespace)");
    }
    let dir = agent.mount.join(&a.task);
    if !dir.is_dir() {
        bail!(
            "task {} is not served at {}: is `secretd agent` running for its node with --mount {}?",
            a.task,
            dir.display(),
            agent.mount.display()
        );
    }
    // Which files are configs, and where they go: from the cluster.
    let ep = crate::endpoints(&agent.endpoints)?.remove(0);
    let url = if ep.contains("://") {
        ep.clone()
    } else {
        format!("http://{ep}")
    };
    let ch = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot reach secretd at {ep}"))?;
    let task = TasksClient::new(ch)
        .inspect(TaskRef { id: a.task.clone() })
        .await
        .map_err(|s| anyhow::anyhow!("task {}: {}", a.task, s.message()))?
        .into_inner();

    let secrets = PathBuf::from("/run/secrets");
    mount_point(&secrets, true)?;
    let mut binds = vec![(cstr(&dir)?, cstr(&secrets)?)];
    for c in &task.configs {
        let rel = c.target.trim_start_matches('/');
        let target = Path::new("/").join(rel);
        mount_point(&target, false)?;
        binds.push((cstr(&dir.join(rel))?, cstr(&target)?));
    }
    let binds = Binds(binds);
    let (uid, gid) = (a.uid, a.gid);
    let mut cmd = std::process::Command::new(&a.cmd[0]);
    cmd.args(&a.cmd[1..]);
    // SAFETY: `apply` makes only system calls (see its comment).
    unsafe {
        cmd.pre_exec(move || binds.apply(uid, gid));
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", a.cmd[0]))?;
    std::process::exit(status.code().unwrap_or(128 + 1));
}
