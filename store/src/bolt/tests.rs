//! The writer and the reader against each other, and the reader against
//! damaged files. (That etcd's own bbolt reads what the writer writes, and
//! the reader what etcd writes, is `api/tests/it/etcd_format.rs`, with the
//! real binaries.)

use super::read::{Bucket, Reader};
use super::write::Writer;
use super::*;

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn sample() -> Vec<(&'static str, Pairs, bool)> {
    let many: Pairs = (0..20_000u32)
        .map(|i| {
            (
                format!("k{i:08}").into_bytes(),
                vec![i as u8; (i % 97) as usize],
            )
        })
        .collect();
    let big: Pairs = vec![
        (b"a".to_vec(), vec![7u8; 100_000]),
        (b"b".to_vec(), Vec::new()),
        (b"c".to_vec(), vec![9u8; 3 * PAGE_BYTES]),
    ];
    vec![
        ("big", big, false),
        ("empty", Vec::new(), false),
        ("inline", vec![(b"x".to_vec(), b"1".to_vec())], true),
        ("many", many, false),
    ]
}

fn write(path: &std::path::Path) -> u64 {
    let mut w = Writer::create(path).unwrap();
    for (name, pairs, inline) in sample() {
        let mut b = w.bucket(name.as_bytes()).unwrap();
        for (k, v) in &pairs {
            b.put(k, v).unwrap();
        }
        if inline {
            b.finish_inline().unwrap();
        } else {
            b.finish().unwrap();
        }
    }
    w.finish().unwrap()
}

fn read_all(path: &std::path::Path, len: u64) -> crate::error::Result<Vec<(Vec<u8>, Pairs)>> {
    let r = Reader::open(path, len)?;
    let mut out = Vec::new();
    for (name, b) in r.buckets()? {
        let mut pairs = Vec::new();
        r.for_each(&name, &b, &mut |k, v| {
            pairs.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        out.push((name, pairs));
    }
    Ok(out)
}

#[test]
fn what_is_written_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let len = write(&path);
    assert_eq!(len, std::fs::metadata(&path).unwrap().len());
    assert_eq!(len % PAGE_BYTES as u64, 0);
    let got = read_all(&path, len).unwrap();
    let want: Vec<(Vec<u8>, Pairs)> = sample()
        .into_iter()
        .map(|(n, p, _)| (n.as_bytes().to_vec(), p))
        .collect();
    assert_eq!(got, want);
    let r = Reader::open(&path, len).unwrap();
    let buckets = r.buckets().unwrap();
    assert!(matches!(buckets[2].1, Bucket::Inline(_)));
    // The large bucket has branch pages (more than one level).
    let Bucket::Page(root) = buckets[3].1 else {
        panic!("not a page")
    };
    let bytes = std::fs::read(&path).unwrap();
    let at = root as usize * PAGE_BYTES;
    assert_eq!(le16(&bytes[at + 8..]), FLAG_BRANCH);
}

#[test]
fn keys_out_of_order_are_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::create(&dir.path().join("db")).unwrap();
    let mut b = w.bucket(b"b").unwrap();
    b.put(b"2", b"").unwrap();
    assert!(b.put(b"1", b"").is_err());
    assert!(b.put(b"2", b"").is_err());
}

#[test]
fn meta_pages_are_chosen_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let len = write(&path);
    let good = std::fs::read(&path).unwrap();
    // One damaged meta page: the other one serves.
    for page in [0usize, 1] {
        let mut b = good.clone();
        b[page * PAGE_BYTES + PAGE_HEADER_BYTES + 20] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(read_all(&path, len).is_ok(), "meta {page} damaged");
    }
    // Both: refused, saying why.
    let mut b = good.clone();
    b[PAGE_HEADER_BYTES + 20] ^= 1;
    b[PAGE_BYTES + PAGE_HEADER_BYTES + 20] ^= 1;
    std::fs::write(&path, &b).unwrap();
    let e = read_all(&path, len).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");
    // Truncated: the meta's page count is past the end.
    std::fs::write(&path, &good[..good.len() - PAGE_BYTES]).unwrap();
    let e = read_all(&path, len - PAGE_BYTES as u64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    // Not a bbolt file at all.
    std::fs::write(&path, vec![0u8; 3 * PAGE_BYTES]).unwrap();
    assert!(read_all(&path, 3 * PAGE_BYTES as u64).is_err());
}

#[test]
fn a_page_reached_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let len = write(&path);
    let mut b = std::fs::read(&path).unwrap();
    let r = Reader::open(&path, len).unwrap();
    let Bucket::Page(root) = r.buckets().unwrap()[3].1 else {
        panic!("not a page")
    };
    // The branch root's second child made its first: a cycle-free loop.
    let at = root as usize * PAGE_BYTES + PAGE_HEADER_BYTES;
    let first = le64(&b[at + 8..]);
    b[at + ELEMENT_BYTES + 8..at + ELEMENT_BYTES + 16].copy_from_slice(&first.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let e = read_all(&path, len).unwrap_err().to_string();
    assert!(e.contains("reached twice"), "{e}");
    // And itself: a cycle.
    b[at + 8..at + 16].copy_from_slice(&root.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let e = read_all(&path, len).unwrap_err().to_string();
    assert!(e.contains("reached twice"), "{e}");
}

/// Any damage is an error or (where it lands in a value) a changed value,
/// never a panic or a runaway allocation.
#[test]
fn damaged_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let len = write(&path);
    let good = std::fs::read(&path).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..1500 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = good.clone();
        // Mostly headers and element tables, where damage matters most.
        let page = (seed >> 8) as usize % (good.len() / PAGE_BYTES);
        let off = if seed & 1 == 0 {
            (seed >> 32) as usize % 80
        } else {
            (seed >> 32) as usize % PAGE_BYTES
        };
        b[page * PAGE_BYTES + off] ^= 1 << ((seed >> 4) % 8);
        std::fs::write(&path, &b).unwrap();
        let _ = read_all(&path, len);
    }
}
