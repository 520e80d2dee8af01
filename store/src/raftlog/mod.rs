//! The raft log in its own segment files: entries and hard state appended
//! with one `fdatasync` per `Ready`, outside RocksDB (no memtable, no
//! second WAL record, no inode update per sync).
//!
//! A log is a run of numbered segments (`{seq:016x}.seg`), each created
//! whole (zero-filled) before use, each starting with a header and the
//! log's state at the time (hard state, compaction point), so dropping the
//! oldest segments loses nothing still needed. Records are framed with a
//! length and a CRC (`record.rs`). Opening replays every segment in order;
//! a record that does not check out within the last `UNSYNCED_BYTES_MAX`
//! bytes of the *last* segment is a torn write from a crash and is cut off
//! (with a warning); anywhere else it is damage to synced records, and
//! opening fails with a message saying where. The writer makes that
//! distinction sound: it never has more than `UNSYNCED_BYTES_MAX` bytes
//! written and not yet synced, so a crash can tear nothing earlier.
//!
//! Compaction appends a `Compact` record, syncs it, then deletes the
//! oldest segments whose every entry is at or below the compaction point.
//! The first segment left may then begin with entries whose predecessors
//! are gone; the synced `Compact` record later in the log covers them,
//! and replay refuses a log where nothing does.
//!
//! Invariants: segment numbers are contiguous; records are written in
//! order, and a segment is synced before the next one gets its first
//! record, so what survives a crash is a prefix of what was written.

pub mod files;
pub mod record;

/// Most bytes the writer leaves written but not synced; a larger write is
/// synced every this many bytes. A crash can tear only what was not
/// synced, so replay cuts a bad record as a torn write only when it lies
/// within this many bytes of the segment's end, and refuses the log as
/// damaged otherwise (cutting there would drop synced, acknowledged
/// entries). A Ready's entries are synced before they are acknowledged
/// and are rarely near this size, so the extra syncs cost nothing in
/// practice. Damage within the last 4 MiB cannot be told from a torn
/// write and is cut, as etcd's WAL repair cuts it; the corruption checks
/// between members catch what that loses.
pub const UNSYNCED_BYTES_MAX: usize = 4 << 20;

use std::thread::JoinHandle;

use protobuf::Message as PbMessage;
use raft::eraftpb::{Entry, HardState};

use crate::error::{Result, StoreError};
use files::{LogDir, SegFile};
use record::{Decoded, Kind, FRAME_BYTES, HEADER_BYTES};

/// Bytes per real segment (each is zero-filled before use, off the raft
/// thread). The simulation uses much smaller ones so that its runs roll
/// and drop segments often.
pub const SEGMENT_BYTES_REAL: u64 = 32 << 20;
pub const SEGMENT_BYTES_SIM: u64 = 16 << 10;

/// Where an entry's payload is: segment, offset of the payload, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub seq: u64,
    pub offset: u32,
    pub len: u32,
}

/// What replaying the segments found.
#[derive(Default)]
pub struct Replayed {
    pub hard_state: HardState,
    pub snap_index: u64,
    pub snap_term: u64,
    /// (term, where) of every entry after `snap_index`, in order.
    pub entries: Vec<(u64, Loc)>,
}

struct Segment {
    seq: u64,
    file: SegFile,
    /// Bytes written to the file (header included).
    end: u64,
    /// Bytes of its head (header and state records): a segment holding no
    /// more than that takes any record, however big.
    start: u64,
    /// The highest entry index ever written to it (0: none).
    max_index: u64,
}

pub struct SegmentLog {
    dir: LogDir,
    segment_bytes: u64,
    /// Oldest first; the last one takes appends.
    segments: Vec<Segment>,
    /// Records not yet written to the last segment.
    buf: Vec<u8>,
    /// What a new segment's header repeats.
    hard_state: HardState,
    snap: (u64, u64),
    /// The next segment, being zero-filled by a helper thread (real only).
    spare: Option<(u64, JoinHandle<Result<()>>)>,
    /// Bytes written to the active segment since its last sync; never
    /// more than `UNSYNCED_BYTES_MAX`.
    unsynced_bytes: usize,
}

fn name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

fn parse_name(n: &str) -> Option<u64> {
    let hex = n.strip_suffix(".seg")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok())?
}

