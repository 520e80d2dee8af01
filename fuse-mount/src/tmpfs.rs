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
//! changed bytes only. A task whose last rewrite succeeded is known
//! exactly (`Written::clean`), so the next one takes its old tree away by
//! name (`retire`) instead of listing the directory; after a failure the
//! listing sweeps. Tasks are rewritten on up to four threads at once
//! (`write_all`): a rotation of one secret that 1,000 tasks mount is some
//! 15,000 file calls, nearly all the kernel's CPU.
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
use crate::image::{check_task, task_dir_owner, Backend, Failures, FileShape, Image};

pub const TMPFS_SOURCE: &str = "secretd-agent";
/// The tmpfs's size at first, and never less.
const TMPFS_SIZE_MIN_BYTES: u64 = 64 << 20;
/// Threads that rewrite tasks at once, at most (`write_all`).
const WRITERS_MAX: usize = 4;
/// Fewer changed tasks than this are rewritten on the calling thread: a
/// thread would cost more than it saves.
const WRITERS_TASKS_MIN: usize = 32;
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
    /// task -> what its directory holds now.
    written: Mutex<BTreeMap<String, Written>>,
    /// The agent's effective uid and gid: what a new file or directory
    /// is owned by before any `chown`.
    made_by: (u32, u32),
    seq: Mutex<u64>,
    /// The tmpfs's size now, and the most it may grow to.
    size_bytes: Mutex<u64>,
    size_max_bytes: u64,
}

/// What a task's directory holds: the fingerprint of its files, and
/// whether it holds exactly that (its last rewrite succeeded whole, so
/// the next one knows what to take away without listing).
struct Written {
    shapes: Vec<FileShape>,
    clean: bool,
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
/// copies of the tasks being rewritten at once (`rewritten_max_bytes`:
/// the largest, one per writer; each old copy stays until its swap): what
/// the node's tasks need, plus headroom.
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
            made_by: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
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

    /// A task's directory, made if new, owned as `owner` says.
    fn task_dir(&self, name: &Path, owner: (u32, u32, u32)) -> Result<Dir> {
        let dir = match self.root_dir.open_dir(name) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.root_dir.mkdir(name)?;
                self.root_dir.open_dir(name)?
            }
            opened => opened?,
        };
        dir.own_self(owner)?;
        Ok(dir)
    }

    /// A new timestamped directory's name, unique in this process.
    fn stamp(&self) -> String {
        let mut s = self.seq.lock();
        *s += 1;
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("..{}.{:09}.{}", t.as_secs(), t.subsec_nanos(), *s)
    }

    /// Writes a task's files into a new timestamped directory and swaps
    /// `..data` to it. On failure the new directory is removed (it may hold
    /// plaintext) and the task keeps what it showed.
    fn write_task(
        &self,
        task: &str,
        files: &BTreeMap<String, crate::image::FileEntry>,
        unchanged: &BTreeSet<&String>,
        prev: Option<&[FileShape]>,
    ) -> Result<bool> {
        let owner = task_dir_owner(files);
        let dir = self.task_dir(Path::new(task), owner)?;
        let stamp = self.stamp();
        let data_dir = Path::new(&stamp);
        // The live tree (named relative to the task directory), whose
        // unchanged files are linked, not copied.
        let live = dir.read_link(Path::new("..data")).ok();
        let into = Tree {
            dir: &dir,
            data_dir,
            owner,
            made_by: self.made_by,
        };
        let top =
            match fill(&into, files, live.as_deref().map(|l| (l, unchanged))).and_then(|top| {
                match crate::image::injected_failure(task) {
                    Some(e) => Err(anyhow::anyhow!(e)),
                    None => Ok(top),
                }
            }) {
                Ok(top) => top,
                Err(e) => {
                    let _ = dir.remove_all(data_dir);
                    return Err(e);
                }
            };
        // Swap `..data` in one rename. Until it succeeds the new directory
        // is not live, so a failure removes it.
        let tmp_link = Path::new("..data_tmp");
        if prev.is_none() {
            let _ = dir.unlink(tmp_link);
        }
        let swapped = dir
            .symlink(data_dir, tmp_link)
            .and_then(|()| dir.rename(tmp_link, Path::new("..data")));
        if let Err(e) = swapped {
            let _ = dir.unlink(tmp_link);
            let _ = dir.remove_all(data_dir);
            return Err(e).context("cannot swap ..data");
        }
        if let Some(known) = prev.zip(live.as_deref()) {
            // What the directory held is known: take exactly that away.
            // Anything unexpected, and the listing below sweeps.
            if retire(&dir, &top, known).is_ok() {
                return Ok(true);
            }
        }
        link_names_and_sweep(&dir, &stamp, &top)
    }
}

