//! The tmpfs backend, for hosts without FUSE: the same tree written to a
//! tmpfs mounted `nodev,nosuid,noexec`, mode 0700 at the top.
//!
//! The mount point shows a read-only bind of the tmpfs, so even root gets
//! EROFS there; the agent writes through a directory handle it opened on
//! the writable tmpfs before the bind covered it, every call relative to
//! that handle or to a task directory's (`at`; `/proc/self/fd/N` only to
//! remount it larger).
//!
//! Updates are atomic for readers, as the kubelet does it. A task's
//! directory holds `..data`, a symlink to a timestamped directory with the
//! real files, and one symlink per top-level entry (`password ->
//! ..data/password`). An update writes a complete new timestamped
//! directory, then renames a new `..data` symlink over the old one, then
//! fixes the top-level symlinks and removes the old directory. A reader
//! resolves `..data` once per open, so it gets the old tree or the new
//! one, never a half-written file or a mix of versions. Files a change
//! leaves alone are hard links to the old directory's (a file is never
//! written in place, so sharing its inode is safe): an update costs the
//! changed bytes only.
//!
//! The tmpfs is sized from what the node's tasks hold (`size_for`), grown
//! before an update needs it, up to half the machine's memory (a tmpfs's
//! default). A fixed 64 MiB once made a 35 MB task impossible to rotate:
//! it kept its old value with no end (D17).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use parking_lot::Mutex;

use crate::at::Dir;
use crate::image::{check_task, task_dir_owner, Backend, Failures, Image};

pub const TMPFS_SOURCE: &str = "secretd-agent";
/// The tmpfs's size at first, and never less.
const TMPFS_SIZE_MIN_BYTES: u64 = 64 << 20;
/// What a file, directory or link costs on a tmpfs at least: a page.
const TMPFS_PAGE_BYTES: u64 = 4096;
/// Room kept beyond what the files need, so that small growth needs no
/// remount.
const TMPFS_HEADROOM_PERCENT: u64 = 25;

pub struct TmpfsBackend {
    /// Where users look (the read-only bind).
    mountpoint: PathBuf,
    /// Where the agent writes: the covered, writable tmpfs.
    root: PathBuf,
    /// The same, as a handle: every file call is made relative to it or
    /// to a task directory's handle (`at`), never through `root`'s procfs
    /// path.
    root_dir: Dir,
    _handle: std::fs::File,
    /// task -> fingerprint of what its directory holds now.
    written: Mutex<BTreeMap<String, Vec<crate::image::FileShape>>>,
    seq: Mutex<u64>,
    /// The tmpfs's size now, and the most it may grow to.
    size_bytes: Mutex<u64>,
    size_max_bytes: u64,
}

/// Bytes a tmpfs needs for a task directory holding `files`: each file
/// and its name rounded up to a page, and the task's own directories.
fn task_bytes<'a>(files: impl Iterator<Item = (&'a String, &'a crate::image::FileEntry)>) -> u64 {
    let pages = |n: u64| n.div_ceil(TMPFS_PAGE_BYTES).max(1) * TMPFS_PAGE_BYTES;
    files
        .map(|(path, f)| pages(f.data.expose().len() as u64) + pages(path.len() as u64))
        .sum::<u64>()
        // The task's directory, `..data`, the timestamped directory.
        + 3 * TMPFS_PAGE_BYTES
}

/// The size a tmpfs must have to show `image` and, meanwhile, hold the new
/// copy of the largest task being rewritten (its old copy stays until the
/// swap): what the node's tasks need, plus headroom.
fn size_for(image: &Image, rewritten_max_bytes: u64) -> u64 {
    let need: u64 = image
        .tasks
        .values()
        .map(|files| task_bytes(files.iter()))
        .sum::<u64>()
        + rewritten_max_bytes;
    (need + need * TMPFS_HEADROOM_PERCENT / 100).max(TMPFS_SIZE_MIN_BYTES)
}

/// Half the machine's memory: a tmpfs's default size, and the most the
/// agent's tmpfs may grow to.
fn memory_half_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024 / 2)
        })
        .unwrap_or(1 << 30)
        .max(TMPFS_SIZE_MIN_BYTES)
}