fn corrupt(msg: String) -> StoreError {
    StoreError::Storage(format!("raft log: {msg}"))
}

/// Replay's running state.
#[derive(Default)]
struct Replay {
    out: Replayed,
    /// The first segment began with entries after a gap (its predecessors
    /// were deleted by a compaction): the compaction's record must follow.
    gap_until: Option<u64>,
    seen_entry: bool,
}

impl Replay {
    fn last(&self) -> u64 {
        self.out.snap_index + self.out.entries.len() as u64
    }

    fn entry(&mut self, e: &Entry, loc: Loc, first_segment: bool) -> Result<()> {
        let first_of_log = first_segment && !self.seen_entry;
        self.seen_entry = true;
        if e.index <= self.out.snap_index {
            return Ok(()); // compacted since
        }
        if e.index > self.last() + 1 {
            if !first_of_log {
                return Err(corrupt(format!(
                    "entry {} follows entry {} (entries missing)",
                    e.index,
                    self.last()
                )));
            }
            self.gap_until = Some(e.index - 1);
            self.out.snap_index = e.index - 1;
            self.out.snap_term = 0;
        }
        let keep = (e.index - self.out.snap_index - 1) as usize;
        self.out.entries.truncate(keep);
        self.out.entries.push((e.term, loc));
        Ok(())
    }

    fn compact(&mut self, index: u64, term: u64) {
        if self.gap_until.is_some_and(|g| index >= g) {
            self.gap_until = None;
        } else if index <= self.out.snap_index {
            return;
        }
        let drop = (index.saturating_sub(self.out.snap_index) as usize).min(self.out.entries.len());
        self.out.entries.drain(..drop);
        self.out.snap_index = index;
        self.out.snap_term = term;
    }

    fn reset(&mut self, index: u64, term: u64) {
        self.gap_until = None;
        self.out.entries.clear();
        self.out.snap_index = index;
        self.out.snap_term = term;
    }
}

impl SegmentLog {
    /// Opens the log in `dir` (creating an empty one), replaying it.
    pub fn open(dir: LogDir, segment_bytes: u64) -> Result<(SegmentLog, Replayed)> {
        let mut seqs = Vec::new();
        for n in dir.list()? {
            match parse_name(&n) {
                Some(seq) => seqs.push(seq),
                None => {
                    tracing::warn!(file = %n, "ignoring a stray file in the raft log directory")
                }
            }
        }
        seqs.sort_unstable();
        for w in seqs.windows(2) {
            if w[1] != w[0] + 1 {
                return Err(corrupt(format!(
                    "segment {} follows segment {} (segments missing)",
                    name(w[1]),
                    name(w[0])
                )));
            }
        }
        let mut log = SegmentLog {
            dir,
            segment_bytes,
            segments: Vec::new(),
            buf: Vec::new(),
            hard_state: HardState::default(),
            snap: (0, 0),
            spare: None,
            unsynced_bytes: 0,
        };
        let mut replay = Replay::default();
        for (i, seq) in seqs.iter().enumerate() {
            let last = i + 1 == seqs.len();
            let seg = log.replay_segment(*seq, i == 0, last, &mut replay)?;
            log.segments.push(seg);
        }
        if let Some(g) = replay.gap_until {
            return Err(corrupt(format!(
                "the oldest segment starts after entry {g}, and no compaction record covers the entries before it"
            )));
        }
        log.hard_state = replay.out.hard_state.clone();
        log.snap = (replay.out.snap_index, replay.out.snap_term);
        if log.segments.is_empty() {
            log.start_segment(1)?;
        }
        Ok((log, replay.out))
    }

    /// Reads one segment whole and replays its records.
    fn replay_segment(
        &mut self,
        seq: u64,
        first: bool,
        last: bool,
        replay: &mut Replay,
    ) -> Result<Segment> {
        let n = name(seq);
        let file = self.dir.open(&n)?;
        let bytes = file.read_all()?;
        record::check_header(&bytes, seq, &n)?;
        let mut off = HEADER_BYTES;
        let mut max_index = 0;
        loop {
            match record::decode(&bytes[off..]) {
                Decoded::End => {
                    self.end_of_records(
                        &n,
                        &file,
                        &bytes,
                        off,
                        last,
                        "zeros where a record should be",
                    )?;
                    break;
                }
                Decoded::Bad(why) => {
                    self.end_of_records(&n, &file, &bytes, off, last, &why)?;
                    break;
                }
                Decoded::Record(kind, payload, used) => {
                    let payload_at = off + FRAME_BYTES + 1;
                    apply_record(replay, kind, payload, seq, payload_at, first, &n)?;
                    if kind == Kind::Entry {
                        max_index = max_index.max(replay.last());
                    }
                    off += used;
                }
            }
        }
        Ok(Segment {
            seq,
            file,
            end: off as u64,
            start: HEADER_BYTES as u64,
            max_index,
        })
    }

