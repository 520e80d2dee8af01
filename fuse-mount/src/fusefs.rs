//! The FUSE backend: a read-only filesystem served from the agent's memory.
//!
//! Inodes are stable per path across updates. Entry and attribute TTLs are
//! zero, and files open without `FOPEN_KEEP_CACHE`, so a new image is seen
//! by the next lookup and open. Each open takes a reference to the file's
//! bytes at that moment: a reader keeps reading the version it opened,
//! never a mix. The mount is `ro` (the kernel answers EROFS to writes,
//! creates, chmods, renames and unlinks), `default_permissions` (the
//! kernel enforces each file's mode, uid and gid) and `allow_other` (so a
//! container's user can read). The root is 0700 (root alone lists the
//! tasks) and each task's directories admit only root and the uid and gid
//! of the task's files (`image::task_dir_owner`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyXattr, Request,
};
use parking_lot::{Mutex, RwLock};
use secretd_crypto::SecretBytes;

use crate::image::{
    check_task, injected_failure, task_dir_owner, Backend, Failures, FileEntry, Image,
    ROOT_DIR_MODE,
};

const TTL: Duration = Duration::ZERO;
/// Open files at once; past it, open fails with EMFILE.
const HANDLES_MAX: usize = 65_536;
pub const FS_NAME: &str = "secretd";

enum Node {
    Dir {
        parent: u64,
        children: BTreeMap<String, u64>,
        /// (uid, gid, mode): see `image::task_dir_owner`.
        owner: (u32, u32, u32),
    },
    File(FileEntry),
}

#[derive(Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
}

struct Inner {
    tree: RwLock<Arc<Tree>>,
    /// What each task shows now: a task whose new files cannot be shown
    /// keeps these.
    shown: Mutex<BTreeMap<String, BTreeMap<String, FileEntry>>>,
    /// path -> inode, kept across images so a path keeps its inode.
    inodes: Mutex<(HashMap<String, u64>, u64)>,
    handles: Mutex<HashMap<u64, Arc<SecretBytes>>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
}

impl Inner {
    fn ino(&self, path: &str) -> u64 {
        let mut g = self.inodes.lock();
        if let Some(i) = g.0.get(path) {
            return *i;
        }
        g.1 += 1;
        let i = g.1;
        g.0.insert(path.to_string(), i);
        i
    }

