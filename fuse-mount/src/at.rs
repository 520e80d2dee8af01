//! File system calls relative to a directory handle (`openat` and its
//! kin), for the tmpfs backend.
//!
//! The agent reaches its writable tmpfs only through a handle opened
//! before the read-only bind covered it. Named as `/proc/self/fd/N/...`,
//! every call walked procfs first: a rotation of 1,000 tasks spent 22% of
//! its CPU in procfs and half in path walks. Relative to a task
//! directory's own handle, a call walks one or two names.
//!
//! Paths given here are relative, never followed through a symlink at
//! their last component where the call allows (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`): the tree is the agent's own, but a task's
//! names come from users.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::fcntl::{openat, readlinkat, renameat, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Directory levels `remove_all` descends at most: a target of at most
/// 1,024 bytes has at most 512 components, under a task's `..stamp`
/// directory; deeper is not the agent's. (A lower bound once left a
/// removed task's plaintext behind: every level must go.)
const REMOVE_DEPTH_MAX: usize = 1_024;

fn io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An open directory, the base of relative calls.
pub struct Dir(OwnedFd);

impl Dir {
    /// Wraps a directory's open file (the tmpfs root's handle).
    pub fn of(f: &File) -> io::Result<Dir> {
        Ok(Dir(f.try_clone()?.into()))
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.0.as_raw_fd())
    }

    /// The directory `p`, not through a symlink.
    pub fn open_dir(&self, p: &Path) -> io::Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd(), p, flags, Mode::empty()).map_err(io)?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Whether `p` exists (a symlink counts as itself).
    pub fn exists(&self, p: &Path) -> bool {
        fstatat(self.fd(), p, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// Whether `p` is a directory (not a symlink to one).
    fn is_dir(&self, p: &Path) -> io::Result<bool> {
        let st = fstatat(self.fd(), p, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io)?;
        Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
    }

    pub fn mkdir(&self, p: &Path) -> io::Result<()> {
        mkdirat(self.fd(), p, Mode::from_bits_truncate(0o700)).map_err(io)
    }

    /// A new file (never an existing one), mode 0600 until its owner and
    /// mode are set on the handle.
    pub fn create_file(&self, p: &Path) -> io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd(), p, flags, Mode::from_bits_truncate(0o600)).map_err(io)?;
        // SAFETY: `openat` returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Owner and mode of `p` (a directory: chmod follows symlinks, and
    /// only directories are given modes by name here).
    pub fn own(&self, p: &Path, (uid, gid, mode): (u32, u32, u32)) -> io::Result<()> {
        fchownat(
            self.fd(),
            p,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io)?;
        fchmodat(
            self.fd(),
            p,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(io)
    }

    /// Mode of `p` alone (a directory; see `own`).
    pub fn chmod(&self, p: &Path, mode: u32) -> io::Result<()> {
        fchmodat(
            self.fd(),
            p,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(io)
    }

    /// This directory's own owner and mode, set only where they differ
    /// (one `fstat` when they agree).
    pub fn own_self(&self, (uid, gid, mode): (u32, u32, u32)) -> io::Result<()> {
        let st = nix::sys::stat::fstat(self.0.as_raw_fd()).map_err(io)?;
        if (st.st_uid, st.st_gid) != (uid, gid) {
            nix::unistd::fchown(
                self.0.as_raw_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(io)?;
        }
        if st.st_mode & 0o7777 != mode {
            nix::sys::stat::fchmod(self.0.as_raw_fd(), Mode::from_bits_truncate(mode))
                .map_err(io)?;
        }
        Ok(())
    }

    /// Removes the empty directory `p`.
    pub fn rmdir(&self, p: &Path) -> io::Result<()> {
        unlinkat(self.fd(), p, UnlinkatFlags::RemoveDir).map_err(io)
    }

    pub fn read_link(&self, p: &Path) -> io::Result<PathBuf> {
        readlinkat(self.fd(), p).map(PathBuf::from).map_err(io)
    }

    /// A symlink at `p` holding `target`.
    pub fn symlink(&self, target: &Path, p: &Path) -> io::Result<()> {
        symlinkat(target, self.fd(), p).map_err(io)
    }

    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        renameat(self.fd(), from, self.fd(), to).map_err(io)
    }

    /// A hard link at `to` to the file at `from` (`from` relative to `src`).
    pub fn hard_link(&self, src: &Dir, from: &Path, to: &Path) -> io::Result<()> {
        linkat(src.fd(), from, self.fd(), to, AtFlags::empty()).map_err(io)
    }

    /// Removes a file or symlink.
    pub fn unlink(&self, p: &Path) -> io::Result<()> {
        unlinkat(self.fd(), p, UnlinkatFlags::NoRemoveDir).map_err(io)
    }

    /// The names in this directory, `.` and `..` left out.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        Ok(self.entries()?.into_iter().map(|(n, _)| n).collect())
    }

    /// The names in this directory with whether each is a directory, as
    /// the directory listing says (None where it does not say).
    pub fn entries(&self) -> io::Result<Vec<(OsString, Option<bool>)>> {
        use nix::dir::Type;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut d = nix::dir::Dir::openat(self.fd(), ".", flags, Mode::empty()).map_err(io)?;
        let mut out = Vec::new();
        for e in d.iter() {
            let e = e.map_err(io)?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                let is_dir = e.file_type().map(|t| t == Type::Directory);
                out.push((OsString::from(std::ffi::OsStr::from_bytes(name)), is_dir));
            }
        }
        Ok(out)
    }

    /// Removes `p` and, if it is a directory, everything under it, never
    /// following a symlink.
    pub fn remove_all(&self, p: &Path) -> io::Result<()> {
        self.remove_all_at(p, None, 0)
    }

    /// `remove_all` of an entry `entries` listed, with what it said.
    pub fn remove_entry(&self, p: &Path, is_dir: Option<bool>) -> io::Result<()> {
        self.remove_all_at(p, is_dir, 0)
    }

    /// `is_dir`: what a listing said `p` is (it is asked otherwise).
    fn remove_all_at(&self, p: &Path, is_dir: Option<bool>, depth: usize) -> io::Result<()> {
        let is_dir = match is_dir {
            Some(d) => d,
            None => self.is_dir(p)?,
        };
        if !is_dir {
            return self.unlink(p);
        }
        if depth >= REMOVE_DEPTH_MAX {
            return Err(io::Error::other(format!(
                "{} is more than {REMOVE_DEPTH_MAX} directories deep",
                p.display()
            )));
        }
        let d = self.open_dir(p)?;
        for (name, is_dir) in d.entries()? {
            d.remove_all_at(Path::new(&name), is_dir, depth + 1)?;
        }
        drop(d);
        self.rmdir(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::of(&File::open(t.path()).unwrap()).unwrap();
        (t, d)
    }

    #[test]
    fn a_tree_is_made_linked_swapped_and_removed_relative_to_its_handle() {
        let (t, root) = root();
        root.mkdir(Path::new("task")).unwrap();
        let task = root.open_dir(Path::new("task")).unwrap();
        task.mkdir(Path::new("..s1")).unwrap();
        task.mkdir(Path::new("..s1/sub")).unwrap();
        std::io::Write::write_all(
            &mut task.create_file(Path::new("..s1/sub/f")).unwrap(),
            b"one",
        )
        .unwrap();
        assert!(
            task.create_file(Path::new("..s1/sub/f")).is_err(),
            "never an existing file"
        );
        task.symlink(Path::new("..s1"), Path::new("..tmp")).unwrap();
        task.rename(Path::new("..tmp"), Path::new("..data"))
            .unwrap();
        assert_eq!(
            task.read_link(Path::new("..data")).unwrap(),
            PathBuf::from("..s1")
        );
        task.mkdir(Path::new("..s2")).unwrap();
        task.mkdir(Path::new("..s2/sub")).unwrap();
        task.hard_link(&task, Path::new("..s1/sub/f"), Path::new("..s2/sub/f"))
            .unwrap();
        assert_eq!(
            std::fs::read(t.path().join("task/..s2/sub/f")).unwrap(),
            b"one"
        );
        let mut names = task.names().unwrap();
        names.sort();
        assert_eq!(names, ["..data", "..s1", "..s2"].map(OsString::from));
        // A symlink is removed as itself, never followed.
        task.remove_all(Path::new("..data")).unwrap();
        assert!(t.path().join("task/..s1/sub/f").exists());
        task.remove_all(Path::new("..s1")).unwrap();
        assert!(!task.exists(Path::new("..s1")));
        assert!(
            task.exists(Path::new("..s2/sub/f")),
            "a hard link keeps the bytes"
        );
        assert!(task.open_dir(Path::new("missing")).is_err());
    }
}
