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
//! default), and shrunk once they need less than half of it. A fixed
//! 64 MiB once made a 35 MB task impossible to rotate: it kept its old
//! value with no end (D17). Past half the memory it grows that far, and
//! tasks are written smallest first while they fit; the rest fail, each
//! unwritten and saying why (it once stopped growing altogether, so small
//! tasks failed beside the large one).

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

/// Whole MiB, rounded up, for messages.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
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
        Self::mount_at_most(root, memory_half_bytes())
    }

    /// `mount`, with the most the tmpfs may grow to given (tests).
    pub fn mount_at_most(root: &Path, size_max_bytes: u64) -> Result<TmpfsBackend> {
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
            size_max_bytes: size_max_bytes.max(TMPFS_SIZE_MIN_BYTES),
        })
    }

    /// Grows the tmpfs (remounting the writable one, through the agent's
    /// handle on it) to what `image` needs, if it is smaller, and at most
    /// to the most it may take. Past that, it still grows as far as it
    /// may, and the returned reason says what was wanted: tasks are then
    /// written smallest first while they fit, and the rest fail with that
    /// reason, unwritten.
    fn fit(&self, image: &Image, rewritten_max_bytes: u64) -> Option<String> {
        let want = size_for(image, rewritten_max_bytes);
        let short = (want > self.size_max_bytes).then(|| {
            format!(
                "the node's files need a tmpfs of {} MiB, more than it may take ({} MiB, half \
                 the memory); use the FUSE backend, or fewer or smaller files",
                mib(want),
                mib(self.size_max_bytes)
            )
        });
        let mut size = self.size_bytes.lock();
        let to = want.min(self.size_max_bytes);
        if to > *size {
            if let Err(e) = self.resize(&mut size, to) {
                return Some(format!("{e:#}"));
            }
        }
        short
    }

    /// Gives memory back once the node's files need less than half of what
    /// the tmpfs may hold now (the files that show are all in it, so the
    /// kernel refuses a size below them, and it stays as it is).
    fn shrink(&self, image: &Image) {
        let want = size_for(image, 0);
        let mut size = self.size_bytes.lock();
        if want.saturating_mul(2) < *size {
            if let Err(e) = self.resize(&mut size, want) {
                tracing::debug!(error = %format!("{e:#}"), "the tmpfs stays as large as it is");
            }
        }
    }

    fn resize(&self, size: &mut u64, to: u64) -> Result<()> {
        mount(
            None::<&str>,
            &self.root,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(format!("mode=0700,size={to}").as_str()),
        )
        .with_context(|| format!("cannot resize the tmpfs to {} MiB", mib(to)))?;
        tracing::info!(
            from_mib = mib(*size),
            to_mib = mib(to),
            "tmpfs resized for the node's files"
        );
        *size = to;
        Ok(())
    }

    /// Bytes free on the tmpfs now.
    fn free_bytes(&self) -> Result<u64> {
        let st = nix::sys::statvfs::fstatvfs(&self._handle).context("cannot stat the tmpfs")?;
        Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
    }

    /// Short of room, a task whose new files would not fit in what is free
    /// fails before any of it is written: no partial copy made and removed
    /// again on every retry.
    fn has_room(&self, short: Option<&str>, bytes: u64) -> Result<()> {
        if short.is_none() {
            return Ok(());
        }
        let free = self.free_bytes()?;
        if bytes > free {
            anyhow::bail!(
                "this task's files need {} MiB on the tmpfs, which has {} MiB free",
                mib(bytes),
                mib(free)
            );
        }
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
        // What each rewrite writes (the files it cannot link), smallest
        // first: when room is short, as many tasks as fit show.
        let mut changes: Vec<_> = changes
            .into_iter()
            .map(|(task, (fp, same))| {
                let bytes = task_bytes(image.tasks[task].iter().filter(|(p, _)| !same.contains(p)));
                (bytes, task, fp, same)
            })
            .collect();
        changes.sort_by_key(|(bytes, task, ..)| (*bytes, *task));
        let rewritten_max_bytes = changes.last().map_or(0, |(bytes, ..)| *bytes);
        self.remove_gone(image, &mut written, &mut failures);
        let room = self.fit(image, rewritten_max_bytes);
        for (bytes, task, fp, same) in changes {
            let files = &image.tasks[task];
            let r = check_task(files)
                .map_err(anyhow::Error::msg)
                .and_then(|()| self.has_room(room.as_deref(), bytes))
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
                        Some(room) => format!("{e:#}; {room}"),
                        None => format!("{e:#}"),
                    };
                    failures.insert(task.clone(), why);
                }
            }
        }
        self.shrink(image);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::FileEntry;
    use secretd_crypto::SecretBytes;
    use std::sync::Arc;

    fn task(mib: usize) -> BTreeMap<String, FileEntry> {
        let file = FileEntry {
            uid: 0,
            gid: 0,
            mode: 0o400,
            data: Arc::new(SecretBytes::new(vec![b'x'; mib << 20])),
            source: (true, format!("id{mib}"), 1),
        };
        BTreeMap::from([("data".to_string(), file)])
    }

    fn size_mib(dir: &Path) -> u64 {
        let st = nix::sys::statvfs::statvfs(dir).unwrap();
        mib(st.blocks() as u64 * st.fragment_size() as u64)
    }

    /// Past the most it may take, the tmpfs still grows that far, the
    /// tasks that fit show (smallest first), the one that does not fails
    /// unwritten and saying why; once the node needs less, it shrinks.
    /// It used to stay as it was: the small task failed beside the large
    /// one, and the size never came down.
    #[test]
    fn short_of_room_it_grows_to_its_most_shows_what_fits_and_shrinks_after() {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let b = TmpfsBackend::mount_at_most(dir.path(), 200 << 20).unwrap();
        let mut image = Image::default();
        image.tasks.insert("base".into(), task(24));
        let first = b.apply(&image);
        assert!(first.is_empty(), "{first:?}");
        assert_eq!(size_mib(dir.path()), 64);
        // "big" sorts first by name: it was written first, failed, and took
        // "small" with it.
        image.tasks.insert("big".into(), task(150));
        image.tasks.insert("small".into(), task(45));
        let failures = b.apply(&image);
        let shown = |t: &str| dir.path().join(t).join("data").exists();
        let why = failures.get("big").cloned().unwrap_or_default();
        assert!(shown("base") && shown("small"), "{failures:?}");
        assert!(!shown("big") && !dir.path().join("big").exists());
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            why.contains("need 151 MiB on the tmpfs, which has ")
                && why.contains("more than it may take (200 MiB"),
            "{why}"
        );
        assert_eq!(size_mib(dir.path()), 200);
        image.tasks.remove("big");
        image.tasks.remove("small");
        let last = b.apply(&image);
        assert!(last.is_empty() && shown("base"), "{last:?}");
        assert_eq!(size_mib(dir.path()), 64);
        b.shutdown();
    }
}