impl TmpfsBackend {
    pub fn mount(root: &Path) -> Result<TmpfsBackend> {
        mount(
            Some(TMPFS_SOURCE),
            root,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(format!("mode=0700,size={TMPFS_SIZE_MIN_BYTES}").as_str()),
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
            root_dir: Dir::of(&handle).context("cannot keep a handle on the tmpfs")?,
            _handle: handle,
            written: Mutex::new(BTreeMap::new()),
            seq: Mutex::new(0),
            size_bytes: Mutex::new(TMPFS_SIZE_MIN_BYTES),
            size_max_bytes: memory_half_bytes(),
        })
    }

    /// Grows the tmpfs (remounting the writable one, through the agent's
    /// handle on it) to what `image` needs, if it is smaller. Past the
    /// most it may grow to, it stays as it is and says why: the tasks that
    /// do not fit fail, each with that reason.
    fn fit(&self, image: &Image, rewritten_max_bytes: u64) -> Result<()> {
        let want = size_for(image, rewritten_max_bytes);
        let mut size = self.size_bytes.lock();
        if want <= *size {
            return Ok(());
        }
        let mib = |b: u64| b.div_ceil(1 << 20);
        if want > self.size_max_bytes {
            anyhow::bail!(
                "the node's files need a tmpfs of {} MiB, more than it may take ({} MiB, half \
                 the memory); use the FUSE backend, or fewer or smaller files",
                mib(want),
                mib(self.size_max_bytes)
            );
        }
        mount(
            None::<&str>,
            &self.root,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(format!("mode=0700,size={want}").as_str()),
        )
        .with_context(|| format!("cannot grow the tmpfs to {} MiB", mib(want)))?;
        tracing::info!(
            from_mib = mib(*size),
            to_mib = mib(want),
            "tmpfs grown for the node's files"
        );
        *size = want;
        Ok(())
    }

    /// Writes a task's files into a new timestamped directory and swaps
    /// `..data` to it. On failure the new directory is removed (it may hold
    /// plaintext) and the task keeps what it showed.
    fn write_task(
        &self,
        task: &str,
        files: &BTreeMap<String, crate::image::FileEntry>,
        unchanged: Option<&BTreeSet<&String>>,
    ) -> Result<()> {
        let owner = task_dir_owner(files);
        let name = Path::new(task);
        if !self.root_dir.exists(name) {
            self.root_dir.mkdir(name)?;
        }
        self.root_dir.own(name, owner)?;
        let dir = self.root_dir.open_dir(name)?;
        let stamp = {
            let mut s = self.seq.lock();
            *s += 1;
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            format!("..{}.{:09}.{}", t.as_secs(), t.subsec_nanos(), *s)
        };
        let data_dir = Path::new(&stamp);
        // The live tree (named relative to the task directory), whose
        // unchanged files are linked, not copied.
        let live = dir.read_link(Path::new("..data")).ok();
        let top = match fill(&dir, data_dir, files, owner, live.as_deref().zip(unchanged)).and_then(
            |top| match crate::image::injected_failure(task) {
                Some(e) => Err(anyhow::anyhow!(e)),
                None => Ok(top),
            },
        ) {
            Ok(top) => top,
            Err(e) => {
                let _ = dir.remove_all(data_dir);
                return Err(e);
            }
        };
        // Swap `..data` in one rename. Until it succeeds the new directory
        // is not live, so a failure removes it.
        let tmp_link = Path::new("..data_tmp");
        let _ = dir.unlink(tmp_link);
        let swapped = dir
            .symlink(data_dir, tmp_link)
            .and_then(|()| dir.rename(tmp_link, Path::new("..data")));
        if let Err(e) = swapped {
            let _ = dir.unlink(tmp_link);
            let _ = dir.remove_all(data_dir);
            return Err(e).context("cannot swap ..data");
        }
        link_names_and_sweep(&dir, &stamp, &top)
    }
}

/// Points the task's top-level names through `..data` (new ones), then
/// removes what the swap left behind: older timestamped directories,
/// leftover links, and names the task no longer has.
fn link_names_and_sweep(dir: &Dir, stamp: &str, top: &BTreeSet<String>) -> Result<()> {
    // Top-level names point through `..data`.
    for name in top {
        let link = Path::new(name);
        if !dir.exists(link) {
            // One name for every link made here (one at a time): a name
            // built from the target would pass a file name's limit for a
            // target near it.
            let tmp = Path::new("..link.tmp");
            let _ = dir.unlink(tmp);
            dir.symlink(Path::new(&format!("..data/{name}")), tmp)?;
            dir.rename(tmp, link)?;
        }
    }
    for (raw, is_dir) in dir.entries()? {
        let name = raw.to_string_lossy();
        if name == "..data" || name == stamp {
            continue;
        }
        if name.starts_with("..") {
            // An older timestamped directory (an older version's
            // plaintext), or a leftover link.
            if let Err(e) = dir.remove_entry(Path::new(&raw), is_dir) {
                tracing::warn!(entry = %name, error = %e, "cannot remove an older version of a task's files");
            }
        } else if !top.contains(name.as_ref()) {
            let _ = dir.unlink(Path::new(&raw));
        }
    }
    Ok(())
}

