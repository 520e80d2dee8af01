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
//!
//! Events leave the hub already encoded (`WireEvent`): a put seen by a
//! thousand watchers is encoded once per publish (twice if some watchers
//! want `prev_kv` and the event has one), and every watcher's message holds
//! a reference to the same bytes. Encoding per watcher was the largest
//! single cost of a fan-out (`bench compare --rows watchers`). And a stream
//! gets one batch per publish for all its watchers (`WatchInbox`), not one
//! message (and one task wake-up) per watcher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::mvcc::{key_in_range, Mvcc, RevEvents};
use crate::pb::mvccpb::{event::EventType, Event};

/// Events read from storage per catch-up step, per watcher.
const CATCH_UP_EVENTS_MAX: usize = 1000;
const CATCH_UP_INTERVAL: Duration = Duration::from_millis(50);

/// Field number of `events` in etcd's `WatchResponse`.
pub const WATCH_RESPONSE_EVENTS_FIELD: u32 = 11;

/// One event as a `WatchResponse` carries it on the wire: the `events`
/// field's key, the length, and the encoded `mvccpb.Event`. Cloning shares
/// the bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct WireEvent(Bytes);

impl WireEvent {
    pub fn encode(ev: &Event) -> WireEvent {
        Self::field(ev.encoded_len(), |buf| ev.encode_raw(buf))
    }

    /// Wraps an encoded event read off the wire (the body of a
    /// `WatchResponse`'s field 11).
    pub fn from_event_bytes(event: &[u8]) -> WireEvent {
        Self::field(event.len(), |buf| buf.put_slice(event))
    }

    /// The field's key and length, then the `event_len` bytes `body` writes.
    fn field(event_len: usize, body: impl FnOnce(&mut BytesMut)) -> WireEvent {
        let mut buf = BytesMut::with_capacity(event_len + 16);
        prost::encoding::encode_key(
            WATCH_RESPONSE_EVENTS_FIELD,
            prost::encoding::WireType::LengthDelimited,
            &mut buf,
        );
        prost::encoding::encode_varint(event_len as u64, &mut buf);
        let head = buf.len();
        body(&mut buf);
        debug_assert_eq!(buf.len() - head, event_len, "the length written ahead");
        WireEvent(buf.freeze())
    }

    /// The whole field, ready to append to an encoded `WatchResponse`.
    pub fn field_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The event itself, decoded again (the JSON gateway and the
    /// simulation read events; gRPC streams only copy the bytes). `None`
    /// if the bytes are not exactly one event field, which bytes made by
    /// `encode` always are.
    pub fn decode(&self) -> Option<Event> {
        // The field alone is a valid `WatchResponse` holding one event.
        let mut r = crate::pb::etcdserverpb::WatchResponse::decode(&self.0[..]).ok()?;
        (r.events.len() == 1).then(|| r.events.pop()).flatten()
    }
}

/// The encodings of one publish's events, made on first use: index
/// `[revision][event][with prev_kv]`. Nothing is allocated until a watcher
/// matches, so a publish nobody watches costs nothing here.
#[derive(Default)]
struct WireCache {
    wire: Vec<Vec<[Option<WireEvent>; 2]>>,
}

impl WireCache {
    /// Event `e` of revision `r` of the batch, with or without its
    /// previous value.
    fn get(&mut self, batch: &[RevEvents], r: usize, e: usize, prev_kv: bool) -> WireEvent {
        if self.wire.is_empty() {
            self.wire = batch
                .iter()
                .map(|re| vec![[None, None]; re.events.len()])
                .collect();
        }
        let ev = &batch[r].events[e];
        let with_prev = prev_kv && ev.prev_kv.is_some();
        self.wire[r][e][with_prev as usize]
            .get_or_insert_with(|| {
                if with_prev || ev.prev_kv.is_none() {
                    WireEvent::encode(ev)
                } else {
                    WireEvent::encode(&Event {
                        prev_kv: None,
                        ..ev.clone()
                    })
                }
            })
            .clone()
    }
}

/// The sending half of a stream's inbox, which the hub keeps per watcher.
/// Bounded in messages, not batches: a batch holds one message per watcher
/// of the stream that the publish concerns.
#[derive(Clone)]
pub struct WatchSink {
    /// Identifies the inbox, to group a publish's messages by stream.
    id: u64,
    tx: mpsc::UnboundedSender<Vec<WatchMsg>>,
    queued: Arc<AtomicUsize>,
    messages_max: usize,
}

/// The receiving half: what one watch stream reads.
pub struct WatchInbox {
    rx: mpsc::UnboundedReceiver<Vec<WatchMsg>>,
    queued: Arc<AtomicUsize>,
}

/// A new inbox that holds at most `messages_max` undelivered messages (or
/// one batch, if that is larger); past that, the hub's sends fail and the
/// watchers concerned catch up from storage instead.
pub fn inbox(messages_max: usize) -> (WatchSink, WatchInbox) {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        WatchSink {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            queued: queued.clone(),
            messages_max: messages_max.max(1),
        },
        WatchInbox { rx, queued },
    )
}

