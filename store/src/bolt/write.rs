//! Writes a fresh bbolt file bottom-up, as one transaction would leave it
//! after a compaction: meta pages 0 and 1, an empty freelist at page 2,
//! then each bucket's tree (leaves as they fill, branch pages as each
//! level fills), then the root bucket's leaf. Every page is reachable and
//! none is free, which `bbolt check` (run by `etcdutl snapshot status`)
//! requires. Memory stays bounded by one page per tree level, whatever the
//! bucket's size; pairs must come in key order.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{
    Meta, BUCKET_HEADER_BYTES, ELEMENT_BUCKET, ELEMENT_BYTES, FLAG_BRANCH, FLAG_FREELIST,
    FLAG_LEAF, FLAG_META, META_BYTES, PAGE_BYTES, PAGE_HEADER_BYTES,
};
use crate::error::{Result, StoreError};

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("bbolt file {}: {what}: {e}", path.display()))
}

/// bbolt's page header count is 16 bits.
const PAGE_ELEMENTS_MAX: usize = u16::MAX as usize - 1;

/// A bbolt file being written to `<path>.tmp`, renamed to `path` by `finish`.
pub struct Writer {
    out: BufWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    next_pgid: u64,
    /// Finished buckets: name and value (bucket header, and an inline
    /// page), in any order.
    buckets: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Writer {
    pub fn create(path: &Path) -> Result<Writer> {
        let tmp = path.with_extension("tmp");
        let f = File::create(&tmp).map_err(|e| io_err(&tmp, "create", e))?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, f),
            tmp,
            path: path.to_path_buf(),
            next_pgid: 3,
            buckets: Vec::new(),
        };
        // Meta pages and the freelist are written last, in place.
        w.out
            .write_all(&[0u8; 3 * PAGE_BYTES])
            .map_err(|e| io_err(&w.tmp, "write", e))?;
        Ok(w)
    }

    /// Starts a top-level bucket; `BucketWriter::finish` ends it.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketWriter<'_>> {
        if self.buckets.iter().any(|(n, _)| n == name) {
            return Err(StoreError::Storage(format!(
                "bbolt writer: bucket {:?} written twice",
                String::from_utf8_lossy(name)
            )));
        }
        Ok(BucketWriter {
            w: self,
            name: name.to_vec(),
            tree: Tree::default(),
        })
    }

    /// Writes one page (spanning as many pages as `body` needs) and
    /// returns its id.
    fn page(&mut self, flags: u16, count: usize, body: &[u8]) -> Result<u64> {
        let total = PAGE_HEADER_BYTES + body.len();
        let span = total.div_ceil(PAGE_BYTES).max(1);
        let id = self.next_pgid;
        let mut header = [0u8; PAGE_HEADER_BYTES];
        header[0..8].copy_from_slice(&id.to_le_bytes());
        header[8..10].copy_from_slice(&flags.to_le_bytes());
        header[10..12].copy_from_slice(&(count as u16).to_le_bytes());
        header[12..16].copy_from_slice(&((span - 1) as u32).to_le_bytes());
        let pad = span * PAGE_BYTES - total;
        for part in [&header[..], body, &vec![0u8; pad]] {
            self.out
                .write_all(part)
                .map_err(|e| io_err(&self.tmp, "write", e))?;
        }
        self.next_pgid += span as u64;
        Ok(id)
    }

    /// Writes the root bucket, the freelist and the meta pages; syncs and
    /// renames. Returns the file's size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        let mut root = Tree::default();
        for (name, v) in &buckets {
            root.put(&mut self, name, v, ELEMENT_BUCKET)?;
        }
        let root_pgid = root.finish(&mut self)?;
        let pages = self.next_pgid;
        let path = self.path.clone();
        let tmp = self.tmp.clone();
        let mut f = self
            .out
            .into_inner()
            .map_err(|e| io_err(&tmp, "flush", e.into_error()))?;
        let mut head = vec![0u8; 3 * PAGE_BYTES];
        for (i, txid) in [(0usize, 0u64), (1, 1)] {
            let p = &mut head[i * PAGE_BYTES..];
            p[0..8].copy_from_slice(&(i as u64).to_le_bytes());
            p[8..10].copy_from_slice(&FLAG_META.to_le_bytes());
            let meta = Meta {
                page_size: PAGE_BYTES as u32,
                flags: 0,
                root: root_pgid,
                sequence: 0,
                freelist: 2,
                pages,
                txid,
            };
            p[PAGE_HEADER_BYTES..PAGE_HEADER_BYTES + META_BYTES].copy_from_slice(&meta.encode());
        }
        let free = &mut head[2 * PAGE_BYTES..];
        free[0..8].copy_from_slice(&2u64.to_le_bytes());
        free[8..10].copy_from_slice(&FLAG_FREELIST.to_le_bytes());
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&head))
            .map_err(|e| io_err(&tmp, "write", e))?;
        f.sync_all().map_err(|e| io_err(&tmp, "fsync", e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, "rename", e))?;
        Ok(pages * PAGE_BYTES as u64)
    }
}

/// One bucket's pairs, in strictly increasing key order.
pub struct BucketWriter<'a> {
    w: &'a mut Writer,
    name: Vec<u8>,
    tree: Tree,
}

