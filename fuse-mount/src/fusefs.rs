//! The FUSE backend: a read-only filesystem served from the agent's memory,
//! cached by the kernel.
//!
//! A file's inode is one version of it: when its bytes, owner or mode
//! change, the path gets a new inode and the kernel is told to drop its
//! cached entry for the name (`notify_inval_entry`). An inode's bytes and
//! attributes never change, so the kernel may cache everything about it
//! for as long as it likes: entries and attributes have long timeouts,
//! `open` is answered ENOSYS (FUSE_NO_OPEN_SUPPORT: the kernel opens
//! without asking and keeps its page cache), and `flush` ENOSYS (the
//! kernel stops sending it). An open+read+close of a cached secret never
//! reaches this process. A reader holding a file open keeps reading the
//! version it opened, never a mix: its inode's bytes stay here (retired)
//! until the kernel forgets the inode. Directories keep one inode per
//! path; a name added to one is seen at once (lookups that fail are not
//! cached), and a directory whose owner changes has its attributes
//! invalidated.
//!
//! The mount is `ro` (the kernel answers EROFS to writes, creates, chmods,
//! renames and unlinks), `default_permissions` (the kernel enforces each
//! file's mode, uid and gid) and `allow_other` (so a container's user can
//! read). The root is 0700 (root alone lists the tasks) and each task's
//! directories admit only root and the uid and gid of the task's files
//! (`image::task_dir_owner`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, Notifier, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use parking_lot::{Mutex, RwLock};
use secretd_crypto::SecretBytes;

use crate::image::{
    check_task, injected_failure, task_dir_owner, Backend, Failures, FileEntry, Image,
    ROOT_DIR_MODE,
};

/// How long the kernel may trust an entry or attributes. Inodes never
/// change, and every name whose inode changes is invalidated explicitly,
/// so this only bounds how long a lost invalidation could last.
const TTL: Duration = Duration::from_secs(3600);
/// Retired file versions kept for readers that still hold them open;
/// past it the oldest is dropped and a read of it fails with ESTALE.
const RETIRED_MAX: usize = 4096;
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

/// Inode numbers: one per directory path, one per file version.
#[derive(Default)]
struct Inodes {
    dirs: HashMap<String, u64>,
    /// path -> (inode, the version it shows)
    files: HashMap<String, (u64, FileEntry)>,
    last: u64,
}

impl Inodes {
    fn next(&mut self) -> u64 {
        // 1 is the root; a u64 never wraps in practice, so an inode
        // number is never reused and a stale cache can never alias.
        self.last = self.last.max(1) + 1;
        self.last
    }

    fn dir(&mut self, path: &str) -> u64 {
        if let Some(i) = self.dirs.get(path) {
            return *i;
        }
        let i = self.next();
        self.dirs.insert(path.to_string(), i);
        i
    }

    fn file(&mut self, path: &str, f: &FileEntry) -> u64 {
        if let Some((i, shown)) = self.files.get(path) {
            if same_version(shown, f) {
                return *i;
            }
        }
        let i = self.next();
        self.files.insert(path.to_string(), (i, f.clone()));
        i
    }
}

fn same_version(a: &FileEntry, b: &FileEntry) -> bool {
    (a.uid, a.gid, a.mode, &a.source) == (b.uid, b.gid, b.mode, &b.source)
        && a.data.expose() == b.data.expose()
}

/// Versions no longer in the tree, kept until the kernel forgets them.
#[derive(Default)]
struct Retired {
    data: HashMap<u64, Arc<SecretBytes>>,
    order: VecDeque<u64>,
}

impl Retired {
    fn insert(&mut self, ino: u64, data: Arc<SecretBytes>) {
        if self.data.insert(ino, data).is_none() {
            self.order.push_back(ino);
        }
        while self.data.len() > RETIRED_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.data.remove(&old);
        }
    }

    fn forget(&mut self, ino: u64) {
        if self.data.remove(&ino).is_some() {
            self.order.retain(|i| *i != ino);
        }
    }
}

struct Inner {
    tree: RwLock<Arc<Tree>>,
    /// What each task shows now: a task whose new files cannot be shown
    /// keeps these.
    shown: Mutex<BTreeMap<String, BTreeMap<String, FileEntry>>>,
    inodes: Mutex<Inodes>,
    retired: Mutex<Retired>,
    /// Set once the session runs; `apply` tells the kernel through it.
    notifier: OnceLock<Notifier>,
    /// The kernel opens files without asking (FUSE_NO_OPEN_SUPPORT).
    no_open: AtomicBool,
    mounted_at: SystemTime,
}

