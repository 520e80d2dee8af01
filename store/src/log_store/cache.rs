//! The newest entries of the log, kept whole in memory: raft reads back
//! every entry it commits and every entry it sends a follower that keeps
//! up, and serving those from here saves a read, a CRC check and a decode
//! per entry.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// Bytes of entry payload the cache keeps (oldest dropped first): what
/// followers that keep up and the entries not yet applied need (seconds
/// of writes at full speed). A follower further behind is served from the
/// segment files, which the kernel caches: memory here is resident in
/// every member, and is what `bench compare`'s RSS row counts.
pub(super) const ENTRY_CACHE_BYTES_MAX: usize = 8 << 20;
/// Entries the cache keeps, whatever their size.
pub(super) const ENTRY_CACHE_ENTRIES_MAX: usize = 32 * 1024;

/// The newest entries of the log, contiguous and ending at the log's last
/// entry (or empty). Entries share their payload (`Bytes`) with raft's own
/// copies, so caching costs one `Entry` header each.
#[derive(Default)]
pub(super) struct EntryCache {
    entries: VecDeque<Entry>,
    payload_bytes: usize,
}

impl EntryCache {
    pub(super) fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    /// Appends `new` (contiguous) after dropping every cached entry at or
    /// beyond its first index, then trims the oldest to the bounds.
    pub(super) fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        match self.first_index() {
            Some(start) if first.index >= start => {
                let keep = (first.index - start) as usize;
                while self.entries.len() > keep {
                    let e = self.entries.pop_back().expect("len > keep");
                    self.payload_bytes -= payload_bytes(&e);
                }
            }
            _ => self.clear(),
        }
        if let Some(last) = self.entries.back() {
            assert_eq!(last.index + 1, first.index, "entry cache stays contiguous");
        }
        for e in new {
            self.payload_bytes += payload_bytes(e);
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > 1
            && (self.payload_bytes > ENTRY_CACHE_BYTES_MAX
                || self.entries.len() > ENTRY_CACHE_ENTRIES_MAX)
        {
            self.drop_front();
        }
    }

    /// Drops entries up to and including `to`.
    pub(super) fn compact(&mut self, to: u64) {
        while self.first_index().is_some_and(|i| i <= to) {
            self.drop_front();
        }
    }

    fn drop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.payload_bytes -= payload_bytes(&e);
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.payload_bytes = 0;
    }

    /// Entries `low..high` if the cache holds `low` (the caller checked
    /// that `high - 1` is in the log, which ends where the cache ends).
    pub(super) fn get(&self, low: u64, high: u64, max_bytes: u64) -> Option<Vec<Entry>> {
        let start = self.first_index()?;
        if low < start {
            return None;
        }
        let from = (low - start) as usize;
        let to = ((high - start) as usize).min(self.entries.len());
        let mut out = Vec::with_capacity((to.saturating_sub(from)).min(1024));
        let mut size = 0u64;
        for e in self.entries.range(from.min(to)..to) {
            size += payload_bytes(e) as u64;
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Some(out)
    }
}

/// An entry's size for raft's per-message limit: its payload plus the
/// fixed fields (a close bound on its encoded size, without encoding it).
pub(super) fn payload_bytes(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 24
}
