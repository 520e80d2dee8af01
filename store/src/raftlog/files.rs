//! The files a raft log lives in: a real directory, or the simulated disk's
//! files (`MemDisk`), behind one small interface, so the simulation runs
//! the same segment code as production, torn tails included.
//!
//! Real segments are created whole before use: zero-filled to their full
//! size under a temporary name, synced, renamed, and the directory synced.
//! Appends then overwrite zeros in place, so `fdatasync` never has a file
//! size or extent map to commit, only data.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

pub use crate::db::LogDir;
use crate::db::MemDisk;
use crate::error::{Result, StoreError};

/// One open segment file.
pub enum SegFile {
    Real(File),
    Mem { disk: Arc<MemDisk>, name: String },
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("raft log: {what}: {e}"))
}

impl LogDir {
    /// Segment file names present, in no particular order. Leftover
    /// temporary files from an interrupted creation are removed.
    pub fn list(&self) -> Result<Vec<String>> {
        match self {
            LogDir::Real(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| io_err(&format!("cannot create {}", dir.display()), e))?;
                let mut out = Vec::new();
                let rd = std::fs::read_dir(dir)
                    .map_err(|e| io_err(&format!("cannot list {}", dir.display()), e))?;
                for ent in rd {
                    let ent = ent.map_err(|e| io_err("cannot list the log directory", e))?;
                    let name = ent.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".tmp") {
                        let _ = std::fs::remove_file(ent.path());
                    } else {
                        out.push(name);
                    }
                }
                Ok(out)
            }
            LogDir::Mem(disk) => Ok(disk.file_names()),
        }
    }

    /// Zero-fills `name` under a temporary name, ahead of `create`
    /// (run on a helper thread, so the raft thread never waits for it).
    pub fn prepare(&self, name: &str, size_bytes: u64) -> Result<()> {
        match self {
            LogDir::Real(dir) => prepare_file(&dir.join(format!("{name}.tmp")), &[], size_bytes),
            LogDir::Mem(_) => Ok(()),
        }
    }

    /// Creates `name` holding `head` followed by zeros up to `size_bytes`,
    /// durable (file and directory entry) before it returns. `prepared`:
    /// `prepare` already made the zero-filled file.
    pub fn create(
        &self,
        name: &str,
        head: &[u8],
        size_bytes: u64,
        prepared: bool,
    ) -> Result<SegFile> {
        match self {
            LogDir::Real(dir) => {
                let tmp = dir.join(format!("{name}.tmp"));
                if prepared {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&tmp)
                        .map_err(|e| io_err(&format!("cannot open {}", tmp.display()), e))?;
                    f.write_all_at(head, 0)
                        .and_then(|()| f.sync_data())
                        .map_err(|e| io_err(&format!("cannot write {}", tmp.display()), e))?;
                } else {
                    prepare_file(&tmp, head, size_bytes)?;
                }
                let path = dir.join(name);
                std::fs::rename(&tmp, &path)
                    .map_err(|e| io_err(&format!("cannot rename {}", tmp.display()), e))?;
                sync_dir(dir)?;
                self.open(name)
            }
            LogDir::Mem(disk) => {
                disk.file_create(name, head);
                self.open(name)
            }
        }
    }

    pub fn open(&self, name: &str) -> Result<SegFile> {
        match self {
            LogDir::Real(dir) => {
                let path = dir.join(name);
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err(&format!("cannot open {}", path.display()), e))?;
                Ok(SegFile::Real(f))
            }
            LogDir::Mem(disk) => Ok(SegFile::Mem {
                disk: disk.clone(),
                name: name.to_string(),
            }),
        }
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        match self {
            LogDir::Real(dir) => {
                let path = dir.join(name);
                std::fs::remove_file(&path)
                    .map_err(|e| io_err(&format!("cannot remove {}", path.display()), e))?;
                sync_dir(dir)
            }
            LogDir::Mem(disk) => {
                disk.file_remove(name);
                Ok(())
            }
        }
    }

    /// Whether segments are real files (worth preparing off the raft thread).
    pub fn is_real(&self) -> bool {
        matches!(self, LogDir::Real(_))
    }
}

/// Writes `head` and zeros up to `size_bytes` into a new file, synced.
pub fn prepare_file(path: &std::path::Path, head: &[u8], size_bytes: u64) -> Result<()> {
    const CHUNK_BYTES: usize = 1 << 20;
    let f =
        File::create(path).map_err(|e| io_err(&format!("cannot create {}", path.display()), e))?;
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut at = 0u64;
    while at < size_bytes {
        let n = (size_bytes - at).min(CHUNK_BYTES as u64) as usize;
        f.write_all_at(&zeros[..n], at)
            .map_err(|e| io_err(&format!("cannot fill {}", path.display()), e))?;
        at += n as u64;
    }
    f.write_all_at(head, 0)
        .map_err(|e| io_err(&format!("cannot write {}", path.display()), e))?;
    f.sync_all()
        .map_err(|e| io_err(&format!("cannot sync {}", path.display()), e))
}

fn sync_dir(dir: &std::path::Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&format!("cannot sync directory {}", dir.display()), e))
}

impl SegFile {
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        match self {
            SegFile::Real(f) => f
                .write_all_at(bytes, offset)
                .map_err(|e| io_err("cannot write a segment", e)),
            SegFile::Mem { disk, name } => disk.file_write(name, offset, bytes),
        }
    }

    /// Makes every byte written so far durable (`fdatasync`).
    pub fn sync(&self) -> Result<()> {
        match self {
            SegFile::Real(f) => f
                .sync_data()
                .map_err(|e| io_err("cannot sync a segment", e)),
            SegFile::Mem { disk, name } => disk.file_sync(name),
        }
    }

    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            SegFile::Real(f) => {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, offset)
                    .map_err(|e| io_err("cannot read a segment", e))?;
                Ok(buf)
            }
            SegFile::Mem { disk, name } => disk.file_read(name, offset, len),
        }
    }

    /// The whole file (segments are read whole once, when the log opens).
    /// A real segment is mapped, not read: reading a 32 MiB segment into a
    /// fresh buffer (zeroing its pages, then copying) took 100 ms, most of
    /// a restart with little data, to look at a few records and zeros.
    pub fn read_all(&self) -> Result<SegBytes> {
        match self {
            SegFile::Real(f) => {
                // SAFETY: the map is read-only and lives only while the log
                // opens. Only this process touches the raft log directory
                // (the data directory's store lock is held), segments are
                // never truncated, and its own writes (`zero_tail`) go
                // through the same page cache the map shows.
                let map = unsafe { memmap2::Mmap::map(f) }
                    .map_err(|e| io_err("cannot map a segment", e))?;
                Ok(SegBytes::Mapped(map))
            }
            SegFile::Mem { disk, name } => {
                Ok(SegBytes::Owned(disk.file_read(name, 0, usize::MAX)?))
            }
        }
    }
}

/// A segment's bytes as `read_all` found them.
pub enum SegBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for SegBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SegBytes::Mapped(m) => m,
            SegBytes::Owned(v) => v,
        }
    }
}