    /// Where a segment's records stop at `off` (zeros, or a record that
    /// does not check out): the end of the log if nothing was written
    /// after it; a torn write, cut off, if that is in the last segment and
    /// within the `UNSYNCED_BYTES_MAX` a crash can tear; otherwise damage
    /// to synced records, refused with where it is.
    fn end_of_records(
        &self,
        n: &str,
        file: &SegFile,
        bytes: &[u8],
        off: usize,
        last: bool,
        why: &str,
    ) -> Result<()> {
        let reach = torn_reach(bytes, off);
        if reach == 0 {
            return Ok(());
        }
        if last && reach <= UNSYNCED_BYTES_MAX {
            tracing::warn!(segment = %n, offset = off, %why, "cutting off a torn write at the end of the raft log");
            return self.zero_tail(file, bytes, off);
        }
        let place = if last {
            format!(
                "{reach} bytes before its last written byte, where a crash cannot tear a write \
                 (at most the last {UNSYNCED_BYTES_MAX} bytes are unsynced)"
            )
        } else {
            "(only the last segment may end in a torn write)".to_string()
        };
        Err(corrupt(format!(
            "segment {n} is damaged at offset {off}: {why}, {place}; these records were synced, so this member's log is damaged"
        )))
    }

    /// Zeros the bytes of a torn tail, so that later appends are not
    /// followed by leftovers that could be taken for records.
    fn zero_tail(&self, file: &SegFile, bytes: &[u8], from: usize) -> Result<()> {
        let to = last_nonzero(bytes).map_or(from, |p| p + 1);
        if to > from {
            file.write_at(from as u64, &vec![0u8; to - from])?;
            file.sync()?;
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has a segment")
    }

    /// The head of a new segment: its header and the log's state now.
    fn head(&self, seq: u64) -> Vec<u8> {
        let mut head = record::header(seq).to_vec();
        let hs = self.hard_state.write_to_bytes().expect("encode hard state");
        record::encode(&mut head, Kind::HardState, &hs);
        record::encode(
            &mut head,
            Kind::Compact,
            &record::index_term(self.snap.0, self.snap.1),
        );
        head
    }

    fn start_segment(&mut self, seq: u64) -> Result<()> {
        let n = name(seq);
        let head = self.head(seq);
        let prepared = match self.spare.take() {
            Some((s, handle)) if s == seq => match handle.join() {
                Ok(Ok(())) => true,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(corrupt("the segment preparing thread panicked".into())),
            },
            Some((_, handle)) => {
                let _ = handle.join();
                false
            }
            None => false,
        };
        let file = self.dir.create(&n, &head, self.segment_bytes, prepared)?;
        self.segments.push(Segment {
            seq,
            file,
            end: head.len() as u64,
            start: head.len() as u64,
            max_index: 0,
        });
        if self.dir.is_real() {
            let next = seq + 1;
            let (dir, size) = (self.dir.clone(), self.segment_bytes);
            let handle = std::thread::Builder::new()
                .name("raftlog-prepare".into())
                .spawn(move || dir.prepare(&name(next), size))
                .map_err(|e| corrupt(format!("cannot start the segment preparing thread: {e}")))?;
            self.spare = Some((next, handle));
        }
        Ok(())
    }

    /// Makes room for a record of `len` bytes, moving to a new segment
    /// when the active one is full (a record bigger than a whole segment
    /// gets a segment of its own, which grows past its prepared size).
    fn reserve(&mut self, len: usize) -> Result<()> {
        let a = self.active();
        let used = a.end + self.buf.len() as u64;
        if used + len as u64 <= self.segment_bytes || used <= a.start {
            return Ok(());
        }
        self.write(true)?;
        let next = self.active().seq + 1;
        self.start_segment(next)
    }

    /// Stages entries; returns where each will be.
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<Vec<Loc>> {
        let mut locs = Vec::with_capacity(entries.len());
        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|err| corrupt(format!("cannot encode entry {}: {err}", e.index)))?;
            self.reserve(FRAME_BYTES + 1 + bytes.len())?;
            let a = self.active();
            let offset = a.end as usize + self.buf.len() + FRAME_BYTES + 1;
            let seq = a.seq;
            record::encode(&mut self.buf, Kind::Entry, &bytes);
            let a = self
                .segments
                .last_mut()
                .expect("a log always has a segment");
            a.max_index = a.max_index.max(e.index);
            locs.push(Loc {
                seq,
                offset: u32::try_from(offset)
                    .map_err(|_| corrupt("segment offset beyond 4 GiB".into()))?,
                len: bytes.len() as u32,
            });
        }
        Ok(locs)
    }

    pub fn append_hard_state(&mut self, hs: &HardState) -> Result<()> {
        let bytes = hs.write_to_bytes().expect("encode hard state");
        self.reserve(FRAME_BYTES + 1 + bytes.len())?;
        record::encode(&mut self.buf, Kind::HardState, &bytes);
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Stages a reset: every entry dropped, the log continues after
    /// `index` (a snapshot was installed).
    pub fn append_reset(&mut self, index: u64, term: u64) -> Result<()> {
        self.reserve(FRAME_BYTES + 17)?;
        record::encode(&mut self.buf, Kind::Reset, &record::index_term(index, term));
        self.snap = (index, term);
        Ok(())
    }

    /// Drops entries up to `index` (whose state must already be durable
    /// elsewhere): the record is synced, then the oldest segments holding
    /// nothing newer are deleted.
    pub fn compact(&mut self, index: u64, term: u64) -> Result<()> {
        self.reserve(FRAME_BYTES + 17)?;
        record::encode(
            &mut self.buf,
            Kind::Compact,
            &record::index_term(index, term),
        );
        self.snap = (index, term);
        self.write(true)?;
        while self.segments.len() > 1 && self.segments[0].max_index <= index {
            let seg = self.segments.remove(0);
            self.dir.remove(&name(seg.seq))?;
        }
        Ok(())
    }

    /// Writes the staged records; with `sync`, makes them durable. Syncs
    /// on the way whenever more than `UNSYNCED_BYTES_MAX` bytes would be
    /// written and not synced, which is what lets replay tell a torn write
    /// from damage.
    pub fn write(&mut self, sync: bool) -> Result<()> {
        let a = self
            .segments
            .last_mut()
            .expect("a log always has a segment");
        let mut from = 0;
        while from < self.buf.len() {
            if self.unsynced_bytes == UNSYNCED_BYTES_MAX {
                a.file.sync()?;
                self.unsynced_bytes = 0;
            }
            let n = (UNSYNCED_BYTES_MAX - self.unsynced_bytes).min(self.buf.len() - from);
            a.file.write_at(a.end, &self.buf[from..from + n])?;
            a.end += n as u64;
            from += n;
            self.unsynced_bytes += n;
        }
        self.buf.clear();
        if sync {
            a.file.sync()?;
            self.unsynced_bytes = 0;
        }
        assert!(self.unsynced_bytes <= UNSYNCED_BYTES_MAX);
        Ok(())
    }

    /// Reads back one entry, checking its frame and CRC again.
    pub fn read(&self, loc: Loc) -> Result<Entry> {
        let frame_at = loc.offset as usize - FRAME_BYTES - 1;
        let rec_len = FRAME_BYTES + 1 + loc.len as usize;
        let a = self.active();
        let bytes = if loc.seq == a.seq && frame_at as u64 >= a.end {
            let from = frame_at - a.end as usize;
            self.buf
                .get(from..from + rec_len)
                .ok_or_else(|| corrupt(format!("entry at {loc:?} is not staged")))?
                .to_vec()
        } else {
            let seg = self
                .segments
                .iter()
                .find(|s| s.seq == loc.seq)
                .ok_or_else(|| {
                    corrupt(format!(
                        "segment {} of entry {loc:?} is gone",
                        name(loc.seq)
                    ))
                })?;
            seg.file.read_at(frame_at as u64, rec_len)?
        };
        match record::decode(&bytes) {
            Decoded::Record(Kind::Entry, payload, _) => Entry::parse_from_bytes(payload)
                .map_err(|e| corrupt(format!("entry at {loc:?} does not decode: {e}"))),
            other => Err(corrupt(format!("entry at {loc:?} reads back as {other:?}"))),
        }
    }

    /// Segment files in use.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// How far back from the segment's last written (non-zero) byte a bad
/// record at `off` lies: a torn write reaches back at most
/// `UNSYNCED_BYTES_MAX` (segments are zero-filled before use).
fn torn_reach(bytes: &[u8], off: usize) -> usize {
    let end = last_nonzero(bytes).map_or(off, |p| p + 1);
    end.saturating_sub(off)
}

/// The position of the last byte that is not zero. A segment is mostly
/// zeros past its records; OR-ing blocks (which vectorises) finds the
/// block first, instead of testing 32 MiB one byte at a time.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK_BYTES: usize = 4096;
    let mut end = bytes.len();
    for block in bytes.rchunks(BLOCK_BYTES) {
        let start = end - block.len();
        if block.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return block.iter().rposition(|b| *b != 0).map(|p| start + p);
        }
        end = start;
    }
    None
}

