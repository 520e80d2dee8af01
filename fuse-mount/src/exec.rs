//! `secretd agent exec --task T -- CMD ...`: the steps a container runtime
//! takes, for a standalone process. CMD runs in a new mount namespace
//! where the task's directory is bind-mounted read-only at `/run/secrets`
//! and each config is bind-mounted read-only at its target path. Nothing
//! changes outside the namespace: a mount point that does not exist on the
//! host is made inside a private tmpfs (`Shadow`), never on the host,
//! where a task author could otherwise have root create any path (say
//! `/etc/nologin`).
//!
//! Which task it is comes from the node's own API (`Agent.InspectTask`),
//! so the node certificate the agent already holds is enough; no admin key
//! needs to be on the node.
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

use crate::pb::{agent_client::AgentClient, AgentTaskRequest};
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

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What a missing mount point becomes inside a shadow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Dir,
    File,
}

/// One name of a shadowed directory, as the host has it.
enum Entry {
    /// Bound from the original (relative to it), over an empty directory
    /// or file made in the tmpfs: mounts below it come along.
    Bind {
        name: CString,
        at: CString,
        kind: Kind,
    },
    /// A symlink is copied (a bind mount would follow it).
    Symlink { target: CString, at: CString },
}

/// An existing host directory covered, in CMD's namespace only, by a
/// tmpfs that shows what it held (each entry bound from the original, or
/// a symlink copied) plus the mount points that were missing. Names added
/// to the host directory after exec started are not seen by CMD; new files
/// CMD writes there stay in the tmpfs and go with the namespace.
struct Shadow {
    dir: CString,
    /// `mode=...,uid=...,gid=...`: the original's.
    options: CString,
    entries: Vec<Entry>,
    /// Missing components, parents first.
    missing: Vec<(CString, Kind)>,
}

/// CMD's namespace: shadows (shallowest first), then read-only binds
/// (source, target).
struct Namespace {
    shadows: Vec<Shadow>,
    binds: Vec<(CString, CString)>,
}

