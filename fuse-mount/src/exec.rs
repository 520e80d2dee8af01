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
//!
//! With `--on-change restart|signal=SIG`, as Vault Agent's exec mode: when
//! a file of the task changes (each version is a new inode, in both
//! backends), CMD is restarted (SIGTERM, then SIGKILL after
//! `--restart-timeout-ms`) or sent the signal. Changes are debounced (a
//! burst of rotations is one action) and the log names the objects that
//! triggered it. SIGTERM and SIGINT to `agent exec` are passed on to CMD.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

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
    /// When a secret or config of the task changes: `restart` CMD, or
    /// `signal=NAME` (e.g. `signal=HUP`) to send it a signal.
    #[arg(long, value_name = "restart|signal=NAME", value_parser = parse_on_change)]
    pub on_change: Option<OnChange>,
    /// Changes closer together than this are one change (a burst of
    /// rotations restarts CMD once).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub on_change_quiet_ms: u64,
    /// With --on-change restart: how long CMD has to stop after SIGTERM
    /// before it is killed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub restart_timeout_ms: u64,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

/// What `--on-change` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    Restart,
    Signal(Signal),
}

fn parse_on_change(s: &str) -> std::result::Result<OnChange, String> {
    if s == "restart" {
        return Ok(OnChange::Restart);
    }
    let Some(name) = s.strip_prefix("signal=") else {
        return Err(format!(
            "{s:?}: expected `restart` or `signal=NAME` (e.g. signal=HUP)"
        ));
    };
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match full.parse::<Signal>() {
        Ok(Signal::SIGKILL | Signal::SIGSTOP) => Err(format!(
            "{name}: use `restart` to stop CMD; KILL and STOP cannot be handled"
        )),
        Ok(sig) => Ok(OnChange::Signal(sig)),
        Err(_) => Err(format!(
            "{name}: not a signal name (HUP, USR1, USR2, TERM, ...)"
        )),
    }
}

/// The longest a change waits for the burst it belongs to to end: steady
/// rotations still reach CMD.
const ON_CHANGE_DELAY_MS_MAX: u64 = 5_000;
/// How often the task's files are looked at.
const POLL_INTERVAL_MS: u64 = 50;

/// Which version of each file CMD has seen: path under the task's
/// directory -> (device, inode, size, mtime), `None` while it is absent.
/// A new version of a secret or config is a new inode in both backends
/// (with tmpfs, the inode behind the name's symlink, which `metadata`
/// follows). The task's files are fixed when exec starts (a task is never
/// edited), so only those are looked at.
type FilesSeen = BTreeMap<PathBuf, Option<(u64, u64, u64, i64)>>;

fn look(dir: &Path, names: &BTreeMap<PathBuf, String>) -> FilesSeen {
    names
        .keys()
        .map(|rel| {
            let m = std::fs::metadata(dir.join(rel)).ok();
            (
                rel.clone(),
                m.map(|m| (m.dev(), m.ino(), m.size(), m.mtime())),
            )
        })
        .collect()
}

/// The objects behind the changed files, in the log's words: "secret
/// db_pw (password)", "config app_conf (etc/app.conf)".
fn describe<'a>(
    changed: impl IntoIterator<Item = &'a PathBuf>,
    names: &BTreeMap<PathBuf, String>,
) -> String {
    changed
        .into_iter()
        .map(|p| match names.get(p) {
            Some(n) => format!("{n} ({})", p.display()),
            None => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
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
    let tls = secretd_client::ClientTls::from_flags(
        agent.cacert.as_deref(),
        agent.cert.as_deref(),
        agent.key.as_deref(),
    )?;
    let ch = secretd_client::channel(&ep, tls.as_ref(), Some(Duration::from_secs(10)))?;
    let task = TasksClient::new(ch)
        .inspect(TaskRef { id: a.task.clone() })
        .await
        .map_err(|s| anyhow::anyhow!("task {}: {} (asked {ep})", a.task, s.message()))?
        .into_inner();

    let secrets = PathBuf::from("/run/secrets");
    mount_point(&secrets, true)?;
    let mut binds = vec![(cstr(&dir)?, cstr(&secrets)?)];
    let mut names = BTreeMap::new();
    for s in &task.secrets {
        names.insert(PathBuf::from(&s.target), format!("secret {}", s.source));
    }
    for c in &task.configs {
        let rel = c.target.trim_start_matches('/');
        let target = Path::new("/").join(rel);
        mount_point(&target, false)?;
        binds.push((cstr(&dir.join(rel))?, cstr(&target)?));
        names.insert(PathBuf::from(rel), format!("config {}", c.source));
    }
    let binds = std::sync::Arc::new(Binds(binds));
    let spawn = || -> Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&a.cmd[0]);
        cmd.args(&a.cmd[1..]);
        let (binds, uid, gid) = (binds.clone(), a.uid, a.gid);
        // SAFETY: `apply` makes only system calls (see its comment).
        unsafe {
            cmd.pre_exec(move || binds.apply(uid, gid));
        }
        cmd.spawn()
            .with_context(|| format!("cannot run {}", a.cmd[0]))
    };
    let status = supervise(a, &dir, &names, spawn).await?;
    std::process::exit(exit_code(status));
}