impl Inner {
    fn build(&self, image: &Image) -> Tree {
        let mut inodes = self.inodes.lock();
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
            let task_ino = inodes.dir(task);
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
                    let ino = if i + 1 == parts.len() {
                        let ino = inodes.file(&so_far, f);
                        t.nodes.insert(ino, Node::File(f.clone()));
                        ino
                    } else {
                        let ino = inodes.dir(&so_far);
                        t.nodes.entry(ino).or_insert(Node::Dir {
                            parent,
                            children: BTreeMap::new(),
                            owner,
                        });
                        ino
                    };
                    add_child(&mut t, parent, part, ino);
                    parent = ino;
                }
            }
        }
        // Paths gone from the image give up their inode numbers' slots
        // (their versions are retired by `replace`).
        inodes.files.retain(|_, (i, _)| t.nodes.contains_key(i));
        t
    }

    /// Shows `new`, retires the file versions it no longer has and tells
    /// the kernel which names and attributes it must look up again.
    fn replace(&self, new: Tree) {
        let new = Arc::new(new);
        let old = std::mem::replace(&mut *self.tree.write(), new.clone());
        let mut stale_names = Vec::new();
        let mut stale_attrs = Vec::new();
        let mut retired = self.retired.lock();
        for (ino, node) in &old.nodes {
            match (node, new.nodes.get(ino)) {
                (Node::File(f), None) => retired.insert(*ino, f.data.clone()),
                (
                    Node::Dir {
                        children, owner, ..
                    },
                    now,
                ) => {
                    let (now_children, now_owner) = match now {
                        Some(Node::Dir {
                            children, owner, ..
                        }) => (Some(children), Some(owner)),
                        _ => (None, None),
                    };
                    for (name, child) in children {
                        if now_children.and_then(|c| c.get(name)) != Some(child) {
                            stale_names.push((*ino, name.clone()));
                        }
                    }
                    if now_owner.is_some_and(|o| o != owner) {
                        stale_attrs.push(*ino);
                    }
                }
                (Node::File(_), Some(_)) => {}
            }
        }
        drop(retired);
        // Not under any lock a request handler takes: the kernel holds
        // the parent directory while a lookup in it waits for our answer.
        if let Some(n) = self.notifier.get() {
            for (parent, name) in stale_names {
                // ENOENT: the kernel had not cached the name; nothing to drop.
                let _ = n.inval_entry(INodeNo(parent), OsStr::new(&name));
            }
            for ino in stale_attrs {
                // Offset -1: attributes only (a directory has no pages).
                let _ = n.inval_inode(INodeNo(ino), -1, 0);
            }
        }
    }

    /// The bytes of a file version, shown or retired.
    fn file_data(&self, ino: u64) -> Option<Arc<SecretBytes>> {
        let tree = self.tree.read().clone();
        match tree.nodes.get(&ino) {
            Some(Node::File(f)) => Some(f.data.clone()),
            _ => self.retired.lock().data.get(&ino).cloned(),
        }
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
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let no_open = config
            .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
            .is_ok();
        self.0.no_open.store(no_open, Ordering::Relaxed);
        if !no_open {
            tracing::warn!("the kernel lacks FUSE_NO_OPEN_SUPPORT: every open reaches the agent");
        }
        Ok(())
    }

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
            // ENOSYS, once, makes the kernel open every file without
            // asking from then on, keeping its page cache.
            Some(Node::File(_)) if self.0.no_open.load(Ordering::Relaxed) => {
                reply.error(Errno::ENOSYS)
            }
            // A kernel without FUSE_NO_OPEN_SUPPORT asks every time; an
            // inode's bytes never change, so its cache is always valid.
            Some(Node::File(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            // A retired version opened through a cached entry.
            None if self.0.retired.lock().data.contains_key(&u64::from(ino)) => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.0.file_data(u64::from(ino)) {
            Some(d) => {
                let b = d.expose();
                let start = (offset as usize).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                reply.data(&b[start..end]);
            }
            // Retired past RETIRED_MAX while someone still held it.
            None => reply.error(Errno::ESTALE),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, _nlookup: u64) {
        // The kernel sends the whole lookup count once, when it evicts
        // the inode: nothing can reach a retired version after this.
        self.0.retired.lock().forget(u64::from(ino));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
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
        // Nothing is ever written. ENOSYS makes the kernel stop sending
        // flush on every close.
        reply.error(Errno::ENOSYS);
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
            inodes: Mutex::new(Inodes::default()),
            retired: Mutex::new(Retired::default()),
            notifier: OnceLock::new(),
            no_open: AtomicBool::new(false),
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
        let _ = inner.notifier.set(session.notifier());
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
        self.inner.replace(tree);
        *shown = effective.tasks;
        failures
    }

    fn shutdown(&self) {
        // Dropping the session unmounts.
        drop(self.session.lock().take());
        *self.inner.tree.write() = Arc::new(Tree::default());
        *self.inner.retired.lock() = Retired::default();
    }
}
