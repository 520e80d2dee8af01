//! Reads a bbolt file etcd wrote (branch and overflow pages, inline
//! buckets, a freelist page or none) without trusting it: pages are read
//! with positioned reads (no mmap), every offset and length is checked
//! against the page it lies in, each traversal visits a page at most once
//! and descends at most `DEPTH_MAX` levels, keys must strictly increase,
//! and nothing is allocated beyond one page span (`PAGE_SPAN_BYTES_MAX`)
//! per level. A damaged file is refused with the page and the reason,
//! never a panic.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{
    le16, le32, le64, Meta, BUCKET_HEADER_BYTES, ELEMENT_BUCKET, ELEMENT_BYTES, FLAG_BRANCH,
    FLAG_LEAF, FLAG_META, META_BYTES, PAGE_HEADER_BYTES,
};
use crate::error::{Result, StoreError};

/// Deepest tree accepted (bbolt's trees over a 64 GiB file are under 10).
pub const DEPTH_MAX: usize = 32;
/// Largest page span (a page with its overflow pages): above the largest
/// value a snapshot record may carry (`snapshot::VALUE_BYTES_MAX`).
pub const PAGE_SPAN_BYTES_MAX: u64 = 80 << 20;
/// Page sizes bbolt can have written: powers of two in this range.
const PAGE_BYTES_MIN: u32 = 512;
const PAGE_BYTES_MAX: u32 = 64 << 10;

/// Called with each pair of a bucket: key, value.
pub type PairVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;
/// Called with each leaf element: key, value, element flags.
type ElementVisitor<'a> = dyn FnMut(&[u8], &[u8], u32) -> Result<()> + 'a;

/// An open bbolt file: its chosen meta page, checked.
pub struct Reader {
    file: File,
    path: PathBuf,
    page_bytes: u64,
    /// Pages in use (`meta.pgid`); every page id read must be below it.
    pages: u64,
    pub meta: Meta,
}

/// Where a bucket's tree is.
#[derive(Clone, Debug)]
pub enum Bucket {
    Page(u64),
    /// The bucket's single leaf page, stored in its parent's value.
    Inline(Vec<u8>),
}

/// The newer of the two meta pages that decode (bbolt writes them in
/// turn), or why neither does.
fn newest_meta(file: &File, path: &Path, content_bytes: u64) -> Result<Meta> {
    let read_meta = |offset: u64| -> std::result::Result<Meta, String> {
        let mut b = [0u8; PAGE_HEADER_BYTES + META_BYTES];
        if offset + b.len() as u64 > content_bytes {
            return Err("file too short for a meta page".into());
        }
        file.read_exact_at(&mut b, offset)
            .map_err(|e| format!("read: {e}"))?;
        if le16(&b[8..10]) != FLAG_META {
            return Err("not a meta page".into());
        }
        Meta::decode(&b[PAGE_HEADER_BYTES..])
    };
    let m0 = read_meta(0);
    // Meta 1 sits one page further: at meta 0's page size if it is
    // valid, else at whichever page size finds a valid one.
    let sizes: Vec<u32> = match &m0 {
        Ok(m) => vec![m.page_size],
        Err(_) => (9..=16).map(|s| 1u32 << s).collect(),
    };
    let mut m1 = Err("no meta page 1".to_string());
    for s in sizes {
        m1 = read_meta(s as u64);
        if m1.as_ref().is_ok_and(|m| m.page_size == s) {
            break;
        }
    }
    match (&m0, &m1) {
        (Ok(a), Ok(b)) => Ok(if b.txid > a.txid { *b } else { *a }),
        (Ok(a), Err(_)) => Ok(*a),
        (Err(_), Ok(b)) => Ok(*b),
        (Err(e0), Err(e1)) => Err(corrupt_at(
            path,
            format!("not a valid bbolt file: meta page 0: {e0}; meta page 1: {e1}"),
        )),
    }
}