/// Takes the old tree away after a swap, when the task's directory held
/// exactly `shapes` under `live`: the top-level links the task no longer
/// has, and the old tree's files and directories, deepest first; links
/// for new top-level names are made. No listing: a rotation of a task's
/// one file costs two `unlinkat`s here, not a directory's read.
fn retire(dir: &Dir, top: &BTreeSet<String>, (shapes, live): (&[FileShape], &Path)) -> Result<()> {
    let old_top: BTreeSet<&str> = shapes
        .iter()
        .filter_map(|s| s.0.split('/').next())
        .collect();
    let live_name = live.to_str().unwrap_or_default();
    anyhow::ensure!(
        live_name.starts_with("..") && !live_name.contains('/'),
        "..data points elsewhere"
    );
    for name in top.iter().filter(|n| !old_top.contains(n.as_str())) {
        link_name(dir, name)?;
    }
    for name in old_top.iter().filter(|n| !top.contains(**n)) {
        dir.unlink(Path::new(name))?;
    }
    let mut dirs = BTreeSet::new();
    for (path, ..) in shapes {
        dir.unlink(&live.join(path))?;
        dirs.extend(
            Path::new(path)
                .ancestors()
                .skip(1)
                .filter(|d| !d.as_os_str().is_empty()),
        );
    }
    let mut dirs: Vec<&Path> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        dir.rmdir(&live.join(d))?;
    }
    dir.rmdir(live)?;
    Ok(())
}

/// A top-level name, pointed through `..data`. One temporary name for
/// every link made here (one at a time): a name built from the target
/// would pass a file name's limit for a target near it.
fn link_name(dir: &Dir, name: &str) -> Result<()> {
    let tmp = Path::new("..link.tmp");
    let _ = dir.unlink(tmp);
    dir.symlink(Path::new(&format!("..data/{name}")), tmp)?;
    dir.rename(tmp, Path::new(name))?;
    Ok(())
}

/// Points the task's top-level names through `..data` (new ones), then
/// removes what the swap left behind: older timestamped directories,
/// leftover links, and names the task no longer has. Whether all of it
/// went: what did not (an older version's plaintext) is swept again by
/// the task's next rewrite, at the next retry.
fn link_names_and_sweep(dir: &Dir, stamp: &str, top: &BTreeSet<String>) -> Result<bool> {
    let mut swept = true;
    for name in top {
        if !dir.exists(Path::new(name)) {
            link_name(dir, name)?;
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
                swept = false;
            }
        } else if !top.contains(name.as_ref()) && dir.unlink(Path::new(&raw)).is_err() {
            swept = false;
        }
    }
    Ok(swept)
}

/// Where `fill` writes: a new tree under `dir`, and its owner.
struct Tree<'a> {
    dir: &'a Dir,
    data_dir: &'a Path,
    /// The tree's directories' (uid, gid, mode): `task_dir_owner`.
    owner: (u32, u32, u32),
    /// Who owns what this process makes, before any `chown` (`made_by`).
    made_by: (u32, u32),
}

impl Tree<'_> {
    /// A new directory of the tree, owned as the tree is.
    fn mkdir(&self, p: &Path) -> Result<()> {
        let (uid, gid, mode) = self.owner;
        self.dir.mkdir(p)?;
        if (uid, gid) == self.made_by {
            self.dir.chmod(p, mode)?;
        } else {
            self.dir.own(p, self.owner)?;
        }
        Ok(())
    }
}

