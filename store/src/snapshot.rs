//! State-machine snapshot files: what a lagging follower receives instead of
//! log entries it can no longer get.
//!
//! ```text
//! "SDSN" | version u8 (1) | index u64 | term u64 | conf_state (u32 len + bytes)
//! records: cf u8 (1 = kv, 2 = meta) | key len u32 | key | value len u32 | value
//! end:     cf u8 = 0 | record count u64 | sha256 of everything before the hash
//! ```
//!
//! Written and read as streams: memory stays bounded by one record, whatever
//! the keyspace size. A file is verified end to end (hash and structure)
//! before anything of it is installed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::growing;

const MAGIC: &[u8; 4] = b"SDSN";
const VERSION: u8 = 1;
pub const CF_TAG_KV: u8 = 1;
pub const CF_TAG_META: u8 = 2;
const END: u8 = 0;
/// Largest key and value a snapshot record may carry: far above any request
/// the API admits, small enough that a corrupt length cannot exhaust memory.
const KEY_BYTES_MAX: u32 = 1 << 20;
const VALUE_BYTES_MAX: u32 = 64 << 20;
const CONF_STATE_BYTES_MAX: u32 = 1 << 20;

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("snapshot {}: {what}: {e}", path.display()))
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("snapshot {} is corrupt: {msg}", path.display()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub index: u64,
    pub term: u64,
    /// rust-protobuf encoded `ConfState`.
    pub conf_state: Vec<u8>,
}

/// Writes `<dir>/<index>.snap` via a temporary file, fsynced, then renamed.
pub struct SnapshotWriter {
    out: BufWriter<Counted>,
    hasher: Sha256,
    tmp: PathBuf,
    path: PathBuf,
    records: u64,
    /// Set by the owner to stop a write in progress (`record` fails).
    cancel: Option<Arc<AtomicBool>>,
    /// Where a sender streaming the file as it grows looks (`growing`).
    growth: growing::Guard,
}

/// The file under the buffer, counting what reaches it (`growing`).
struct Counted {
    f: File,
    progress: Arc<growing::Progress>,
}

impl Write for Counted {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(b)?;
        self.progress.wrote(n);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl SnapshotWriter {
    pub fn create(dir: &Path, h: &SnapshotHeader) -> Result<SnapshotWriter> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, "create dir", e))?;
        let path = file_path(dir, h.index);
        let tmp = dir.join(format!("{:016x}.snap.tmp", h.index));
        let f = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        let growth = growing::Guard::register(&path, &tmp);
        let progress = growth.progress();
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, Counted { f, progress }),
            hasher: Sha256::new(),
            tmp,
            path,
            records: 0,
            cancel: None,
            growth,
        };
        w.put(MAGIC)?;
        w.put(&[VERSION])?;
        w.put(&h.index.to_be_bytes())?;
        w.put(&h.term.to_be_bytes())?;
        w.put(&(h.conf_state.len() as u32).to_be_bytes())?;
        w.put(&h.conf_state)?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.hasher.update(b);
        self.out
            .write_all(b)
            .map_err(|e| io_err(&self.tmp, "write", e))
    }

    /// Makes `record` fail once `flag` is set (the member is stopping).
    pub fn cancel_on(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    pub fn record(&mut self, cf: u8, key: &[u8], value: &[u8]) -> Result<()> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(StoreError::Storage(
                "snapshot write cancelled: the member is stopping".into(),
            ));
        }
        assert!(
            cf == CF_TAG_KV || cf == CF_TAG_META,
            "unknown column family tag"
        );
        assert!(
            key.len() as u64 <= KEY_BYTES_MAX as u64
                && value.len() as u64 <= VALUE_BYTES_MAX as u64,
            "record too large for a snapshot"
        );
        self.put(&[cf])?;
        self.put(&(key.len() as u32).to_be_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Seals the file and makes it durable; returns its final path.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.put(&[END])?;
        let count = self.records;
        self.put(&count.to_be_bytes())?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.out
            .write_all(&digest)
            .map_err(|e| io_err(&self.tmp, "write", e))?;
        let counted = self
            .out
            .into_inner()
            .map_err(|e| io_err(&self.tmp, "flush", e.into_error()))?;
        counted
            .f
            .sync_all()
            .map_err(|e| io_err(&self.tmp, "fsync", e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| io_err(&self.path, "rename", e))?;
        self.growth.done();
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, "fsync dir", e))?;
        }
        Ok(self.path)
    }
}

