//! The bytes of a segment: a header naming the segment, then records, each
//! `[len u32 LE][crc32 u32 LE][kind u8][payload]` where `len` counts kind
//! and payload and the CRC covers them. The unwritten rest of a segment is
//! zeros, so a zero length ends it; anything else that does not check out
//! is a torn or damaged record.

use crate::error::{Result, StoreError};

pub const MAGIC: &[u8; 8] = b"SECRETDL";
pub const VERSION: u32 = 1;
/// magic, version, reserved, sequence number.
pub const HEADER_BYTES: usize = 24;
/// Length and CRC before each record's kind and payload.
pub const FRAME_BYTES: usize = 8;
/// The largest record a segment may hold: far above any raft entry the
/// API lets through (requests are capped at a few MiB), so a bigger length
/// can only be damage.
pub const RECORD_BYTES_MAX: usize = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A raft `Entry` (protobuf). An entry at or below the log's last index
    /// replaces it and everything after it (a conflicting tail).
    Entry = 1,
    /// A raft `HardState` (protobuf): the newest one counts.
    HardState = 2,
    /// `index term` (u64 LE each): entries up to `index` are dropped.
    Compact = 3,
    /// `index term`: every entry is dropped; the log continues after
    /// `index` (a snapshot was installed).
    Reset = 4,
}

impl Kind {
    fn of(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::HardState,
            3 => Kind::Compact,
            4 => Kind::Reset,
            _ => return None,
        })
    }
}

pub fn header(seq: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h
}

/// Checks a segment's header against the sequence number its name gives.
pub fn check_header(bytes: &[u8], seq: u64, name: &str) -> Result<()> {
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(StoreError::Storage(format!(
            "raft log segment {name} is not a secretd log segment (bad header)"
        )));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(StoreError::Storage(format!(
            "raft log segment {name} has format version {version}; this secretd reads {VERSION}"
        )));
    }
    let got = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if got != seq {
        return Err(StoreError::Storage(format!(
            "raft log segment {name} says it is segment {got}"
        )));
    }
    Ok(())
}

/// Appends one framed record to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    assert!(
        payload.len() < RECORD_BYTES_MAX,
        "raft log record too large"
    );
    let len = (payload.len() + 1) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind as u8]);
    h.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

pub fn index_term(index: u64, term: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&index.to_le_bytes());
    b[8..].copy_from_slice(&term.to_le_bytes());
    b
}

pub fn parse_index_term(p: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; 16] = p.try_into().ok()?;
    Some((
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
    ))
}

/// What the bytes at the start of `rest` are.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record, and how many bytes it took.
    Record(Kind, &'a [u8], usize),
    /// Zeros: the segment's written part ended.
    End,
    /// Neither: a record cut short or damaged.
    Bad(String),
}

pub fn decode(rest: &[u8]) -> Decoded<'_> {
    if rest.len() < FRAME_BYTES {
        return if rest.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(format!("{} stray bytes at the end", rest.len()))
        };
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return if crc == 0 {
            Decoded::End
        } else {
            Decoded::Bad("a record of length 0".into())
        };
    }
    if len > RECORD_BYTES_MAX || FRAME_BYTES + len > rest.len() {
        return Decoded::Bad(format!(
            "a record of {len} bytes where {} remain",
            rest.len() - FRAME_BYTES
        ));
    }
    let body = &rest[FRAME_BYTES..FRAME_BYTES + len];
    if crc32fast::hash(body) != crc {
        return Decoded::Bad("a record whose checksum does not match".into());
    }
    match Kind::of(body[0]) {
        Some(k) => Decoded::Record(k, &body[1..], FRAME_BYTES + len),
        None => Decoded::Bad(format!("a record of unknown kind {}", body[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of another format version is refused, naming both
    /// versions and the segment, never misread.
    #[test]
    fn a_segment_of_another_version_is_refused_by_name() {
        let mut h = header(5);
        check_header(&h, 5, "0005.seg").unwrap();
        h[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        let e = check_header(&h, 5, "0005.seg").unwrap_err().to_string();
        assert!(
            e.contains("0005.seg")
                && e.contains(&format!("format version {}", VERSION + 1))
                && e.contains(&format!("reads {VERSION}")),
            "{e}"
        );
    }

    #[test]
    fn records_round_trip_and_damage_is_seen() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Entry, b"hello");
        encode(&mut buf, Kind::Compact, &index_term(7, 3));
        let Decoded::Record(k, p, n) = decode(&buf) else {
            panic!("first record")
        };
        assert_eq!((k, p), (Kind::Entry, &b"hello"[..]));
        let Decoded::Record(k, p, m) = decode(&buf[n..]) else {
            panic!("second record")
        };
        assert_eq!((k, parse_index_term(p)), (Kind::Compact, Some((7, 3))));
        assert_eq!(decode(&buf[n + m..]), Decoded::End);
        assert_eq!(decode(&[0u8; 64]), Decoded::End);
        // Every cut of the first record is seen as bad, never as a record.
        for cut in 1..n {
            let mut torn = buf[..cut].to_vec();
            torn.resize(64, 0);
            assert!(matches!(decode(&torn), Decoded::Bad(_)), "cut at {cut}");
        }
        // A flipped bit anywhere in the first record is seen.
        for bit in 0..n * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&bad), Decoded::Record(Kind::Entry, b"hello", _)),
                "bit {bit}"
            );
        }
    }
}
