//! A snapshot's index records, sorted by key then revision on a thread of
//! their own while the install goes on reading the file (`Runs`), and
//! merged back into one ordered stream for the index (`merged`). An
//! install reads records in revision order and the index is built in key
//! order: sorting 800k records after the install took half a second of
//! the raft thread, which a new member's catch-up waited on.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use super::index::{by_key_rev, Restored};
use crate::error::{Result, StoreError};

/// Records per run: sorted in one piece, merged with the others at the
/// end (a million records make 16 runs).
const RUN_RECORDS: usize = 1 << 16;
/// Runs waiting for the sorter: how far the install may get ahead of it.
const RUNS_QUEUED_MAX: usize = 4;

type Sorter = (SyncSender<Vec<Restored>>, JoinHandle<Vec<Vec<Restored>>>);

/// Records gathered into runs, each sorted by the sorter thread (or here,
/// when no thread could be had).
pub(super) struct Runs {
    chunk: Vec<Restored>,
    sorter: Option<Sorter>,
    here: Vec<Vec<Restored>>,
}

impl Runs {
    pub(super) fn new() -> Runs {
        let (tx, rx) = sync_channel::<Vec<Restored>>(RUNS_QUEUED_MAX);
        let sorter = std::thread::Builder::new()
            .name("index-sort".into())
            .spawn(move || {
                let mut runs = Vec::new();
                for mut run in rx {
                    run.sort_unstable_by(by_key_rev);
                    runs.push(run);
                }
                runs
            })
            .ok()
            .map(|handle| (tx, handle));
        Runs {
            chunk: Vec::with_capacity(RUN_RECORDS),
            sorter,
            here: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, r: Restored) {
        self.chunk.push(r);
        if self.chunk.len() >= RUN_RECORDS {
            let run = std::mem::replace(&mut self.chunk, Vec::with_capacity(RUN_RECORDS));
            let unsent = match &self.sorter {
                Some((tx, _)) => tx.send(run).err().map(|e| e.0),
                None => Some(run),
            };
            if let Some(run) = unsent {
                self.sort_here(run);
            }
        }
    }

    fn sort_here(&mut self, mut run: Vec<Restored>) {
        run.sort_unstable_by(by_key_rev);
        self.here.push(run);
    }

    /// Every run, each sorted. The last, partial one is sorted here while
    /// the thread finishes the others.
    pub(super) fn finish(mut self) -> Result<Vec<Vec<Restored>>> {
        let last = std::mem::take(&mut self.chunk);
        if !last.is_empty() {
            self.sort_here(last);
        }
        let mut runs = std::mem::take(&mut self.here);
        if let Some((tx, handle)) = self.sorter.take() {
            drop(tx);
            let sorted = handle
                .join()
                .map_err(|_| StoreError::Storage("the index sorter thread failed".into()))?;
            runs.extend(sorted);
        }
        Ok(runs)
    }
}

/// The records of `runs` (each sorted by `by_key_rev`) in that order. One
/// run (a restart's) is read as it is, with no heap between.
pub(super) fn merged(mut runs: Vec<Vec<Restored>>) -> Box<dyn Iterator<Item = Restored>> {
    if runs.len() == 1 {
        return Box::new(runs.pop().unwrap_or_default().into_iter());
    }
    let mut runs: Vec<_> = runs.into_iter().map(Vec::into_iter).collect();
    let mut heads = BinaryHeap::with_capacity(runs.len());
    for (run, records) in runs.iter_mut().enumerate() {
        if let Some(r) = records.next() {
            heads.push(Head { r, run });
        }
    }
    Box::new(Merge { runs, heads })
}

/// A run's next record; the heap's greatest is the least record.
struct Head {
    r: Restored,
    run: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Head) -> Ordering {
        by_key_rev(&other.r, &self.r)
    }
}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Head) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}

struct Merge {
    runs: Vec<std::vec::IntoIter<Restored>>,
    heads: BinaryHeap<Head>,
}

impl Iterator for Merge {
    type Item = Restored;
    fn next(&mut self) -> Option<Restored> {
        let Head { r, run } = self.heads.pop()?;
        if let Some(next) = self.runs[run].next() {
            self.heads.push(Head { r: next, run });
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::Rev;

    fn rec(key: u32, main: i64) -> Restored {
        Restored {
            key: key.to_be_bytes().to_vec(),
            rev: Rev { main, sub: 0 },
            tombstone: false,
            created: main,
            version: 1,
            lease: 0,
        }
    }

    /// Runs sorted on the thread and here, merged, give every record once,
    /// in key then revision order, as one sort of them all does.
    #[test]
    fn runs_sorted_apart_merge_into_the_order_of_one_sort() {
        for n in [0, 1, RUN_RECORDS - 1, RUN_RECORDS, 3 * RUN_RECORDS + 17] {
            let mut runs = Runs::new();
            let mut all = Vec::new();
            let mut x = 12345u64;
            for main in 1..=n as i64 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = (x >> 40) as u32 % 5_000;
                runs.push(rec(key, main));
                all.push((key, main));
            }
            all.sort();
            let got: Vec<(u32, i64)> = merged(runs.finish().unwrap())
                .map(|r| {
                    (
                        u32::from_be_bytes(r.key[..].try_into().unwrap()),
                        r.rev.main,
                    )
                })
                .collect();
            assert_eq!(got, all, "{n} records");
        }
    }
}