/// Writes every file of a task under `t.data_dir` (new); returns the
/// top-level names. A file in `keep` (`(live tree, paths)`: the paths
/// whose bytes, owner and mode are as the live tree has them) is a hard
/// link to the live tree's.
fn fill(
    t: &Tree<'_>,
    files: &BTreeMap<String, crate::image::FileEntry>,
    keep: Option<(&Path, &BTreeSet<&String>)>,
) -> Result<BTreeSet<String>> {
    let (dir, data_dir) = (t.dir, t.data_dir);
    t.mkdir(data_dir)?;
    let mut made_dirs = BTreeSet::new();
    let mut top = BTreeSet::new();
    for (path, f) in files {
        let target = data_dir.join(path);
        let parts: Vec<&str> = path.split('/').collect();
        let mut made = data_dir.to_path_buf();
        for part in &parts[..parts.len() - 1] {
            made.push(part);
            if made_dirs.insert(made.clone()) {
                t.mkdir(&made)?;
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
        if (f.uid, f.gid) != t.made_by {
            nix::unistd::fchown(
                std::os::fd::AsRawFd::as_raw_fd(&out),
                Some(f.uid.into()),
                Some(f.gid.into()),
            )?;
        }
        out.set_permissions(fs::Permissions::from_mode(f.mode))?;
    }
    Ok(top)
}

/// The tasks of `image` whose directories must be rewritten, each with
/// the files it can link from its live tree.
fn changes<'a>(image: &'a Image, written: &BTreeMap<String, Written>) -> Vec<Change<'a>> {
    let mut changes = Vec::new();
    for (task, files) in &image.tasks {
        let shapes = Image::fingerprint(files);
        // A task whose directory is not known exactly (a rewrite or a
        // sweep failed part way) is rewritten whole, whatever its shapes.
        let old = written.get(task).filter(|old| old.clean);
        if old.is_some_and(|old| old.shapes == shapes) {
            continue;
        }
        // Paths borrowed from the image; shapes compared as stored.
        let same: BTreeSet<&String> = match old {
            Some(old) => files
                .keys()
                .zip(&shapes)
                .filter(|(_, shape)| old.shapes.contains(shape))
                .map(|(path, _)| path)
                .collect(),
            None => BTreeSet::new(),
        };
        changes.push(Change {
            bytes: task_bytes(files.iter().filter(|(p, _)| !same.contains(p))),
            task,
            shapes,
            same,
            prev: old.map(|old| old.shapes.clone()),
        });
    }
    changes
}

/// Threads `write_all` rewrites `changes` tasks on, with room to spare.
fn writers_for(changes: usize) -> usize {
    if changes < WRITERS_TASKS_MIN {
        return 1;
    }
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(WRITERS_MAX)
}

/// A task to rewrite.
struct Change<'a> {
    /// What it writes: the files it cannot link.
    bytes: u64,
    task: &'a String,
    shapes: Vec<FileShape>,
    /// The paths it links from the live tree.
    same: BTreeSet<&'a String>,
    /// What its directory holds, when known exactly (`Written::clean`).
    prev: Option<Vec<FileShape>>,
}

