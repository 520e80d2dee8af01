//! The watch hub: delivers MVCC events to watchers, in revision order, with
//! no gaps or duplicates, all events of one revision in one message.
//!
//! A watcher is *synced* when it has everything up to the published revision;
//! the raft loop hands each new batch of events to synced watchers with a
//! non-blocking send. A watcher whose buffer is full, or that starts in the
//! past, is *unsynced*: a catch-up task reads its events from storage and
//! promotes it back once it reaches the published revision. So a slow
//! watcher costs the writer nothing but a failed `try_send`.
//!
//! Invariant: `next_rev` is the first revision a watcher has not been sent;
//! publication and registration both happen under the hub lock, so a
//! revision is either before a new watcher's start or delivered to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::mvcc::{key_in_range, Mvcc, RevEvents};
use crate::pb::mvccpb::{event::EventType, Event};

/// Events read from storage per catch-up step, per watcher.
const CATCH_UP_EVENTS_MAX: usize = 1000;
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(50);

/// What a watcher's stream receives.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchMsg {
    pub watch_id: i64,
    /// Revision for the response header: the last revision covered.
    pub revision: i64,
    pub events: Vec<Event>,
    /// Non-zero: the watcher was cancelled because its next revision was
    /// compacted away.
    pub compact_revision: i64,
}

#[derive(Clone, Debug, Default)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 means "from the next revision".
    pub start_revision: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
}

struct Watcher {
    spec: WatchSpec,
    watch_id: i64,
    next_rev: i64,
    synced: bool,
    sink: mpsc::Sender<WatchMsg>,
    last_sent: Instant,
}

impl Watcher {
    /// The message for these revisions, or None if nothing matches.
    fn select(&self, batch: &[RevEvents]) -> Option<WatchMsg> {
        let mut events = Vec::new();
        let mut last = 0;
        for re in batch.iter().filter(|re| re.revision >= self.next_rev) {
            last = re.revision;
            for ev in &re.events {
                let Some(kv) = &ev.kv else { continue };
                if !key_in_range(&kv.key, &self.spec.key, &self.spec.range_end) {
                    continue;
                }
                let is_put = ev.r#type == EventType::Put as i32;
                if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
                    continue;
                }
                let mut ev = ev.clone();
                if !self.spec.prev_kv {
                    ev.prev_kv = None;
                }
                events.push(ev);
            }
        }
        (!events.is_empty()).then_some(WatchMsg {
            watch_id: self.watch_id,
            revision: last,
            events,
            compact_revision: 0,
        })
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
}

pub struct WatchHub {
    mvcc: Arc<Mvcc>,
    inner: Mutex<Inner>,
    prev_kv_watchers: AtomicUsize,
    progress_interval: Duration,
}

/// Identifies a watcher in the hub (unique across streams).
pub type WatcherKey = u64;

impl WatchHub {
    /// Creates the hub and starts its catch-up task on the current tokio
    /// runtime.
    pub fn start(mvcc: Arc<Mvcc>, progress_interval: Duration) -> Arc<WatchHub> {
        let hub = Arc::new(WatchHub {
            mvcc,
            inner: Mutex::new(Inner::default()),
            prev_kv_watchers: AtomicUsize::new(0),
            progress_interval,
        });
        let weak = Arc::downgrade(&hub);
        tokio::spawn(catch_up_loop(weak));
        hub
    }

