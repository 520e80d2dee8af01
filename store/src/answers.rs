//! The bytes of read answers a member holds at once. A Range renders every
//! record it returns into memory, and over the gRPC port the answer stays
//! charged until its last byte is handed to the connection; a thousand
//! callers asking for the whole keyspace at once would otherwise hold a
//! thousand copies of it. Each answer charges its records as it renders
//! them (not after), and past the member's budget the read fails at once,
//! with RESOURCE_EXHAUSTED, rather than wait: a reader waiting here would
//! hold the key index's read lock, and apply with it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Result, StoreError};

/// `--max-response-bytes-in-flight`'s default: a whole 2 GiB keyspace
/// (the default quota) fits one answer.
pub const IN_FLIGHT_BYTES_DEFAULT: usize = 2 << 30;

/// What one record costs besides its key and value: the `KeyValue`
/// struct and its share of the vector (rounded up).
pub const RECORD_OVERHEAD_BYTES: usize = 96;

/// `--max-write-answer-bytes`'s default: the most a write's answer (a
/// txn's ranges, a delete's `prev_kv`) may render. Every member renders
/// it inside apply, so it is bounded per request, alike everywhere, not by
/// one member's budget.
pub const WRITE_ANSWER_BYTES_DEFAULT: usize = 256 << 20;

/// What an answer's records are charged to as they are rendered.
pub trait Meter {
    /// Adds `bytes`; refused (nothing added) past the meter's limit.
    fn add(&self, bytes: usize) -> Result<()>;
}

/// `--max-answer-stall`'s default: how long an answer may go with its
/// client taking none of it before it is given up (its bytes freed, its
/// charge given back, the stream reset). A slow client taking a piece now
/// and then keeps its answer; one that stopped reading cannot hold it.
pub const STALL_MS_DEFAULT: u64 = 30_000;

/// The member's budget: bytes charged by answers not yet sent.
#[derive(Debug)]
pub struct AnswerBudget {
    in_flight_bytes: AtomicUsize,
    in_flight_bytes_max: AtomicUsize,
    stall_ms: AtomicU64,
}

impl Default for AnswerBudget {
    fn default() -> Self {
        AnswerBudget {
            in_flight_bytes: AtomicUsize::new(0),
            in_flight_bytes_max: AtomicUsize::new(IN_FLIGHT_BYTES_DEFAULT),
            stall_ms: AtomicU64::new(STALL_MS_DEFAULT),
        }
    }
}

impl AnswerBudget {
    pub fn set_stall_ms(&self, ms: u64) {
        self.stall_ms.store(ms, Ordering::Relaxed);
    }

    /// How long an answer may sit with none of it taken (`STALL_MS_DEFAULT`).
    pub fn stall_ms(&self) -> u64 {
        self.stall_ms.load(Ordering::Relaxed)
    }

    pub fn set_max(&self, bytes: usize) {
        self.in_flight_bytes_max.store(bytes, Ordering::Relaxed);
    }

    pub fn max(&self) -> usize {
        self.in_flight_bytes_max.load(Ordering::Relaxed)
    }

    /// Bytes charged now, by every answer alive.
    pub fn in_flight(&self) -> usize {
        self.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// A new answer's charge, empty.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: AtomicUsize::new(0),
        }
    }
}

/// One answer's bytes, given back to the budget when dropped. Shared by
/// reference while an answer renders (a txn's ranges add to one charge).
#[derive(Debug)]
pub struct Charge {
    budget: Arc<AnswerBudget>,
    bytes: AtomicUsize,
}

impl Meter for Charge {
    fn add(&self, bytes: usize) -> Result<()> {
        Charge::add(self, bytes)
    }
}

impl Charge {
    /// Adds `bytes` to this answer; refused (nothing added) if the member's
    /// answers would pass the budget.
    pub fn add(&self, bytes: usize) -> Result<()> {
        let max = self.budget.max();
        let Err(now) = self.try_add(bytes) else {
            return Ok(());
        };
        crate::metrics::ANSWERS_REFUSED.inc();
        let mine = self.bytes();
        Err(StoreError::AnswersOverBudget(if mine + bytes > max {
            format!(
                "this answer passes the member's {} MiB for answers in flight (--max-response-bytes-in-flight); ask with a limit or a narrower range",
                max >> 20
            )
        } else {
            format!(
                "the member is holding {} MiB of answers already, its limit (--max-response-bytes-in-flight); retry, or ask with a limit",
                now >> 20
            )
        }))
    }

    /// Adds `bytes` if the budget has room for them; if not, adds nothing
    /// and says what the budget held (the caller words the refusal: a
    /// budget of request bytes uses this too, `api`'s `unary`).
    pub fn try_add(&self, bytes: usize) -> std::result::Result<(), usize> {
        let b = &self.budget;
        let max = b.max();
        let mut now = b.in_flight_bytes.load(Ordering::Relaxed);
        loop {
            let next = now.saturating_add(bytes);
            if next > max {
                return Err(now);
            }
            match b.in_flight_bytes.compare_exchange_weak(
                now,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Counts `bytes` already rendered (a write's answer, bounded by its
    /// `Allowance` when it was applied) until the answer is sent, whatever
    /// the budget holds: they exist either way, and the readers after it
    /// must see them.
    pub fn hold(&self, bytes: usize) {
        self.budget
            .in_flight_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The budget this charge is against.
    pub fn budget(&self) -> &AnswerBudget {
        &self.budget
    }

    /// Bytes this answer holds.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let mine = *self.bytes.get_mut();
        let before = self
            .budget
            .in_flight_bytes
            .fetch_sub(mine, Ordering::Relaxed);
        debug_assert!(before >= mine, "a charge gives back more than it took");
    }
}

/// A write's answer, metered inside apply against the bound its entry
/// carries: the same entry on every member meets the same records, so
/// every member refuses it alike, before the write changes anything.
#[derive(Debug)]
pub struct Allowance {
    max: usize,
    used: std::cell::Cell<usize>,
}

impl Allowance {
    pub fn new(max: usize) -> Allowance {
        Allowance {
            max,
            used: std::cell::Cell::new(0),
        }
    }

    /// Bytes metered so far.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Goes back to `bytes` metered (`write_answer` measures each branch
    /// of a nested txn from the same start).
    pub fn set_used(&self, bytes: usize) {
        self.used.set(bytes);
    }
}

impl Meter for Allowance {
    fn add(&self, bytes: usize) -> Result<()> {
        let next = self.used.get().saturating_add(bytes);
        if next > self.max {
            return Err(StoreError::AnswersOverBudget(format!(
                "this write's answer (its txn's ranges, the prev_kv of its deletes and puts) would render more than {} MiB on every member (--max-write-answer-bytes); read with a Range or a read-only txn, or write without prev_kv",
                (self.max >> 20).max(1)
            )));
        }
        self.used.set(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_share_the_budget_and_give_it_back_when_dropped() {
        let b = Arc::new(AnswerBudget::default());
        b.set_max(1000);
        let first = b.charge();
        first.add(600).unwrap();
        let second = b.charge();
        let busy = second.add(500).unwrap_err().to_string();
        assert!(busy.contains("holding 0 MiB of answers already"), "{busy}");
        second.add(400).unwrap();
        assert_eq!(b.in_flight(), 1000);
        let alone = first.add(500).unwrap_err().to_string();
        assert!(alone.contains("this answer passes"), "{alone}");
        drop(first);
        assert_eq!(b.in_flight(), 400);
        second.add(600).unwrap();
        drop(second);
        assert_eq!(b.in_flight(), 0);
    }
}