    fn build(&self, image: &Image) -> Tree {
        let mut t = Tree::default();
        t.nodes.insert(
            1,
            Node::Dir {
                parent: 1,
                children: BTreeMap::new(),
                owner: (0, 0, ROOT_DIR_MODE),
            },
        );
        let add_child = |t: &mut Tree, parent: u64, name: &str, ino: u64| {
            if let Some(Node::Dir { children, .. }) = t.nodes.get_mut(&parent) {
                children.insert(name.to_string(), ino);
            }
        };
        for (task, files) in &image.tasks {
            let owner = task_dir_owner(files);
            let task_ino = self.ino(task);
            t.nodes.entry(task_ino).or_insert(Node::Dir {
                parent: 1,
                children: BTreeMap::new(),
                owner,
            });
            add_child(&mut t, 1, task, task_ino);
            for (path, f) in files {
                let mut parent = task_ino;
                let mut so_far = task.clone();
                let parts: Vec<&str> = path.split('/').collect();
                for (i, part) in parts.iter().enumerate() {
                    so_far = format!("{so_far}/{part}");
                    let ino = self.ino(&so_far);
                    if i + 1 == parts.len() {
                        t.nodes.insert(ino, Node::File(f.clone()));
                    } else {
                        t.nodes.entry(ino).or_insert(Node::Dir {
                            parent,
                            children: BTreeMap::new(),
                            owner,
                        });
                    }
                    add_child(&mut t, parent, part, ino);
                    parent = ino;
                }
            }
        }
        t
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, perm, size, uid, gid, nlink) = match node {
            Node::Dir {
                owner: (uid, gid, mode),
                ..
            } => (FileType::Directory, *mode as u16, 0, *uid, *gid, 2),
            Node::File(f) => (
                FileType::RegularFile,
                f.mode as u16,
                f.data.len() as u64,
                f.uid,
                f.gid,
                1,
            ),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

struct Fs(Arc<Inner>);

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.0.tree.read().clone();
        let found = match (tree.nodes.get(&u64::from(parent)), name.to_str()) {
            (Some(Node::Dir { children, .. }), Some(n)) => children.get(n).copied(),
            _ => None,
        };
        match found.and_then(|i| tree.nodes.get(&i).map(|n| (i, n))) {
            Some((i, n)) => reply.entry(&TTL, &self.0.attr(i, n), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let tree = self.0.tree.read().clone();
        match tree.nodes.get(&u64::from(ino)) {
            Some(n) => reply.attr(&TTL, &self.0.attr(u64::from(ino), n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let tree = self.0.tree.read().clone();
        match tree.nodes.get(&u64::from(ino)) {
            Some(Node::File(f)) => {
                let mut handles = self.0.handles.lock();
                if handles.len() >= HANDLES_MAX {
                    return reply.error(Errno::EMFILE);
                }
                let fh = self.0.next_fh.fetch_add(1, Ordering::Relaxed);
                handles.insert(fh, f.data.clone());
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let data = self.0.handles.lock().get(&u64::from(fh)).cloned();
        match data {
            Some(d) => {
                let b = d.expose();
                let start = (offset as usize).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                reply.data(&b[start..end]);
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.handles.lock().remove(&u64::from(fh));
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // No extended attributes. ENOSYS tells the kernel to stop asking.
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.0.tree.read().clone();
        let Some(Node::Dir {
            parent, children, ..
        }) = tree.nodes.get(&u64::from(ino))
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries = vec![
            (u64::from(ino), FileType::Directory, ".".to_string()),
            (*parent, FileType::Directory, "..".to_string()),
        ];
        for (name, i) in children {
            let kind = match tree.nodes.get(i) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            entries.push((*i, kind, name.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }
}

pub struct FuseBackend {
    inner: Arc<Inner>,
    session: Mutex<Option<fuser::BackgroundSession>>,
}

impl FuseBackend {
    pub fn mount(mountpoint: &Path) -> anyhow::Result<FuseBackend> {
        let inner = Arc::new(Inner {
            tree: RwLock::new(Arc::new(Tree::default())),
            shown: Mutex::new(BTreeMap::new()),
            inodes: Mutex::new((HashMap::new(), 1)),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        });
        let empty = inner.build(&Image::default());
        *inner.tree.write() = Arc::new(empty);
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName(FS_NAME.to_string()),
            MountOption::Subtype("secretd".to_string()),
            MountOption::RO,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::NoExec,
            MountOption::DefaultPermissions,
        ];
        cfg.acl = fuser::SessionACL::All;
        let session = fuser::spawn_mount(Fs(inner.clone()), mountpoint, &cfg)
            .map_err(|e| anyhow::anyhow!("cannot mount FUSE at {}: {e}", mountpoint.display()))?;
        Ok(FuseBackend {
            inner,
            session: Mutex::new(Some(session)),
        })
    }
}

impl Backend for FuseBackend {
    fn apply(&self, image: &Image) -> Failures {
        let mut failures = Failures::new();
        let mut shown = self.inner.shown.lock();
        let mut effective = Image::default();
        for (task, files) in &image.tasks {
            let checked = check_task(files).and_then(|()| match injected_failure(task) {
                Some(e) => Err(e),
                None => Ok(()),
            });
            match checked {
                Ok(()) => {
                    effective.tasks.insert(task.clone(), files.clone());
                }
                Err(e) => {
                    failures.insert(task.clone(), e);
                    if let Some(old) = shown.get(task) {
                        effective.tasks.insert(task.clone(), old.clone());
                    }
                }
            }
        }
        let tree = self.inner.build(&effective);
        *self.inner.tree.write() = Arc::new(tree);
        *shown = effective.tasks;
        failures
    }

    fn shutdown(&self) {
        // Dropping the session unmounts.
        drop(self.session.lock().take());
        *self.inner.tree.write() = Arc::new(Tree::default());
        self.inner.handles.lock().clear();
    }
}
