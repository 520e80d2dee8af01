//! The store's Prometheus metrics: how long fsyncs, applies and watch
//! fan-outs take, and raft events. Registered once in the default
//! registry; the API crate serves them (with scrape-time gauges) at
//! `/metrics`.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter, Histogram, HistogramOpts, IntCounter};

/// 50 µs to ~6.5 s, doubling: fsync and apply times on any disk.
fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00005, 2.0, 18).expect("valid buckets")
}

fn histogram(name: &str, help: &str) -> Histogram {
    register_histogram!(HistogramOpts::new(name, help).buckets(buckets()))
        .expect("metric registered once")
}

pub static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "secretd_disk_wal_fsync_duration_seconds",
        "Time of one synced write of raft entries (one per Ready that must sync).",
    )
});

pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "secretd_apply_duration_seconds",
        "Time to apply one batch of committed entries to the keyspace.",
    )
});

pub static WATCH_PUBLISH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "secretd_watch_publish_duration_seconds",
        "Time to hand one applied batch's events to every synced watcher.",
    )
});

pub static LEADER_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_server_leader_changes_seen_total",
        "Leader changes this member has seen."
    )
    .expect("metric registered once")
});

pub static PROPOSALS_COMMITTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_server_proposals_applied_total",
        "Raft entries applied by this member."
    )
    .expect("metric registered once")
});

pub static SLOW_READ_INDEXES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_server_slow_read_indexes_total",
        "ReadIndex rounds unanswered until their retry (half a second): linearizable reads \
         that waited for it."
    )
    .expect("metric registered once")
});

pub static ANSWERS_CUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_answers_cut_total",
        "Answers given up because their client took none of them for --max-answer-stall."
    )
    .expect("metric registered once")
});

pub static ANSWERS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_answers_refused_total",
        "Reads refused because their answers would pass --max-response-bytes-in-flight."
    )
    .expect("metric registered once")
});

pub static APPLY_REFUSED_ENTRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "secretd_apply_refused_entries_total",
        "Committed entries that could not be applied and were skipped alike on every member \
         (their proposer was told why). Any at all deserves a look."
    )
    .expect("metric registered once")
});