/// Why a batch was not queued; it comes back.
enum SendError {
    Full,
    Closed,
}

impl WatchSink {
    fn try_send(&self, batch: Vec<WatchMsg>) -> Result<(), SendError> {
        let n = batch.len();
        // Only the hub sends (under its lock), so the count cannot grow
        // between this check and the add. An empty inbox takes any batch
        // (at most one message per watcher of the stream, itself bounded),
        // so a stream with more matching watchers than the bound still
        // gets its events at publish time.
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + n > self.messages_max {
            return Err(SendError::Full);
        }
        self.queued.fetch_add(n, Ordering::AcqRel);
        self.tx.send(batch).map_err(|_| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            SendError::Closed
        })
    }
}

impl WatchInbox {
    /// The next batch, in the order sent; `None` once the hub dropped
    /// every sink (never while a watcher of the stream is registered).
    pub async fn recv(&mut self) -> Option<Vec<WatchMsg>> {
        let b = self.rx.recv().await?;
        self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        Some(b)
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&mut self) -> Option<Vec<WatchMsg>> {
        let b = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(b.len(), Ordering::AcqRel);
        Some(b)
    }
}

/// One publish's messages for one stream, and for each message its
/// watcher's state before it, restored if the batch cannot be queued.
struct StreamBatch {
    sink: WatchSink,
    msgs: Vec<WatchMsg>,
    sent: Vec<Before>,
}

struct Before {
    key: WatcherKey,
    next_rev: i64,
    last_sent: Instant,
}

/// What a watcher's stream receives.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchMsg {
    pub watch_id: i64,
    /// Revision for the response header: the last revision covered.
    pub revision: i64,
    pub events: Vec<WireEvent>,
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
    sink: WatchSink,
    last_sent: Instant,
}