impl Reader {
    /// Opens the first `content_bytes` of `path` (a backup's sha256
    /// trailer excluded) and picks the newest valid meta page.
    pub fn open(path: &Path, content_bytes: u64) -> Result<Reader> {
        let file = File::open(path).map_err(|e| io_err(path, "open", e))?;
        let meta = newest_meta(&file, path, content_bytes)?;
        let corrupt = |m: String| corrupt_at(path, m);
        if !(PAGE_BYTES_MIN..=PAGE_BYTES_MAX).contains(&meta.page_size)
            || !meta.page_size.is_power_of_two()
        {
            return Err(corrupt(format!(
                "page size {} out of range",
                meta.page_size
            )));
        }
        let page_bytes = meta.page_size as u64;
        if meta.pages < 3 || meta.pages.saturating_mul(page_bytes) > content_bytes {
            return Err(corrupt(format!(
                "meta says {} pages of {page_bytes} bytes, the file holds {content_bytes} bytes \
                 (truncated?)",
                meta.pages
            )));
        }
        if meta.root < 2 || meta.root >= meta.pages {
            return Err(corrupt(format!(
                "root bucket page {} outside pages 2..{}",
                meta.root, meta.pages
            )));
        }
        Ok(Reader {
            file,
            path: path.to_path_buf(),
            page_bytes,
            pages: meta.pages,
            meta,
        })
    }

    fn corrupt(&self, m: impl std::fmt::Display) -> StoreError {
        corrupt_at(&self.path, m)
    }

    /// Reads page `id` with its overflow pages, checked.
    fn page(&self, id: u64, visited: &mut Visited) -> Result<Vec<u8>> {
        if id < 2 || id >= self.pages {
            return Err(self.corrupt(format!(
                "page {id} referenced, outside pages 2..{}",
                self.pages
            )));
        }
        let mut head = [0u8; PAGE_HEADER_BYTES];
        self.file
            .read_exact_at(&mut head, id * self.page_bytes)
            .map_err(|e| io_err(&self.path, "read", e))?;
        if le64(&head[0..8]) != id {
            return Err(self.corrupt(format!("page {id} says it is page {}", le64(&head[0..8]))));
        }
        let span = le32(&head[12..16]) as u64 + 1;
        if id + span > self.pages || span * self.page_bytes > PAGE_SPAN_BYTES_MAX {
            return Err(self.corrupt(format!(
                "page {id} spans {span} pages, past the file or the limit"
            )));
        }
        visited.mark(id, span).map_err(|m| self.corrupt(m))?;
        let mut buf = vec![0u8; (span * self.page_bytes) as usize];
        self.file
            .read_exact_at(&mut buf, id * self.page_bytes)
            .map_err(|e| io_err(&self.path, "read", e))?;
        Ok(buf)
    }

    /// The top-level buckets, by name, in order.
    pub fn buckets(&self) -> Result<Vec<(Vec<u8>, Bucket)>> {
        let mut out = Vec::new();
        let mut visited = Visited::new(self.pages);
        let root = Bucket::Page(self.meta.root);
        self.walk(&root, &mut visited, &mut |k, v, flags| {
            if flags & ELEMENT_BUCKET == 0 {
                return Err(self.corrupt(format!(
                    "the root bucket holds a plain key {:?}",
                    String::from_utf8_lossy(k)
                )));
            }
            out.push((k.to_vec(), self.bucket_value(k, v)?));
            Ok(())
        })?;
        Ok(out)
    }

    fn bucket_value(&self, name: &[u8], v: &[u8]) -> Result<Bucket> {
        if v.len() < BUCKET_HEADER_BYTES {
            return Err(self.corrupt(format!(
                "bucket {:?}: header of {} bytes",
                String::from_utf8_lossy(name),
                v.len()
            )));
        }
        let root = le64(&v[..8]);
        if root == 0 {
            Ok(Bucket::Inline(v[BUCKET_HEADER_BYTES..].to_vec()))
        } else {
            Ok(Bucket::Page(root))
        }
    }

    /// Calls `f` with every pair of a bucket, in key order. Nested buckets
    /// (etcd writes none) are refused.
    pub fn for_each(&self, name: &[u8], b: &Bucket, f: &mut PairVisitor<'_>) -> Result<()> {
        let mut visited = Visited::new(self.pages);
        self.walk(b, &mut visited, &mut |k, v, flags| {
            if flags & ELEMENT_BUCKET != 0 {
                return Err(self.corrupt(format!(
                    "bucket {:?} holds a nested bucket {:?} (etcd writes none)",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(k)
                )));
            }
            f(k, v)
        })
    }

    fn walk(&self, b: &Bucket, visited: &mut Visited, f: &mut ElementVisitor<'_>) -> Result<()> {
        let mut last: Option<Vec<u8>> = None;
        match b {
            Bucket::Page(id) => self.walk_page(*id, 0, visited, &mut last, f),
            Bucket::Inline(page) => {
                let items = self.elements(0, page, true)?;
                self.leaf(0, page, items, &mut last, f)
            }
        }
    }