    /// Whether any watcher wants `prev_kv` (the applier then reads it).
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::Relaxed) > 0
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// Registers a watcher. Fails with `Compacted` if it starts before the
    /// compacted revision (the caller reports it as etcd does).
    pub fn watch(
        &self,
        spec: WatchSpec,
        watch_id: i64,
        sink: mpsc::Sender<WatchMsg>,
    ) -> Result<WatcherKey, StoreError> {
        let mut inner = self.inner.lock();
        let current = self.mvcc.current_revision();
        let compacted = self.mvcc.compact_revision();
        if spec.start_revision > 0 && spec.start_revision < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let next_rev = if spec.start_revision > 0 {
            spec.start_revision
        } else {
            current + 1
        };
        if spec.prev_kv {
            self.prev_kv_watchers.fetch_add(1, Ordering::Relaxed);
        }
        inner.next_id += 1;
        let key = inner.next_id;
        inner.watchers.insert(
            key,
            Watcher {
                spec,
                watch_id,
                next_rev,
                synced: next_rev > current,
                sink,
                last_sent: Instant::now(),
            },
        );
        Ok(key)
    }

    pub fn cancel(&self, key: WatcherKey) -> bool {
        let removed = self.inner.lock().watchers.remove(&key);
        if let Some(w) = &removed {
            if w.spec.prev_kv {
                self.prev_kv_watchers.fetch_sub(1, Ordering::Relaxed);
            }
        }
        removed.is_some()
    }

    /// Publishes a durable batch: `make_visible` moves the readers' revision
    /// forward, under the hub lock so that no watcher registers in between;
    /// then synced watchers get the events.
    pub fn publish(&self, batch: &[RevEvents], make_visible: impl FnOnce()) {
        let _timer = crate::metrics::WATCH_PUBLISH_SECONDS.start_timer();
        let mut inner = self.inner.lock();
        make_visible();
        let current = self.mvcc.current_revision();
        let mut closed = Vec::new();
        for (key, w) in inner.watchers.iter_mut().filter(|(_, w)| w.synced) {
            if let Some(msg) = w.select(batch) {
                match w.sink.try_send(msg) {
                    Ok(()) => w.last_sent = Instant::now(),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Leave next_rev where it is: catch-up resends.
                        w.synced = false;
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        closed.push(*key);
                        continue;
                    }
                }
            }
            // A watcher that starts in the future keeps its start.
            w.next_rev = w.next_rev.max(current + 1);
        }
        drop(inner);
        for k in closed {
            self.cancel(k);
        }
    }

    /// After the keyspace jumped (snapshot install): every watcher catches
    /// up from storage, or is cancelled if its next revision is gone.
    pub fn resync_all(&self) {
        for w in self.inner.lock().watchers.values_mut() {
            w.synced = false;
        }
    }

    /// The revision to report in a progress response if every given watcher
    /// is synced (etcd answers a progress request only then).
    pub fn progress(&self, keys: &[WatcherKey]) -> Option<i64> {
        let inner = self.inner.lock();
        keys.iter()
            .all(|k| inner.watchers.get(k).is_none_or(|w| w.synced))
            .then(|| self.mvcc.current_revision())
    }

    /// One round of catch-up for every unsynced watcher, and progress
    /// notifications for idle synced ones that asked for them.
    /// One round of the catch-up task: every watcher that is behind gets
    /// its next events from storage. Public for a driver that owns time
    /// itself (the deterministic simulation runs it after each step).
    pub fn catch_up_round(&self) {
        let pending: Vec<(WatcherKey, WatchSpec, i64)> = {
            let inner = self.inner.lock();
            inner
                .watchers
                .iter()
                .filter(|(_, w)| !w.synced)
                .map(|(k, w)| (*k, w.spec.clone(), w.next_rev))
                .collect()
        };
        for (key, spec, from) in pending {
            let read = self.mvcc.history(
                &spec.key,
                &spec.range_end,
                from,
                CATCH_UP_EVENTS_MAX,
                spec.prev_kv,
            );
            let mut inner = self.inner.lock();
            let current = self.mvcc.current_revision();
            let Some(w) = inner.watchers.get_mut(&key) else {
                continue;
            };
            if w.next_rev != from {
                continue; // raced with a cancel and re-create; try next round
            }
            match read {
                Err(StoreError::Compacted { compact_revision }) => {
                    let msg = WatchMsg {
                        watch_id: w.watch_id,
                        revision: current,
                        events: Vec::new(),
                        compact_revision,
                    };
                    // The stream learns of the cancel, or is gone anyway.
                    if w.sink.try_send(msg).is_ok() {
                        drop(inner);
                        self.cancel(key);
                    }
                }
                Err(e) => tracing::error!(error = %e, "watch catch-up read failed"),
                Ok((batch, next)) => {
                    let sent = match w.select(&batch) {
                        None => true,
                        Some(msg) => match w.sink.try_send(msg) {
                            Ok(()) => {
                                w.last_sent = Instant::now();
                                true
                            }
                            Err(mpsc::error::TrySendError::Full(_)) => false,
                            Err(mpsc::error::TrySendError::Closed(_)) => {
                                drop(inner);
                                self.cancel(key);
                                continue;
                            }
                        },
                    };
                    if sent {
                        w.next_rev = next;
                        w.synced = next > current;
                    }
                }
            }
        }
        self.progress_round();
    }

    fn progress_round(&self) {
        let mut inner = self.inner.lock();
        let current = self.mvcc.current_revision();
        for w in inner.watchers.values_mut() {
            if w.synced && w.spec.progress_notify && w.last_sent.elapsed() >= self.progress_interval
            {
                let msg = WatchMsg {
                    watch_id: w.watch_id,
                    revision: current,
                    events: Vec::new(),
                    compact_revision: 0,
                };
                if w.sink.try_send(msg).is_ok() {
                    w.last_sent = Instant::now();
                }
            }
        }
    }
}

