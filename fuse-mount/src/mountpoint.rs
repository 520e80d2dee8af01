//! Getting a mount point ready, and refusing clearly when it is not usable:
//! one agent per mount point (a lock file), a stale mount left by a crashed
//! agent is unmounted, a mount of something else or a non-directory is an
//! error.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{umount2, MntFlags};

use crate::fusefs::FS_NAME;
use crate::tmpfs::TMPFS_SOURCE;

/// Held while the agent runs: a second agent on the same mount point fails.
pub struct MountLock {
    _file: Flock<File>,
    pub path: PathBuf,
}

fn lock_path(mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/lock").join(format!("secretd-agent{name}.lock"))
}

/// The mount at exactly `path`, from /proc/self/mountinfo: (fstype, source).
pub fn mount_at(path: &Path) -> Result<Option<(String, String)>> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let want = path.to_string_lossy();
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(4).map(|m| m.replace("\\040", " ")) == Some(want.to_string()) {
            // The last mount at a path is the visible one.
            found = Some((
                fields.get(sep + 1).unwrap_or(&"").to_string(),
                fields.get(sep + 2).unwrap_or(&"").to_string(),
            ));
        }
    }
    Ok(found)
}

fn ours(fstype: &str, source: &str) -> bool {
    (fstype.starts_with("fuse") && source == FS_NAME)
        || (fstype == "tmpfs" && source == TMPFS_SOURCE)
}

/// Locks the mount point, cleans what a crashed agent left, and checks that
/// it is an empty-or-ours directory. Creates it if missing.
pub fn prepare(mountpoint: &Path) -> Result<MountLock> {
    if !mountpoint.is_absolute() {
        bail!("--mount {} must be an absolute path", mountpoint.display());
    }
    fs::create_dir_all("/run/lock").context("cannot create /run/lock")?;
    let lp = lock_path(mountpoint);
    let file = File::create(&lp).with_context(|| format!("cannot create {}", lp.display()))?;
    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "mount point {} is busy: another secretd agent serves it (lock {})",
            mountpoint.display(),
            lp.display()
        )
    })?;
    // A stale FUSE mount answers ENOTCONN to stat.
    let meta = fs::metadata(mountpoint);
    let stale = matches!(&meta, Err(e) if e.raw_os_error() == Some(libc_enotconn()));
    // No agent holds the lock, so whatever of ours is mounted here is left
    // over from a crash (the tmpfs backend stacks two mounts).
    let mut cleaned = 0;
    let mut current = mount_at(mountpoint)?;
    while let Some((fstype, source)) = current.clone().filter(|(f, s)| ours(f, s)) {
        if cleaned >= 4 {
            bail!("cannot clear the stale mounts at {}", mountpoint.display());
        }
        umount2(mountpoint, MntFlags::MNT_DETACH).with_context(|| {
            format!("cannot unmount the stale mount at {}", mountpoint.display())
        })?;
        tracing::warn!(
            mount = %mountpoint.display(),
            fstype,
            source,
            "cleaned up a mount left by an agent that did not exit cleanly"
        );
        cleaned += 1;
        current = mount_at(mountpoint)?;
    }
    let stale = stale && cleaned == 0;
    match current {
        Some((fstype, source)) => bail!(
            "mount point {} is busy: {fstype} from {source} is mounted there",
            mountpoint.display()
        ),
        None if stale => bail!(
            "{} is a dead FUSE mount that is not ours",
            mountpoint.display()
        ),
        None => {}
    }
    match fs::metadata(mountpoint) {
        Ok(m) if !m.is_dir() => bail!("mount point {} is not a directory", mountpoint.display()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(mountpoint)
                .with_context(|| format!("cannot create mount point {}", mountpoint.display()))?;
        }
        Err(e) => bail!("mount point {}: {e}", mountpoint.display()),
    }
    Ok(MountLock {
        _file: file,
        path: lp,
    })
}

fn libc_enotconn() -> i32 {
    nix::errno::Errno::ENOTCONN as i32
}