impl TmpfsBackend {
    /// Rewrites each changed task, returning each one's outcome in order.
    /// Tasks are independent directories, so with room to spare they are
    /// written on up to `WRITERS_MAX` threads: a rotation that touches a
    /// node's 1,000 tasks is some 15,000 file calls, mostly the kernel's
    /// own CPU. Short of room they go one at a time, each checking what the
    /// last left free.
    fn write_all(
        &self,
        image: &Image,
        changes: &[Change<'_>],
        short: Option<&str>,
    ) -> Vec<Result<bool>> {
        let one = |c: &Change<'_>| -> Result<bool> {
            let files = &image.tasks[c.task];
            check_task(files)
                .map_err(anyhow::Error::msg)
                .and_then(|()| self.has_room(short, c.bytes))
                .and_then(|()| self.write_task(c.task, files, &c.same, c.prev.as_deref()))
        };
        let writers = writers_for(changes.len());
        if short.is_some() || writers < 2 {
            return changes.iter().map(one).collect();
        }
        let mut out: Vec<Option<Result<bool>>> = (0..changes.len()).map(|_| None).collect();
        std::thread::scope(|scope| {
            let one = &one;
            let mut running = Vec::with_capacity(writers);
            for w in 0..writers {
                let work = move || -> Vec<(usize, Result<bool>)> {
                    let mine = changes.iter().enumerate().skip(w).step_by(writers);
                    mine.map(|(i, c)| (i, one(c))).collect()
                };
                // A thread the system will not give is work done here
                // (`work` captures only references: it is `Copy`).
                match std::thread::Builder::new()
                    .name("tmpfs-writer".into())
                    .spawn_scoped(scope, work)
                {
                    Ok(h) => running.push(h),
                    Err(_) => {
                        for (i, r) in work() {
                            out[i] = Some(r);
                        }
                    }
                }
            }
            for h in running {
                if let Ok(done) = h.join() {
                    for (i, r) in done {
                        out[i] = Some(r);
                    }
                }
            }
        });
        // A writer that panicked leaves its tasks failed, to retry.
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(anyhow::anyhow!("the thread writing this task failed")))
            })
            .collect()
    }

    /// Removed tasks go first (their space is the others'), whatever
    /// happens to the rest. A task that failed before it was ever written
    /// may still have a directory.
    fn remove_gone(
        &self,
        image: &Image,
        written: &mut BTreeMap<String, Written>,
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
                    // Part of it may be gone: if the task comes back, it
                    // is rewritten whole.
                    if let Some(w) = written.get_mut(&t) {
                        w.clean = false;
                    }
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
        let mut changes = changes(image, &written);
        // Smallest first: when room is short, as many tasks as fit show.
        changes.sort_by(|a, b| (a.bytes, a.task).cmp(&(b.bytes, b.task)));
        // The largest rewrites, one per writer, may hold their new copies
        // at once.
        let writers = writers_for(changes.len());
        let rewritten_max_bytes = changes.iter().rev().take(writers).map(|c| c.bytes).sum();
        self.remove_gone(image, &mut written, &mut failures);
        let room = self.fit(image, rewritten_max_bytes);
        let outcomes = self.write_all(image, &changes, room.as_deref());
        for (c, r) in changes.into_iter().zip(outcomes) {
            let task = c.task;
            match r {
                Ok(clean) => {
                    let shapes = c.shapes;
                    written.insert(task.clone(), Written { shapes, clean });
                    if !clean {
                        let why = "an older version of its files could not be removed; retrying";
                        failures.insert(task.clone(), why.into());
                    }
                }
                Err(e) => {
                    match written.get_mut(task) {
                        // What a failed rewrite left is swept next time.
                        Some(w) => w.clean = false,
                        // Never shown: leave no empty directory behind.
                        None => {
                            let _ = self.root_dir.remove_all(Path::new(task));
                        }
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

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, FileEntry> {
        list.iter()
            .map(|(path, bytes)| {
                let file = FileEntry {
                    uid: 1000,
                    gid: 1000,
                    mode: 0o440,
                    data: Arc::new(SecretBytes::new(bytes.as_bytes().to_vec())),
                    source: (true, format!("{path}={bytes}"), 1),
                };
                (path.to_string(), file)
            })
            .collect()
    }

    /// A backend on a new directory (at most `size_max_bytes`, or half
    /// the memory).
    fn mounted(size_max_bytes: Option<u64>) -> (tempfile::TempDir, TmpfsBackend) {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test mounts a tmpfs: run it as root"
        );
        let dir = tempfile::tempdir().unwrap();
        let b = match size_max_bytes {
            Some(max) => TmpfsBackend::mount_at_most(dir.path(), max),
            None => TmpfsBackend::mount(dir.path()),
        };
        (dir, b.unwrap())
    }

    fn listing(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A task's directory after each rewrite holds `..data`, the live tree
    /// and one link per top-level name, and nothing else: the old tree
    /// taken away by what it was known to hold (files, subdirectories,
    /// names dropped), or, after a rewrite that failed, by a listing.
    #[test]
    fn a_rewrite_leaves_only_the_live_tree_and_its_names() {
        let (dir, b) = mounted(None);
        let task = dir.path().join("t");
        let steps: [&[(&str, &str)]; 4] = [
            &[("pw", "1"), ("etc/app/conf", "c1"), ("keep", "k")],
            &[("pw", "2"), ("etc/other", "o"), ("keep", "k")],
            &[("pw", "2"), ("new/deep/er", "n")],
            &[("pw", "3"), ("new/deep/er", "n")],
        ];
        for (i, step) in steps.iter().enumerate() {
            if i == 3 {
                // A rewrite that failed half way left a stray behind.
                b.written.lock().get_mut("t").unwrap().clean = false;
                b.root_dir.mkdir(Path::new("t/..stray")).unwrap();
            }
            let mut image = Image::default();
            image.tasks.insert("t".into(), files(step));
            let failures = b.apply(&image);
            assert!(failures.is_empty(), "step {i}: {failures:?}");
            let live = std::fs::read_link(task.join("..data")).unwrap();
            let live = live.to_string_lossy().into_owned();
            let mut want: BTreeSet<String> = step
                .iter()
                .map(|(p, _)| p.split('/').next().unwrap().to_string())
                .collect();
            for (path, bytes) in *step {
                assert_eq!(std::fs::read(task.join(path)).unwrap(), bytes.as_bytes());
            }
            assert_eq!(listing(&task.join(&live)), want, "step {i}");
            want.extend(["..data".to_string(), live]);
            assert_eq!(listing(&task), want, "step {i}");
        }
        assert!(b.written.lock()["t"].clean);
        // A directory not known exactly is rewritten whole even when its
        // task's files did not change (a failure past the swap left the
        // fingerprint of the tree before it).
        let live = std::fs::read_link(task.join("..data")).unwrap();
        b.written.lock().get_mut("t").unwrap().clean = false;
        let mut image = Image::default();
        image.tasks.insert("t".into(), files(steps[3]));
        assert!(b.apply(&image).is_empty());
        assert_ne!(std::fs::read_link(task.join("..data")).unwrap(), live);
        assert!(b.written.lock()["t"].clean);
        b.shutdown();
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
        let (dir, b) = mounted(Some(200 << 20));
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