/// Writes every file of a task under `data_dir` (new); returns the
/// top-level names. A file in `keep` (`(live tree, paths)`: the paths
/// whose bytes, owner and mode are as the live tree has them) is a hard
/// link to the live tree's.
fn fill(
    dir: &Dir,
    data_dir: &Path,
    files: &BTreeMap<String, crate::image::FileEntry>,
    owner: (u32, u32, u32),
    keep: Option<(&Path, &BTreeSet<&String>)>,
) -> Result<BTreeSet<String>> {
    dir.mkdir(data_dir)?;
    dir.own(data_dir, owner)?;
    let mut top = BTreeSet::new();
    for (path, f) in files {
        let target = data_dir.join(path);
        let mut made = data_dir.to_path_buf();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            made.push(part);
            if !dir.exists(&made) {
                dir.mkdir(&made)?;
                dir.own(&made, owner)?;
            }
        }
        top.insert(parts[0].to_string());
        if let Some((live, _)) = keep.filter(|(_, same)| same.contains(path)) {
            if dir.hard_link(dir, &live.join(path), &target).is_ok() {
                continue;
            }
        }
        let mut out = dir
            .create_file(&target)
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

impl TmpfsBackend {
    /// Removed tasks go first (their space is the others'), whatever
    /// happens to the rest. A task that failed before it was ever written
    /// may still have a directory.
    fn remove_gone(
        &self,
        image: &Image,
        written: &mut BTreeMap<String, Vec<crate::image::FileShape>>,
        failures: &mut Failures,
    ) {
        let mut gone: BTreeSet<String> = written
            .keys()
            .filter(|t| !image.tasks.contains_key(*t))
            .cloned()
            .collect();
        if let Ok(names) = self.root_dir.names() {
            for name in names {
                let name = name.to_string_lossy().into_owned();
                if !image.tasks.contains_key(&name) {
                    gone.insert(name);
                }
            }
        }
        for t in gone {
            let p = self.mountpoint.join(&t);
            match self.root_dir.remove_all(Path::new(&t)) {
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
    }
}

impl Backend for TmpfsBackend {
    fn apply(&self, image: &Image) -> Failures {
        let mut failures = Failures::new();
        let mut written = self.written.lock();
        // Each task's files that change (the rest keep their inodes), and
        // the most one rewrite holds beside the old copy.
        let mut changes = BTreeMap::new();
        for (task, files) in &image.tasks {
            let fp = Image::fingerprint(files);
            let Some(old) = written.get(task) else {
                changes.insert(task, (fp, BTreeSet::new()));
                continue;
            };
            if *old == fp {
                continue;
            }
            // Paths borrowed from the image; shapes compared as stored.
            let same: BTreeSet<&String> = files
                .keys()
                .zip(&fp)
                .filter(|(_, shape)| old.contains(shape))
                .map(|(path, _)| path)
                .collect();
            changes.insert(task, (fp, same));
        }
        let rewritten_max_bytes = changes
            .iter()
            .map(|(task, (_, same))| {
                task_bytes(image.tasks[*task].iter().filter(|(p, _)| !same.contains(p)))
            })
            .max()
            .unwrap_or(0);
        self.remove_gone(image, &mut written, &mut failures);
        // Short of room (past the most the tmpfs may take), tasks are
        // still written: what fits shows, what does not fails saying why.
        let room = self.fit(image, rewritten_max_bytes).err();
        for (task, (fp, same)) in changes {
            let files = &image.tasks[task];
            let r = check_task(files)
                .map_err(anyhow::Error::msg)
                .and_then(|()| self.write_task(task, files, Some(&same)));
            match r {
                Ok(()) => {
                    written.insert(task.clone(), fp);
                }
                Err(e) => {
                    if !written.contains_key(task) {
                        // Never shown: leave no empty directory behind.
                        let _ = self.root_dir.remove_all(Path::new(task));
                    }
                    let why = match &room {
                        Some(room) => format!("{e:#}; {room:#}"),
                        None => format!("{e:#}"),
                    };
                    failures.insert(task.clone(), why);
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