pub fn file_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016x}.snap"))
}

/// One record: column family tag, key, value.
pub type Record = (u8, Vec<u8>, Vec<u8>);

/// Reads a snapshot file record by record.
pub struct SnapshotReader {
    input: std::io::Take<BufReader<File>>,
    /// Zero bytes allowed after the trailer (a backup's 512-byte padding).
    padded: bool,
    hasher: Sha256,
    path: PathBuf,
    pub header: SnapshotHeader,
    records: u64,
    done: bool,
}

impl SnapshotReader {
    pub fn open(path: &Path) -> Result<SnapshotReader> {
        Self::open_limited(path, u64::MAX, false)
    }

    /// A backup as etcd frames it (what `etcdctl snapshot save` stores): the
    /// snapshot, zero padding to a multiple of 512 bytes, then the sha256 of
    /// all that. The hash is checked before any record is read.
    pub fn open_backup(path: &Path) -> Result<SnapshotReader> {
        let len = fs::metadata(path)
            .map_err(|e| io_err(path, "stat", e))?
            .len();
        if len % BACKUP_ALIGN_BYTES != 32 {
            return Err(corrupt(
                path,
                format!("not a backup: {len} bytes is not a 512-byte multiple plus a sha256"),
            ));
        }
        let content = len - 32;
        if !sha256_trailer_matches(path, content)? {
            return Err(corrupt(path, "backup sha256 mismatch"));
        }
        Self::open_limited(path, content, true)
    }

    fn open_limited(path: &Path, limit: u64, padded: bool) -> Result<SnapshotReader> {
        let f = File::open(path).map_err(|e| io_err(path, "open", e))?;
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, f).take(limit),
            padded,
            hasher: Sha256::new(),
            path: path.to_path_buf(),
            header: SnapshotHeader {
                index: 0,
                term: 0,
                conf_state: Vec::new(),
            },
            records: 0,
            done: false,
        };
        let mut magic = [0u8; 4];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt(path, "not a secretd snapshot (bad magic)"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(corrupt(
                path,
                format!("snapshot format version {version}; this secretd reads version {VERSION}"),
            ));
        }
        r.header.index = r.u64()?;
        r.header.term = r.u64()?;
        let n = r.u32()?;
        if n > CONF_STATE_BYTES_MAX {
            return Err(corrupt(path, "conf state length out of range"));
        }
        r.header.conf_state = r.bytes(n as usize)?;
        Ok(r)
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => corrupt(&self.path, "truncated"),
            _ => io_err(&self.path, "read", e),
        })?;
        self.hasher.update(&*buf);
        Ok(())
    }
    fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.take(&mut v)?;
        Ok(v)
    }

    /// The next record, or None after the last one (whose trailer has then
    /// been verified).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let cf = self.u8()?;
        if cf == END {
            let count = self.u64()?;
            let want = std::mem::take(&mut self.hasher).finalize();
            let mut got = [0u8; 32];
            self.input
                .read_exact(&mut got)
                .map_err(|_| corrupt(&self.path, "truncated trailer"))?;
            if got[..] != want[..] {
                return Err(corrupt(&self.path, "checksum mismatch"));
            }
            if count != self.records {
                return Err(corrupt(
                    &self.path,
                    format!("{} records, trailer says {count}", self.records),
                ));
            }
            let mut extra = [0u8; 4096];
            loop {
                let n = self
                    .input
                    .read(&mut extra)
                    .map_err(|e| io_err(&self.path, "read", e))?;
                if n == 0 {
                    break;
                }
                if !self.padded || extra[..n].iter().any(|b| *b != 0) {
                    return Err(corrupt(&self.path, "bytes after the trailer"));
                }
            }
            self.done = true;
            return Ok(None);
        }
        if cf != CF_TAG_KV && cf != CF_TAG_META {
            return Err(corrupt(
                &self.path,
                format!("unknown column family tag {cf}"),
            ));
        }
        let kl = self.u32()?;
        if kl > KEY_BYTES_MAX {
            return Err(corrupt(&self.path, "key length out of range"));
        }
        let key = self.bytes(kl as usize)?;
        let vl = self.u32()?;
        if vl > VALUE_BYTES_MAX {
            return Err(corrupt(&self.path, "value length out of range"));
        }
        let value = self.bytes(vl as usize)?;
        self.records += 1;
        Ok(Some((cf, key, value)))
    }
}

