//! The tmpfs backend, for hosts without FUSE: the same tree written to a
//! tmpfs mounted `nodev,nosuid,noexec`, mode 0700 at the top.
//!
//! The mount point shows a read-only bind of the tmpfs, so even root gets
//! EROFS there; the agent writes through a directory handle it opened on
//! the writable tmpfs before the bind covered it (`/proc/self/fd/N`).
//!
//! Updates are atomic for readers, as the kubelet does it. A task's
//! directory holds `..data`, a symlink to a timestamped directory with the
//! real files, and one symlink per top-level entry (`password ->
//! ..data/password`). An update writes a complete new timestamped
//! directory, then renames a new `..data` symlink over the old one, then
//! fixes the top-level symlinks and removes the old directory. A reader
//! resolves `..data` once per open, so it gets the old tree or the new
//! one, never a half-written file or a mix of versions.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use parking_lot::Mutex;

use crate::image::{check_task, task_dir_owner, Backend, Failures, Image};

pub const TMPFS_SOURCE: &str = "secretd-agent";
/// Size cap of the tmpfs: what the node's secrets may use.
const TMPFS_SIZE: &str = "size=64m";

pub struct TmpfsBackend {
    /// Where users look (the read-only bind).
    mountpoint: PathBuf,
    /// Where the agent writes: the covered, writable tmpfs.
    root: PathBuf,
    _handle: std::fs::File,
    /// task -> fingerprint of what its directory holds now.
    written: Mutex<BTreeMap<String, Vec<crate::image::FileShape>>>,
    seq: Mutex<u64>,
}