/// A shell's exit code for CMD's status: its own, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn send(child: &tokio::process::Child, sig: Signal) {
    if let Some(pid) = child.id() {
        // A child that has just exited is reaped by `wait`; ESRCH is fine.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
}

/// Runs CMD until it exits on its own, acting on changes of the task's
/// files as `--on-change` says; returns CMD's last status.
async fn supervise(
    a: &ExecArgs,
    dir: &Path,
    names: &BTreeMap<PathBuf, String>,
    spawn: impl Fn() -> Result<tokio::process::Child>,
) -> Result<ExitStatus> {
    let mut child = spawn()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut seen = look(dir, names);
    let mut poll = tokio::time::interval(Duration::from_millis(POLL_INTERVAL_MS));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Files changed since CMD last heard, with when the burst began and
    // when it last grew.
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut burst: Option<(Instant, Instant)> = None;
    let quiet = Duration::from_millis(a.on_change_quiet_ms);
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = term.recv() => send(&child, Signal::SIGTERM),
            _ = int.recv() => send(&child, Signal::SIGINT),
            _ = poll.tick(), if a.on_change.is_some() => {
                let now_seen = look(dir, names);
                let now = Instant::now();
                let changed: Vec<PathBuf> = now_seen
                    .iter()
                    .filter(|(p, v)| seen.get(*p) != Some(*v))
                    .map(|(p, _)| p.clone())
                    .collect();
                seen = now_seen;
                if !changed.is_empty() {
                    pending.extend(changed);
                    burst = Some((burst.map_or(now, |b| b.0), now));
                }
                let Some((began, last)) = burst else { continue };
                if now - last < quiet
                    && now - began < Duration::from_millis(ON_CHANGE_DELAY_MS_MAX)
                {
                    continue;
                }
                let what = describe(&pending, names);
                pending.clear();
                burst = None;
                if !dir.is_dir() {
                    tracing::warn!(changed = %what, "the task's files are gone (task removed?): leaving the command as it is");
                    continue;
                }
                match a.on_change.expect("polled only with --on-change") {
                    OnChange::Signal(sig) => {
                        tracing::info!(changed = %what, signal = %sig, pid = ?child.id(), "task files changed: signalling the command");
                        send(&child, sig);
                    }
                    OnChange::Restart => {
                        tracing::info!(changed = %what, pid = ?child.id(), "task files changed: restarting the command");
                        child = restart(child, a, &spawn).await?;
                    }
                }
            }
        }
    }
}

/// Stops CMD (SIGTERM, SIGKILL after the timeout) and starts it again.
async fn restart(
    mut child: tokio::process::Child,
    a: &ExecArgs,
    spawn: &impl Fn() -> Result<tokio::process::Child>,
) -> Result<tokio::process::Child> {
    send(&child, Signal::SIGTERM);
    let timeout = Duration::from_millis(a.restart_timeout_ms);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            tracing::info!(status = %status?, "the command stopped");
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = a.restart_timeout_ms,
                "the command ignored SIGTERM: killing it"
            );
            child.kill().await?;
        }
    }
    spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_change_values() {
        assert_eq!(parse_on_change("restart"), Ok(OnChange::Restart));
        assert_eq!(
            parse_on_change("signal=HUP"),
            Ok(OnChange::Signal(Signal::SIGHUP))
        );
        assert_eq!(
            parse_on_change("signal=sigusr1"),
            Ok(OnChange::Signal(Signal::SIGUSR1))
        );
        assert!(parse_on_change("signal=KILL")
            .unwrap_err()
            .contains("restart"));
        assert!(parse_on_change("signal=NOPE")
            .unwrap_err()
            .contains("not a signal"));
        assert!(parse_on_change("reload").unwrap_err().contains("restart"));
    }

    #[test]
    fn changes_are_named_by_their_objects() {
        let names = BTreeMap::from([(PathBuf::from("password"), "secret db_pw".to_string())]);
        assert_eq!(
            describe(&[PathBuf::from("password"), PathBuf::from("x/y")], &names),
            "secret db_pw (password), x/y"
        );
    }
}