fn apply_record(
    replay: &mut Replay,
    kind: Kind,
    payload: &[u8],
    seq: u64,
    payload_at: usize,
    first_segment: bool,
    seg_name: &str,
) -> Result<()> {
    let bad = |what: &str| {
        corrupt(format!(
            "segment {seg_name}: a {what} record does not decode"
        ))
    };
    match kind {
        Kind::Entry => {
            let e = Entry::parse_from_bytes(payload).map_err(|_| bad("entry"))?;
            let loc = Loc {
                seq,
                offset: payload_at as u32,
                len: payload.len() as u32,
            };
            replay.entry(&e, loc, first_segment)?;
        }
        Kind::HardState => {
            replay.out.hard_state =
                HardState::parse_from_bytes(payload).map_err(|_| bad("hard state"))?;
        }
        Kind::Compact => {
            let (i, t) = record::parse_index_term(payload).ok_or_else(|| bad("compaction"))?;
            replay.compact(i, t);
        }
        Kind::Reset => {
            let (i, t) = record::parse_index_term(payload).ok_or_else(|| bad("reset"))?;
            replay.reset(i, t);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::MemDisk;

    fn entry(index: u64, term: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![(index % 251) as u8; bytes].into(),
            ..Default::default()
        }
    }

    /// The block-wise search finds the same byte as a plain one, at block
    /// edges, at the ends, and in all-zero buffers.
    #[test]
    fn the_last_nonzero_byte_is_found_at_every_place() {
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096 + 17] {
            let zeros = vec![0u8; len];
            assert_eq!(last_nonzero(&zeros), None, "len {len}");
            for at in [0, 1, 4095, 4096, 4097, 2 * 4096, len.saturating_sub(1)] {
                if at >= len {
                    continue;
                }
                let mut b = zeros.clone();
                b[at] = 0x80;
                if at > 0 {
                    b[0] = 1;
                }
                let plain = b.iter().rposition(|x| *x != 0);
                assert_eq!(last_nonzero(&b), plain, "len {len} at {at}");
            }
        }
    }

    /// Every entry the replay lists reads back as the one written.
    fn check(log: &SegmentLog, r: &Replayed, written: &[Entry]) {
        for (i, (term, loc)) in r.entries.iter().enumerate() {
            let e = log.read(*loc).unwrap();
            let want = &written[(r.snap_index as usize) + 1 + i];
            assert_eq!((&e, *term), (want, want.term));
        }
    }

    #[test]
    fn segments_roll_compact_and_replay() {
        let disk = MemDisk::new();
        let dir = LogDir::Mem(disk.clone());
        let (mut log, r) = SegmentLog::open(dir.clone(), 4096).unwrap();
        assert!(r.entries.is_empty());
        let mut written = vec![entry(0, 0, 0)];
        for i in 1..=300u64 {
            let e = entry(i, 1 + i / 100, 50 + (i as usize * 7) % 200);
            log.append_entries(std::slice::from_ref(&e)).unwrap();
            written.push(e);
            if i % 10 == 0 {
                let hs = HardState {
                    term: 1 + i / 100,
                    vote: 1,
                    commit: i - 5,
                    ..Default::default()
                };
                log.append_hard_state(&hs).unwrap();
                log.write(true).unwrap();
            }
        }
        let rolled = log.segment_count();
        assert!(rolled > 10, "only {rolled} segments");
        log.compact(250, written[250].term).unwrap();
        assert!(
            log.segment_count() < rolled / 3,
            "{} left",
            log.segment_count()
        );
        drop(log);
        let (log, r) = SegmentLog::open(dir, 4096).unwrap();
        assert_eq!((r.snap_index, r.snap_term), (250, 3));
        assert_eq!(r.entries.len(), 50);
        assert_eq!(r.hard_state.commit, 295);
        check(&log, &r, &written);
    }

    #[test]
    fn a_torn_tail_is_cut_and_synced_entries_survive() {
        for cut_seed in 0..60usize {
            let disk = MemDisk::new();
            let dir = LogDir::Mem(disk.clone());
            let (mut log, _) = SegmentLog::open(dir.clone(), 2048).unwrap();
            let mut written = vec![entry(0, 0, 0)];
            for i in 1..=40u64 {
                let e = entry(i, 1, 30 + (i as usize % 9) * 10);
                log.append_entries(std::slice::from_ref(&e)).unwrap();
                written.push(e);
                log.write(i <= 25).unwrap();
            }
            // Power cut: each file keeps a different prefix of its
            // unsynced bytes, often mid-record.
            disk.crash(0, &mut |extra| (cut_seed * 37) % (extra + 1));
            let (mut log, r) = SegmentLog::open(dir.clone(), 2048).unwrap();
            assert!(r.entries.len() >= 25, "cut {cut_seed}: synced entries lost");
            check(&log, &r, &written);
            // The log goes on after the cut, and replays again.
            let next = r.entries.len() as u64 + 1;
            let e = entry(next, 2, 40);
            log.append_entries(std::slice::from_ref(&e)).unwrap();
            log.write(true).unwrap();
            written.truncate(next as usize);
            written.push(e);
            let (log, r) = SegmentLog::open(dir, 2048).unwrap();
            assert_eq!(r.entries.len() as u64, next);
            check(&log, &r, &written);
        }
    }

    /// A log of 60 synced entries over several 1 KiB segments.
    fn sixty_entries_in_small_segments() -> (std::sync::Arc<MemDisk>, LogDir) {
        let disk = MemDisk::new();
        let dir = LogDir::Mem(disk.clone());
        let (mut log, _) = SegmentLog::open(dir.clone(), 1024).unwrap();
        for i in 1..=60u64 {
            log.append_entries(&[entry(i, 1, 100)]).unwrap();
            log.write(true).unwrap();
        }
        assert!(log.segment_count() > 3);
        (disk, dir)
    }

    #[test]
    fn damage_before_the_last_segment_is_refused() {
        let (disk, dir) = sixty_entries_in_small_segments();
        let first = name(1);
        disk.file_write(&first, 200, &[0xAB; 3]).unwrap();
        let err = SegmentLog::open(dir.clone(), 1024).err().expect("refused");
        assert!(err.to_string().contains("is damaged at offset"), "{err}");
        // A missing middle segment is refused too.
        disk.file_write(&first, 200, &[0; 3]).unwrap();
        disk.file_remove(&name(2));
        let err = SegmentLog::open(dir, 1024).err().expect("refused");
        assert!(err.to_string().contains("segments missing"), "{err}");
    }

    /// 5 MiB of synced entries in one 64 MiB segment: more than a crash
    /// can tear.
    fn five_mib_synced_in_one_segment() -> (std::sync::Arc<MemDisk>, LogDir) {
        let disk = MemDisk::new();
        let dir = LogDir::Mem(disk.clone());
        let (mut log, _) = SegmentLog::open(dir.clone(), 64 << 20).unwrap();
        for i in 1..=1300u64 {
            log.append_entries(&[entry(i, 1, 4000)]).unwrap();
            log.write(true).unwrap();
        }
        assert_eq!(log.segment_count(), 1);
        (disk, dir)
    }

    #[test]
    fn damage_to_synced_records_of_the_last_segment_is_refused() {
        // A flipped byte early in the last segment used to be taken for a
        // torn write and everything after it cut: synced, acknowledged
        // entries lost without a word.
        let (disk, dir) = five_mib_synced_in_one_segment();
        disk.file_write(&name(1), 1000, &[0xAB; 3]).unwrap();
        let err = SegmentLog::open(dir.clone(), 64 << 20)
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("is damaged at offset") && msg.contains("cannot tear"),
            "{msg}"
        );
        // A lost sector reads as zeros, which used to end the log there.
        let (disk, dir) = five_mib_synced_in_one_segment();
        let (_, r) = SegmentLog::open(dir.clone(), 64 << 20).unwrap();
        let (_, loc) = r.entries[100];
        let record_at = u64::from(loc.offset) - (FRAME_BYTES as u64 + 1);
        let record_bytes = FRAME_BYTES + 1 + loc.len as usize;
        disk.file_write(&name(1), record_at, &vec![0; record_bytes])
            .unwrap();
        let err = SegmentLog::open(dir, 64 << 20).err().expect("refused");
        assert!(
            err.to_string().contains("zeros where a record should be"),
            "{err}"
        );
    }

    #[test]
    fn damage_near_the_end_is_cut_as_a_torn_write() {
        // Within the last UNSYNCED_BYTES_MAX bytes damage cannot be told
        // from a torn write: the log is cut there, and opens.
        let (disk, dir) = five_mib_synced_in_one_segment();
        let (_, before) = SegmentLog::open(dir.clone(), 64 << 20).unwrap();
        let (_, last) = *before.entries.last().unwrap();
        disk.file_write(&name(1), u64::from(last.offset) + 10, &[0xAB; 3])
            .unwrap();
        let (_, after) = SegmentLog::open(dir, 64 << 20).unwrap();
        assert_eq!(after.entries.len(), before.entries.len() - 1);
    }

    #[test]
    fn a_long_unsynced_write_is_synced_on_the_way() {
        let disk = MemDisk::new();
        let dir = LogDir::Mem(disk.clone());
        let (mut log, _) = SegmentLog::open(dir.clone(), 64 << 20).unwrap();
        let entries: Vec<Entry> = (1..=2600u64).map(|i| entry(i, 1, 4000)).collect();
        log.append_entries(&entries).unwrap();
        log.write(false).unwrap();
        // Power cut keeping none of the unsynced bytes: what the writer
        // synced on the way (every UNSYNCED_BYTES_MAX) survives, and the
        // log opens, its torn tail within reach.
        disk.crash(0, &mut |_| 0);
        let (_, r) = SegmentLog::open(dir, 64 << 20).unwrap();
        // Two syncs on the way: at least 8 MiB of ~4 KiB records kept.
        assert!(
            r.entries.len() >= 2 * UNSYNCED_BYTES_MAX / 4100 - 1,
            "{} entries kept",
            r.entries.len()
        );
        assert!(r.entries.len() < 2600);
    }

    #[test]
    fn deleted_segments_without_a_compaction_are_refused() {
        let (disk, dir) = sixty_entries_in_small_segments();
        disk.file_remove(&name(1));
        let err = SegmentLog::open(dir, 1024).err().expect("refused");
        assert!(
            err.to_string().contains("no compaction record covers"),
            "{err}"
        );
    }

    #[test]
    fn real_segments_are_prepared_ahead_and_replay() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LogDir::Real(tmp.path().join("raftlog"));
        let (mut log, _) = SegmentLog::open(dir.clone(), 64 << 10).unwrap();
        let mut written = vec![entry(0, 0, 0)];
        for i in 1..=400u64 {
            let e = entry(i, 1, 700);
            log.append_entries(std::slice::from_ref(&e)).unwrap();
            written.push(e);
            log.write(i % 7 == 0).unwrap();
        }
        log.write(true).unwrap();
        assert!(log.segment_count() >= 4);
        drop(log);
        let (log, r) = SegmentLog::open(dir, 64 << 10).unwrap();
        assert_eq!(r.entries.len(), 400);
        check(&log, &r, &written);
        // Every segment file is whole-size: appends never grew one.
        for f in std::fs::read_dir(tmp.path().join("raftlog"))
            .unwrap()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".seg") {
                assert_eq!(f.metadata().unwrap().len(), 64 << 10, "{name}");
            }
        }
    }
}