    fn walk_page(
        &self,
        id: u64,
        depth: usize,
        visited: &mut Visited,
        last: &mut Option<Vec<u8>>,
        f: &mut ElementVisitor<'_>,
    ) -> Result<()> {
        if depth > DEPTH_MAX {
            return Err(self.corrupt(format!("tree deeper than {DEPTH_MAX} at page {id}")));
        }
        let page = self.page(id, visited)?;
        match le16(&page[8..10]) {
            FLAG_LEAF => {
                let items = self.elements(id, &page, true)?;
                self.leaf(id, &page, items, last, f)
            }
            FLAG_BRANCH => {
                // Only the children's ids are kept while descending (at
                // most 64 Ki per level), not the page.
                let count = self.elements(id, &page, false)?;
                let mut children = Vec::with_capacity(count);
                for i in 0..count {
                    let e = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
                    let pos = le32(&page[e..]) as usize;
                    let ksize = le32(&page[e + 4..]) as usize;
                    self.slice(id, &page, e, pos, ksize)?;
                    children.push(le64(&page[e + 8..]));
                }
                drop(page);
                for child in children {
                    self.walk_page(child, depth + 1, visited, last, f)?;
                }
                Ok(())
            }
            other => Err(self.corrupt(format!(
                "page {id} in a bucket tree has flags {other:#x} (not a branch or leaf)"
            ))),
        }
    }

    /// The element count of a leaf or branch page, checked to fit.
    fn elements(&self, id: u64, page: &[u8], leaf: bool) -> Result<usize> {
        if page.len() < PAGE_HEADER_BYTES {
            return Err(self.corrupt(format!("page {id} truncated")));
        }
        if leaf && le16(&page[8..10]) != FLAG_LEAF {
            return Err(self.corrupt(format!("page {id}: an inline bucket that is not a leaf")));
        }
        let count = le16(&page[10..12]) as usize;
        if PAGE_HEADER_BYTES + count * ELEMENT_BYTES > page.len() {
            return Err(self.corrupt(format!(
                "page {id}: {count} elements do not fit its {} bytes",
                page.len()
            )));
        }
        Ok(count)
    }

    fn leaf(
        &self,
        id: u64,
        page: &[u8],
        count: usize,
        last: &mut Option<Vec<u8>>,
        f: &mut ElementVisitor<'_>,
    ) -> Result<()> {
        for i in 0..count {
            let e = PAGE_HEADER_BYTES + i * ELEMENT_BYTES;
            let flags = le32(&page[e..]);
            let pos = le32(&page[e + 4..]) as usize;
            let ksize = le32(&page[e + 8..]) as usize;
            let vsize = le32(&page[e + 12..]) as usize;
            let both = self.slice(id, page, e, pos, ksize + vsize)?;
            let (k, v) = both.split_at(ksize);
            if k.is_empty() || last.as_deref().is_some_and(|l| l >= k) {
                return Err(self.corrupt(format!(
                    "page {id}: key {:?} empty or out of order",
                    String::from_utf8_lossy(k)
                )));
            }
            *last = Some(k.to_vec());
            f(k, v, flags)?;
        }
        Ok(())
    }

    /// `len` bytes at `pos` from the element at `elem`, inside the page.
    fn slice<'p>(
        &self,
        id: u64,
        page: &'p [u8],
        elem: usize,
        pos: usize,
        len: usize,
    ) -> Result<&'p [u8]> {
        let start = elem + pos;
        match start.checked_add(len) {
            Some(end) if end <= page.len() => Ok(&page[start..end]),
            _ => Err(self.corrupt(format!(
                "page {id}: an element points past the page ({pos} + {len} bytes)"
            ))),
        }
    }
}

/// Pages seen by one traversal: a page reached twice is a cycle or a
/// shared page, which bbolt never writes.
struct Visited(Vec<u64>);

impl Visited {
    fn new(pages: u64) -> Visited {
        Visited(vec![0; pages.div_ceil(64) as usize])
    }

    fn mark(&mut self, id: u64, span: u64) -> std::result::Result<(), String> {
        for p in id..id + span {
            let (w, bit) = ((p / 64) as usize, 1u64 << (p % 64));
            if self.0[w] & bit != 0 {
                return Err(format!("page {p} is reached twice"));
            }
            self.0[w] |= bit;
        }
        Ok(())
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("{}: {what}: {e}", path.display()))
}

fn corrupt_at(path: &Path, m: impl std::fmt::Display) -> StoreError {
    StoreError::InvalidArgument(format!(
        "{} is not a usable etcd database: {m}",
        path.display()
    ))
}