async fn catch_up_loop(hub: Weak<WatchHub>) {
    let mut tick = tokio::time::interval(CATCH_UP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else { return };
        // Storage reads block: keep them off the async workers.
        let h = hub.clone();
        if tokio::task::spawn_blocking(move || h.catch_up_round())
            .await
            .is_err()
        {
            tracing::error!("watch catch-up round panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::mvcc::Applier;
    use crate::pb::etcdserverpb::{CompactionRequest, PutRequest};
    use crate::pb::internal::internal_request::Request;

    struct Fixture {
        _dir: tempfile::TempDir,
        applier: Applier,
        hub: Arc<WatchHub>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let mvcc = Mvcc::open(Db::open(dir.path()).unwrap()).unwrap();
            let hub = WatchHub::start(mvcc.clone(), Duration::from_secs(600));
            Fixture {
                _dir: dir,
                applier: Applier::new(mvcc),
                hub,
            }
        }

        /// Applies and publishes one request, as the raft loop does.
        fn apply(&mut self, req: Request) {
            let mut batch = crate::db::WriteBatch::default();
            let (res, events) = self.applier.apply(
                crate::mvcc::KvOp::try_from(&req).unwrap(),
                &mut batch,
                self.hub.wants_prev_kv(),
            );
            res.unwrap();
            self.applier.stage_revision(&mut batch);
            self.applier
                .mvcc()
                .db_for_tests()
                .write_sync(batch)
                .unwrap();
            let revision = self.applier.revision();
            let batch = if events.is_empty() {
                vec![]
            } else {
                vec![RevEvents { revision, events }]
            };
            let applier = &mut self.applier;
            self.hub.publish(&batch, || applier.publish());
        }

        fn put(&mut self, k: &str, v: &str) {
            self.apply(Request::Put(PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            }));
        }
    }

    fn spec(key: &str, start: i64) -> WatchSpec {
        WatchSpec {
            key: key.into(),
            start_revision: start,
            ..Default::default()
        }
    }

    async fn recv_revs(rx: &mut mpsc::Receiver<WatchMsg>, want: usize) -> Vec<i64> {
        let mut revs = Vec::new();
        while revs.len() < want {
            let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event in time")
                .unwrap();
            revs.extend(m.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
        }
        revs
    }

    #[tokio::test]
    async fn future_start_revision_is_kept() {
        let mut f = Fixture::new();
        let (tx, mut rx) = mpsc::channel(16);
        f.hub.watch(spec("k", 4), 1, tx).unwrap();
        for v in ["a", "b", "c", "d"] {
            f.put("k", v); // revisions 2..=5
        }
        assert_eq!(recv_revs(&mut rx, 2).await, vec![4, 5]);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn slow_watcher_catches_up_without_gaps_or_duplicates() {
        let mut f = Fixture::new();
        // Room for one message: the watcher falls behind at once.
        let (tx, mut rx) = mpsc::channel(1);
        f.hub.watch(spec("k", 0), 7, tx).unwrap();
        for i in 0..200 {
            f.put("k", &i.to_string()); // never blocks, whatever the watcher does
        }
        let revs = recv_revs(&mut rx, 200).await;
        assert_eq!(revs, (2..202).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn compacted_start_is_refused_and_lagging_watcher_is_cancelled() {
        let mut f = Fixture::new();
        for i in 0..5 {
            f.put("k", &i.to_string());
        }
        f.apply(Request::Compaction(CompactionRequest {
            revision: 4,
            physical: false,
        }));
        let (tx, _rx) = mpsc::channel(4);
        assert_eq!(
            f.hub.watch(spec("k", 2), 1, tx).unwrap_err(),
            StoreError::Compacted {
                compact_revision: 4
            }
        );
        let (tx, mut rx) = mpsc::channel(4);
        f.hub.watch(spec("k", 4), 2, tx).unwrap();
        assert_eq!(recv_revs(&mut rx, 3).await, vec![4, 5, 6]);
    }
}