impl BucketWriter<'_> {
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.put(self.w, key, value, 0)
    }

    pub fn finish(self) -> Result<()> {
        let root = self.tree.finish(self.w)?;
        let mut v = vec![0u8; BUCKET_HEADER_BYTES];
        v[..8].copy_from_slice(&root.to_le_bytes());
        self.w.buckets.push((self.name, v));
        Ok(())
    }

    /// The bucket as bbolt stores a small one: its only leaf page inline
    /// in the parent's value (secretd writes none; etcd does, and the
    /// reader's tests need one).
    #[cfg(test)]
    pub fn finish_inline(self) -> Result<()> {
        let mut v = vec![0u8; BUCKET_HEADER_BYTES];
        let n = self.tree.leaf.len();
        v.extend_from_slice(&[0u8; 8]);
        v.extend_from_slice(&FLAG_LEAF.to_le_bytes());
        v.extend_from_slice(&(n as u16).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&leaf_body(&self.tree.leaf));
        self.w.buckets.push((self.name, v));
        Ok(())
    }
}

/// A leaf page's elements and data, after its header.
fn leaf_body(leaf: &[(Vec<u8>, Vec<u8>, u32)]) -> Vec<u8> {
    let n = leaf.len();
    let mut body = Vec::new();
    let mut data_at = n * ELEMENT_BYTES;
    for (i, (k, v, flags)) in leaf.iter().enumerate() {
        let pos = data_at - i * ELEMENT_BYTES;
        body.extend_from_slice(&flags.to_le_bytes());
        body.extend_from_slice(&(pos as u32).to_le_bytes());
        body.extend_from_slice(&(k.len() as u32).to_le_bytes());
        body.extend_from_slice(&(v.len() as u32).to_le_bytes());
        data_at += k.len() + v.len();
    }
    for (k, v, _) in leaf {
        body.extend_from_slice(k);
        body.extend_from_slice(v);
    }
    body
}

/// A B+tree built bottom-up: the open leaf, and above it one open branch
/// page per level.
#[derive(Default)]
struct Tree {
    leaf: Vec<(Vec<u8>, Vec<u8>, u32)>,
    leaf_bytes: usize,
    levels: Vec<Level>,
    last_key: Option<Vec<u8>>,
}

#[derive(Default)]
struct Level {
    /// (first key of the child, child's page id)
    children: Vec<(Vec<u8>, u64)>,
    bytes: usize,
    /// Whether this level already wrote a page (then it is not the root).
    wrote: bool,
}

impl Tree {
    fn put(&mut self, w: &mut Writer, key: &[u8], value: &[u8], flags: u32) -> Result<()> {
        if key.is_empty() || self.last_key.as_deref().is_some_and(|last| last >= key) {
            return Err(StoreError::Storage(format!(
                "bbolt writer: key {:?} empty or out of order",
                String::from_utf8_lossy(key)
            )));
        }
        if key.len() > u32::MAX as usize / 2 || value.len() > u32::MAX as usize / 2 {
            return Err(StoreError::Storage("bbolt writer: pair too large".into()));
        }
        let need = ELEMENT_BYTES + key.len() + value.len();
        if !self.leaf.is_empty()
            && (PAGE_HEADER_BYTES + self.leaf_bytes + need > PAGE_BYTES
                || self.leaf.len() >= PAGE_ELEMENTS_MAX)
        {
            self.flush_leaf(w)?;
        }
        self.leaf.push((key.to_vec(), value.to_vec(), flags));
        self.leaf_bytes += need;
        self.last_key = Some(key.to_vec());
        Ok(())
    }

    fn flush_leaf(&mut self, w: &mut Writer) -> Result<()> {
        let n = self.leaf.len();
        let body = leaf_body(&self.leaf);
        let first = self.leaf.first().map(|e| e.0.clone()).unwrap_or_default();
        let id = w.page(FLAG_LEAF, n, &body)?;
        self.leaf.clear();
        self.leaf_bytes = 0;
        self.push_child(w, 0, first, id)
    }

    fn push_child(&mut self, w: &mut Writer, level: usize, key: Vec<u8>, id: u64) -> Result<()> {
        if self.levels.len() == level {
            self.levels.push(Level::default());
        }
        let need = ELEMENT_BYTES + key.len();
        let l = &self.levels[level];
        if !l.children.is_empty()
            && (PAGE_HEADER_BYTES + l.bytes + need > PAGE_BYTES
                || l.children.len() >= PAGE_ELEMENTS_MAX)
        {
            self.flush_level(w, level)?;
        }
        let l = &mut self.levels[level];
        l.children.push((key, id));
        l.bytes += need;
        Ok(())
    }

    fn flush_level(&mut self, w: &mut Writer, level: usize) -> Result<()> {
        let l = &mut self.levels[level];
        let children = std::mem::take(&mut l.children);
        l.bytes = 0;
        l.wrote = true;
        let n = children.len();
        let mut body = Vec::new();
        let mut data_at = n * ELEMENT_BYTES;
        for (i, (k, id)) in children.iter().enumerate() {
            let pos = data_at - i * ELEMENT_BYTES;
            body.extend_from_slice(&(pos as u32).to_le_bytes());
            body.extend_from_slice(&(k.len() as u32).to_le_bytes());
            body.extend_from_slice(&id.to_le_bytes());
            data_at += k.len();
        }
        for (k, _) in &children {
            body.extend_from_slice(k);
        }
        let first = children.first().map(|c| c.0.clone()).unwrap_or_default();
        let id = w.page(FLAG_BRANCH, n, &body)?;
        self.push_child(w, level + 1, first, id)
    }

    /// Writes what is still open; returns the root page's id.
    fn finish(mut self, w: &mut Writer) -> Result<u64> {
        if !self.leaf.is_empty() || self.levels.is_empty() {
            // An empty bucket is one empty leaf.
            self.flush_leaf(w)?;
        }
        let mut level = 0;
        loop {
            let l = &self.levels[level];
            let top = level + 1 == self.levels.len();
            if top && !l.wrote && l.children.len() == 1 {
                return Ok(l.children[0].1);
            }
            if !l.children.is_empty() {
                self.flush_level(w, level)?;
            }
            level += 1;
        }
    }
}