/// Backups are padded to this, as etcd's bolt files are page-aligned.
pub const BACKUP_ALIGN_BYTES: u64 = 512;

/// Reads a whole file to check it, without keeping any of it.
pub fn verify(path: &Path) -> Result<SnapshotHeader> {
    let mut r = SnapshotReader::open(path)?;
    while r.next_record()?.is_some() {}
    Ok(r.header)
}

/// Removes all but the newest `keep` snapshot files (and stale temporaries).
pub fn prune(dir: &Path, keep: usize) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut snaps: Vec<PathBuf> = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".snap") {
            snaps.push(p);
        } else if name.ends_with(".tmp") || name.ends_with(".part") {
            let _ = fs::remove_file(&p);
        }
    }
    snaps.sort();
    let n = snaps.len().saturating_sub(keep);
    for p in &snaps[..n] {
        let _ = fs::remove_file(p);
    }
}

/// Whether the 32 bytes after the first `content` bytes of `path` are the
/// sha256 of those bytes (etcd's backup framing, read in one pass).
pub fn sha256_trailer_matches(path: &Path, content: u64) -> Result<bool> {
    let mut f = BufReader::with_capacity(
        1 << 20,
        File::open(path).map_err(|e| io_err(path, "open", e))?,
    );
    let mut h = Sha256::new();
    std::io::copy(&mut (&mut f).take(content), &mut h).map_err(|e| io_err(path, "read", e))?;
    let mut want = [0u8; 32];
    f.read_exact(&mut want)
        .map_err(|e| io_err(path, "read", e))?;
    Ok(h.finalize()[..] == want[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let h = SnapshotHeader {
            index: 42,
            term: 3,
            conf_state: vec![1, 2, 3],
        };
        let mut w = SnapshotWriter::create(dir.path(), &h).unwrap();
        for i in 0..100u32 {
            w.record(CF_TAG_KV, &i.to_be_bytes(), &vec![i as u8; i as usize])
                .unwrap();
        }
        w.record(CF_TAG_META, b"m", b"v").unwrap();
        let path = w.finish().unwrap();
        assert_eq!(verify(&path).unwrap(), h);
        let mut r = SnapshotReader::open(&path).unwrap();
        let mut n = 0;
        while let Some((cf, k, v)) = r.next_record().unwrap() {
            if cf == CF_TAG_KV {
                assert_eq!(v.len() as u32, u32::from_be_bytes(k.try_into().unwrap()));
            }
            n += 1;
        }
        assert_eq!(n, 101);
        // Any flipped byte or truncation is caught before install.
        let bytes = fs::read(&path).unwrap();
        for pos in [0, 5, 30, bytes.len() / 2, bytes.len() - 40, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[pos] ^= 0x40;
            fs::write(&path, &b).unwrap();
            assert!(verify(&path).is_err(), "flip at {pos} undetected");
        }
        fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        assert!(verify(&path).is_err());
    }
}