impl Watcher {
    /// The message for these revisions, or None if nothing matches.
    fn select(&self, batch: &[RevEvents], wire: &mut WireCache) -> Option<WatchMsg> {
        let mut events = Vec::new();
        let mut last = 0;
        for (r, re) in batch.iter().enumerate() {
            if re.revision < self.next_rev {
                continue;
            }
            last = re.revision;
            for (e, ev) in re.events.iter().enumerate() {
                let Some(kv) = &ev.kv else { continue };
                if !key_in_range(&kv.key, &self.spec.key, &self.spec.range_end) {
                    continue;
                }
                let is_put = ev.r#type == EventType::Put as i32;
                if (is_put && self.spec.no_put) || (!is_put && self.spec.no_delete) {
                    continue;
                }
                events.push(wire.get(batch, r, e, self.spec.prev_kv));
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
        sink: WatchSink,
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
        let mut wire = WireCache::default();
        let now = Instant::now();
        let mut out: HashMap<u64, StreamBatch> = HashMap::new();
        for (key, w) in inner.watchers.iter_mut().filter(|(_, w)| w.synced) {
            if let Some(msg) = w.select(batch, &mut wire) {
                let b = out.entry(w.sink.id).or_insert_with(|| StreamBatch {
                    sink: w.sink.clone(),
                    msgs: Vec::new(),
                    sent: Vec::new(),
                });
                b.msgs.push(msg);
                b.sent.push(Before {
                    key: *key,
                    next_rev: w.next_rev,
                    last_sent: w.last_sent,
                });
                w.last_sent = now;
            }
            // A watcher that starts in the future keeps its start.
            w.next_rev = w.next_rev.max(current + 1);
        }
        let mut closed = Vec::new();
        for StreamBatch { sink, msgs, sent } in out.into_values() {
            match sink.try_send(msgs) {
                Ok(()) => {}
                Err(SendError::Full) => {
                    // Catch-up resends from where each watcher was.
                    for b in sent {
                        if let Some(w) = inner.watchers.get_mut(&b.key) {
                            w.next_rev = b.next_rev;
                            w.last_sent = b.last_sent;
                            w.synced = false;
                        }
                    }
                }
                Err(SendError::Closed) => closed.extend(sent.into_iter().map(|b| b.key)),
            }
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
                    if w.sink.try_send(vec![msg]).is_ok() {
                        drop(inner);
                        self.cancel(key);
                    }
                }
                Err(e) => tracing::error!(error = %e, "watch catch-up read failed"),
                Ok((batch, next)) => {
                    let sent = match w.select(&batch, &mut WireCache::default()) {
                        None => true,
                        Some(msg) => match w.sink.try_send(vec![msg]) {
                            Ok(()) => {
                                w.last_sent = Instant::now();
                                true
                            }
                            Err(SendError::Full) => false,
                            Err(SendError::Closed) => {
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
                if w.sink.try_send(vec![msg]).is_ok() {
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

    async fn recv_revs(rx: &mut WatchInbox, want: usize) -> Vec<i64> {
        let mut revs = Vec::new();
        while revs.len() < want {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("event in time")
                .unwrap();
            for m in batch {
                revs.extend(m.events.iter().map(|e| {
                    e.decode()
                        .expect("the hub's own encoding")
                        .kv
                        .unwrap()
                        .mod_revision
                }));
            }
        }
        revs
    }

    #[tokio::test]
    async fn future_start_revision_is_kept() {
        let mut f = Fixture::new();
        let (tx, mut rx) = inbox(16);
        f.hub.watch(spec("k", 4), 1, tx).unwrap();
        for v in ["a", "b", "c", "d"] {
            f.put("k", v); // revisions 2..=5
        }
        assert_eq!(recv_revs(&mut rx, 2).await, vec![4, 5]);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn slow_watcher_catches_up_without_gaps_or_duplicates() {
        let mut f = Fixture::new();
        // Room for one message: the watcher falls behind at once.
        let (tx, mut rx) = inbox(1);
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
        let (tx, _rx) = inbox(4);
        assert_eq!(
            f.hub.watch(spec("k", 2), 1, tx).unwrap_err(),
            StoreError::Compacted {
                compact_revision: 4
            }
        );
        let (tx, mut rx) = inbox(4);
        f.hub.watch(spec("k", 4), 2, tx).unwrap();
        assert_eq!(recv_revs(&mut rx, 3).await, vec![4, 5, 6]);
    }

    /// Watchers of one stream get one batch per publish, each with the
    /// events it asked for: one encoding shared, `prev_kv` only where
    /// wanted, a filtered-out event absent. A batch that would pass the
    /// inbox's bound is not queued; every watcher in it catches up.
    #[tokio::test]
    async fn a_streams_watchers_share_one_batch_per_publish() {
        let mut f = Fixture::new();
        f.put("k", "old"); // revision 2
        let (tx, mut rx) = inbox(3);
        let with_prev = WatchSpec {
            prev_kv: true,
            ..spec("k", 0)
        };
        let no_put = WatchSpec {
            no_put: true,
            ..spec("k", 0)
        };
        f.hub.watch(spec("k", 0), 1, tx.clone()).unwrap();
        f.hub.watch(with_prev, 2, tx.clone()).unwrap();
        f.hub.watch(no_put, 3, tx.clone()).unwrap();
        f.put("k", "new"); // revision 3
        let mut batch = rx.try_recv().expect("one batch");
        assert!(rx.try_recv().is_none(), "one batch per publish");
        batch.sort_by_key(|m| m.watch_id);
        let ids: Vec<i64> = batch.iter().map(|m| m.watch_id).collect();
        assert_eq!(ids, vec![1, 2], "the put is filtered out for watcher 3");
        let plain = batch[0].events[0].decode().unwrap();
        let prev = batch[1].events[0].decode().unwrap();
        assert_eq!(plain.kv.as_ref().unwrap().value, b"new");
        assert_eq!(plain.prev_kv, None);
        assert_eq!(prev.prev_kv.unwrap().value, b"old");
        // Four messages would not fit in an inbox of three: two puts with
        // nothing read leave the second batch out, and catch-up brings it.
        f.put("k", "a"); // revision 4: two messages queued
        f.put("k", "b"); // revision 5: two more would make four
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(2));
        assert!(rx.try_recv().is_none());
        f.hub.catch_up_round();
        let mut caught: Vec<(i64, i64)> = std::iter::from_fn(|| rx.try_recv())
            .flatten()
            .map(|m| (m.watch_id, m.revision))
            .collect();
        caught.sort();
        assert_eq!(caught, vec![(1, 5), (2, 5)]);
        // An empty inbox takes a batch larger than its bound.
        let (tx, mut rx) = inbox(1);
        f.hub.watch(spec("k", 0), 4, tx.clone()).unwrap();
        f.hub.watch(spec("k", 0), 5, tx).unwrap();
        f.put("k", "c"); // revision 6
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(2));
    }
}
