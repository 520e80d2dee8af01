//! bbolt's file format (go.etcd.io/bbolt, format version 2): the database
//! etcd keeps its state in, and what `etcdctl snapshot save` copies. Backups
//! are exchanged with etcd in it (`etcd_backup`), so this module writes a
//! fresh file bottom-up (`write`) and reads any file etcd wrote, checking
//! every page it touches (`read`).
//!
//! Layout (little-endian, as bbolt writes on x86-64 and arm64): pages of
//! `page_size` bytes; pages 0 and 1 are meta pages (the newer valid one
//! wins), each page starts with a 16-byte header `id u64 | flags u16 |
//! count u16 | overflow u32` (a page spans `1 + overflow` pages). Leaf
//! elements are `flags u32 | pos u32 | ksize u32 | vsize u32`, branch
//! elements `pos u32 | ksize u32 | pgid u64`, `pos` counted from the
//! element itself. The root bucket is a tree whose leaf values (flag 1) are
//! buckets: `root pgid u64 | sequence u64`, followed by the bucket's only
//! page when `root` is 0 (an inline bucket).
//!
//! bbolt checksums only its meta pages (FNV-1a 64); the pages themselves
//! are covered by the sha256 etcd appends to a snapshot, which
//! `etcd_backup` verifies before any page is read.

pub mod read;
pub mod write;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// The page size secretd writes: the OS page size etcd writes on Linux.
pub const PAGE_BYTES: usize = 4096;
pub const PAGE_HEADER_BYTES: usize = 16;
pub const ELEMENT_BYTES: usize = 16;
pub const BUCKET_HEADER_BYTES: usize = 16;
/// The meta record after the page header: magic, version, page size,
/// flags, root bucket (16), freelist, high-water page id, txid, checksum.
pub const META_BYTES: usize = 64;
/// The checksum covers the meta record up to the checksum itself.
const META_SUMMED_BYTES: usize = 56;
/// `meta.freelist` of a file whose freelist is not stored (rebuilt on open).
pub const NO_FREELIST: u64 = u64::MAX;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// A leaf element whose value is a bucket.
pub const ELEMENT_BUCKET: u32 = 0x01;

/// A meta page's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    /// One past the last page in use (the file's size in pages).
    pub pages: u64,
    pub txid: u64,
}

impl Meta {
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut b = [0u8; META_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&VERSION.to_le_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.root.to_le_bytes());
        b[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        b[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        b[40..48].copy_from_slice(&self.pages.to_le_bytes());
        b[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&b[..META_SUMMED_BYTES]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// The record, or why it is not a valid one.
    pub fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_BYTES {
            return Err("meta page truncated".into());
        }
        let magic = le32(&b[0..4]);
        if magic != MAGIC {
            if magic == MAGIC.swap_bytes() {
                return Err("a big-endian bbolt file (written on another CPU family)".into());
            }
            return Err("no bbolt magic".into());
        }
        let version = le32(&b[4..8]);
        if version != VERSION {
            return Err(format!("bbolt format version {version}, not {VERSION}"));
        }
        if fnv1a64(&b[..META_SUMMED_BYTES]) != le64(&b[56..64]) {
            return Err("meta page checksum mismatch".into());
        }
        Ok(Meta {
            page_size: le32(&b[8..12]),
            flags: le32(&b[12..16]),
            root: le64(&b[16..24]),
            sequence: le64(&b[24..32]),
            freelist: le64(&b[32..40]),
            pages: le64(&b[40..48]),
            txid: le64(&b[48..56]),
        })
    }
}

pub(crate) fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}
pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// FNV-1a, 64 bits: bbolt's meta checksum (Go's hash/fnv New64a).
pub fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= *x as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