/// Makes an empty directory or file to mount on.
///
/// # Safety
/// Only system calls on a NUL-terminated string.
unsafe fn make(at: &CString, kind: Kind) -> std::io::Result<()> {
    match kind {
        Kind::Dir => check(libc::mkdir(at.as_ptr(), 0o755)),
        Kind::File => {
            let fd = libc::open(
                at.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o444,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        }
    }
}

impl Shadow {
    /// Runs in the forked child, inside the new namespace: system calls
    /// only. The working directory is the covered original while the
    /// entries are bound, so their relative names reach it under the
    /// tmpfs.
    ///
    /// # Safety
    /// Only system calls on strings prepared before the fork.
    unsafe fn apply(&self) -> std::io::Result<()> {
        check(libc::chdir(self.dir.as_ptr()))?;
        check(libc::mount(
            c"secretd-exec".as_ptr(),
            self.dir.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            self.options.as_ptr().cast(),
        ))?;
        for e in &self.entries {
            match e {
                Entry::Symlink { target, at } => {
                    check(libc::symlink(target.as_ptr(), at.as_ptr()))?;
                }
                Entry::Bind { name, at, kind } => {
                    make(at, *kind)?;
                    let rc = libc::mount(
                        name.as_ptr(),
                        at.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    );
                    if let Err(err) = check(rc) {
                        // Gone since it was listed: show it gone.
                        if err.raw_os_error() != Some(libc::ENOENT) {
                            return Err(err);
                        }
                        match kind {
                            Kind::Dir => libc::rmdir(at.as_ptr()),
                            Kind::File => libc::unlink(at.as_ptr()),
                        };
                    }
                }
            }
        }
        for (at, kind) in &self.missing {
            make(at, *kind)?;
        }
        Ok(())
    }
}

impl Namespace {
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
            if !self.shadows.is_empty() {
                let cwd = libc::open(
                    c".".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if cwd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for s in &self.shadows {
                    s.apply()?;
                }
                check(libc::fchdir(cwd))?;
                libc::close(cwd);
            }
            for (src, dst) in &self.binds {
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

/// Plans CMD's namespace: a bind of each (source, target, kind). A target
/// that exists is bound over; a missing one is made inside a shadow of its
/// deepest existing ancestor directory.
fn plan(mounts: &[(PathBuf, PathBuf, Kind)]) -> Result<Namespace> {
    // Shadowed directory -> its missing paths.
    let mut shadowed: BTreeMap<PathBuf, BTreeMap<PathBuf, Kind>> = BTreeMap::new();
    let mut binds = Vec::new();
    for (src, dst, kind) in mounts {
        binds.push((cstr(src)?, cstr(dst)?));
        if dst.exists() {
            continue;
        }
        let mut missing = vec![(dst.clone(), *kind)];
        let mut dir = dst.parent();
        while let Some(d) = dir {
            if d.exists() {
                break;
            }
            missing.push((d.to_path_buf(), Kind::Dir));
            dir = d.parent();
        }
        let Some(dir) = dir.filter(|d| d.parent().is_some()) else {
            bail!(
                "{}: no part of it exists on this host, and agent exec creates nothing outside its namespace (it would have to cover /): create its top directory, or choose a target under an existing one",
                dst.display()
            );
        };
        if !dir.is_dir() {
            bail!("{}: {} is not a directory", dst.display(), dir.display());
        }
        shadowed
            .entry(dir.to_path_buf())
            .or_default()
            .extend(missing);
    }
    // BTreeMap order puts a directory before those under it: shallowest
    // shadows first, so a deeper one covers a bind of the shallower.
    let shadows = shadowed
        .into_iter()
        .map(|(dir, missing)| shadow(&dir, missing))
        .collect::<Result<Vec<_>>>()?;
    Ok(Namespace { shadows, binds })
}

/// Lists `dir` for its shadow.
fn shadow(dir: &Path, missing: BTreeMap<PathBuf, Kind>) -> Result<Shadow> {
    use std::os::unix::ffi::OsStrExt;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let options = CString::new(format!(
        "mode={:o},uid={},gid={}",
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    ))?;
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = e.file_name();
        let at = cstr(&dir.join(&name))?;
        let ft = match e.file_type() {
            Ok(ft) => ft,
            Err(_) => continue, // gone since listed
        };
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path())
                .with_context(|| format!("cannot read the link {}", e.path().display()))?;
            entries.push(Entry::Symlink {
                target: cstr(&target)?,
                at,
            });
        } else {
            entries.push(Entry::Bind {
                name: CString::new(name.as_bytes()).context("a name with a NUL byte")?,
                at,
                kind: if ft.is_dir() { Kind::Dir } else { Kind::File },
            });
        }
    }
    let missing = missing
        .into_iter()
        .map(|(p, k)| Ok((cstr(&p)?, k)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Shadow {
        dir: cstr(dir)?,
        options,
        entries,
        missing,
    })
}

pub async fn run(agent: &AgentArgs, a: &ExecArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("secretd agent exec must run as root (it makes a mount namespace)");
    }
    // Which files are configs, and where they go: from the cluster, asked
    // as this node (its certificate names it).
    let ep = crate::endpoints(&agent.endpoints)?.remove(0);
    let tls = secretd_client::ClientTls::from_flags(
        agent.cacert.as_deref(),
        agent.cert.as_deref(),
        agent.key.as_deref(),
    )?;
    let ch = secretd_client::channel(&ep, tls.as_ref(), Some(Duration::from_secs(10)))?;
    let task = AgentClient::new(ch)
        .inspect_task(AgentTaskRequest {
            node: agent.node.clone().unwrap_or_default(),
            task: a.task.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("task {}: {} (asked {ep})", a.task, s.message()))?
        .into_inner();
    let dir = agent.mount.join(&a.task);
    if !dir.is_dir() {
        bail!(
            "task {} is not served at {}: is `secretd agent` running for its node with --mount {}?",
            a.task,
            dir.display(),
            agent.mount.display()
        );
    }

    let mut mounts = vec![(dir.clone(), PathBuf::from("/run/secrets"), Kind::Dir)];
    let mut names = BTreeMap::new();
    for s in &task.secrets {
        names.insert(PathBuf::from(&s.target), format!("secret {}", s.source));
    }
    for c in &task.configs {
        let rel = c.target.trim_start_matches('/');
        mounts.push((dir.join(rel), Path::new("/").join(rel), Kind::File));
        names.insert(PathBuf::from(rel), format!("config {}", c.source));
    }
    let ns = std::sync::Arc::new(plan(&mounts)?);
    let spawn = || -> Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&a.cmd[0]);
        cmd.args(&a.cmd[1..]);
        let (ns, uid, gid) = (ns.clone(), a.uid, a.gid);
        // SAFETY: `apply` and `default_signals` make only system calls
        // (see their comments).
        unsafe {
            cmd.pre_exec(move || {
                default_signals()?;
                ns.apply(uid, gid)
            });
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

/// The signals CMD is stopped or told with, back to their default
/// disposition in the child, as a supervisor resets them: an ignored
/// signal stays ignored across `exec`, and a shell started with one
/// ignored cannot even trap it. Started under `nohup` (SIGHUP ignored),
/// `--on-change signal=HUP` reached a command that could not act on it.
/// Runs between fork and exec: `sigaction` and `sigprocmask` only.
fn default_signals() -> std::io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGPIPE,
    ] {
        // SAFETY: setting a default disposition runs no handler code.
        unsafe { sigaction(sig, &default) }.map_err(std::io::Error::from)?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(std::io::Error::from)
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