impl TmpfsBackend {
    pub fn mount(root: &Path) -> Result<TmpfsBackend> {
        mount(
            Some(TMPFS_SOURCE),
            root,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(format!("mode=0700,{TMPFS_SIZE}").as_str()),
        )
        .with_context(|| format!("cannot mount a tmpfs at {}", root.display()))?;
        let handle =
            std::fs::File::open(root).with_context(|| format!("cannot open {}", root.display()))?;
        let bind_ro = || -> nix::Result<()> {
            mount(
                Some(root),
                root,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            mount(
                None::<&str>,
                root,
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
        };
        if let Err(e) = bind_ro() {
            let _ = umount2(root, MntFlags::MNT_DETACH);
            let _ = umount2(root, MntFlags::MNT_DETACH);
            anyhow::bail!("cannot make {} read-only: {e}", root.display());
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
        Ok(TmpfsBackend {
            mountpoint: root.to_path_buf(),
            root: PathBuf::from(format!("/proc/self/fd/{fd}")),
            _handle: handle,
            written: Mutex::new(BTreeMap::new()),
            seq: Mutex::new(0),
        })
    }

    /// Writes a task's files into a new timestamped directory and swaps
    /// `..data` to it. On failure the new directory is removed (it may hold
    /// plaintext) and the task keeps what it showed.
    fn write_task(
        &self,
        task: &str,
        files: &BTreeMap<String, crate::image::FileEntry>,
    ) -> Result<()> {
        let owner = task_dir_owner(files);
        let dir = self.root.join(task);
        if !dir.exists() {
            fs::create_dir(&dir)?;
        }
        own_dir(&dir, owner)?;
        let stamp = {
            let mut s = self.seq.lock();
            *s += 1;
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format!("..{}.{:09}.{}", t.as_secs(), t.subsec_nanos(), *s)
        };
        let data_dir = dir.join(&stamp);
        let top =
            match fill(&data_dir, files, owner).and_then(
                |top| match crate::image::injected_failure(task) {
                    Some(e) => Err(anyhow::anyhow!(e)),
                    None => Ok(top),
                },
            ) {
                Ok(top) => top,
                Err(e) => {
                    let _ = fs::remove_dir_all(&data_dir);
                    return Err(e);
                }
            };
        // Swap `..data` in one rename. Until it succeeds the new directory
        // is not live, so a failure removes it.
        let tmp_link = dir.join("..data_tmp");
        let _ = fs::remove_file(&tmp_link);
        let swapped =
            symlink(&stamp, &tmp_link).and_then(|()| fs::rename(&tmp_link, dir.join("..data")));
        if let Err(e) = swapped {
            let _ = fs::remove_file(&tmp_link);
            let _ = fs::remove_dir_all(&data_dir);
            return Err(e).context("cannot swap ..data");
        }
        // Top-level names point through `..data`.
        for name in &top {
            let link = dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                let tmp = dir.join(format!("..{name}.tmp"));
                let _ = fs::remove_file(&tmp);
                symlink(format!("..data/{name}"), &tmp)?;
                fs::rename(&tmp, &link)?;
            }
        }
        for e in fs::read_dir(&dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "..data" || name == stamp {
                continue;
            }
            if name.starts_with("..") {
                // An older timestamped directory, or a leftover link.
                let p = e.path();
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            } else if !top.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Gives a task directory its owner and mode (`image::task_dir_owner`).
fn own_dir(dir: &Path, (uid, gid, mode): (u32, u32, u32)) -> Result<()> {
    nix::unistd::chown(dir, Some(uid.into()), Some(gid.into()))
        .with_context(|| format!("cannot chown {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes every file of a task under `data_dir` (new); returns the
/// top-level names.
fn fill(
    data_dir: &Path,
    files: &BTreeMap<String, crate::image::FileEntry>,
    owner: (u32, u32, u32),
) -> Result<BTreeSet<String>> {
    fs::create_dir(data_dir)?;
    own_dir(data_dir, owner)?;
    let mut top = BTreeSet::new();
    for (path, f) in files {
        let target = data_dir.join(path);
        let mut made = data_dir.to_path_buf();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            made.push(part);
            if !made.exists() {
                fs::create_dir(&made)?;
                own_dir(&made, owner)?;
            }
        }
        top.insert(parts[0].to_string());
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .with_context(|| format!("cannot create {}", target.display()))?;
        out.write_all(f.data.expose())?;
        nix::unistd::fchown(
            std::os::fd::AsRawFd::as_raw_fd(&out),
            Some(f.uid.into()),
            Some(f.gid.into()),
        )?;
        out.set_permissions(fs::Permissions::from_mode(f.mode))?;
    }
    Ok(top)
}

impl Backend for TmpfsBackend {
    fn apply(&self, image: &Image) -> Failures {
        let mut failures = Failures::new();
        let mut written = self.written.lock();
        for (task, files) in &image.tasks {
            let fp = Image::fingerprint(files);
            if written.get(task) == Some(&fp) {
                continue;
            }
            let r = check_task(files)
                .map_err(anyhow::Error::msg)
                .and_then(|()| self.write_task(task, files));
            match r {
                Ok(()) => {
                    written.insert(task.clone(), fp);
                }
                Err(e) => {
                    if !written.contains_key(task) {
                        // Never shown: leave no empty directory behind.
                        let _ = fs::remove_dir_all(self.root.join(task));
                    }
                    failures.insert(task.clone(), format!("{e:#}"));
                }
            }
        }
        // Removed tasks go, whatever happened to the others. A task that
        // failed before it was ever written may still have a directory.
        let mut gone: BTreeSet<String> = written
            .keys()
            .filter(|t| !image.tasks.contains_key(*t))
            .cloned()
            .collect();
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !image.tasks.contains_key(&name) {
                    gone.insert(name);
                }
            }
        }
        for t in gone {
            let p = self.root.join(&t);
            match fs::remove_dir_all(&p) {
                Ok(()) => {
                    written.remove(&t);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    written.remove(&t);
                }
                Err(e) => {
                    failures.insert(t.clone(), format!("cannot remove {}: {e}", p.display()));
                }
            }
        }
        failures
    }

    fn shutdown(&self) {
        // The read-only bind, then the tmpfs under it.
        for _ in 0..2 {
            if let Err(e) = umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
                tracing::warn!(error = %e, mount = %self.mountpoint.display(), "cannot unmount the tmpfs");
            }
        }
    }
}
