//! A wait that ends early when the keyring's records change. Members learn
//! of a new KEK generation, and a creator learns that a quorum holds it,
//! from records in raft; polling for them put up to 600 ms between a
//! cluster's first secret and its next creates. A watcher on this member's
//! hub ends the wait as soon as a change under its prefix is applied here;
//! the period stays as the fallback (a change missed, a full inbox).

use std::sync::{Arc, Weak};
use std::time::Duration;

use secretd_store::clock::Clock;
use secretd_store::watch::{inbox, WatchHub, WatchInbox, WatchSpec, WatcherKey};

use crate::layout;

/// Change batches a wake holds; past it the hub drops them, and the
/// period's fallback still ends the wait.
const WAKE_BATCHES_MAX: usize = 8;

/// A watcher on one prefix, cancelled when dropped. It holds the hub
/// weakly: a background loop's wake must not keep a stopped member's
/// storage open.
pub(crate) struct Wake {
    hub: Weak<WatchHub>,
    watcher: Option<(WatcherKey, WatchInbox)>,
}

impl Wake {
    /// Wakes on changes under `prefix`; without a watcher (the hub refused
    /// one) it only waits out each period.
    pub(crate) fn on(hub: &Arc<WatchHub>, prefix: Vec<u8>) -> Wake {
        let (sink, rx) = inbox(WAKE_BATCHES_MAX);
        let spec = WatchSpec {
            range_end: layout::prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        };
        let watcher = match hub.watch(spec, 0, sink) {
            Ok(key) => Some((key, rx)),
            Err(e) => {
                tracing::debug!(error = %e, "keyring wake: no watcher, polling only");
                None
            }
        };
        Wake {
            hub: Arc::downgrade(hub),
            watcher,
        }
    }

    /// Until a change under the prefix, or `period`, whichever comes first
    /// (always the change first when both are ready: the simulation must
    /// choose the same way every run).
    pub(crate) async fn wait(&mut self, clock: &Clock, period: Duration) {
        match self.watcher.as_mut() {
            Some((_, rx)) => {
                tokio::select! {
                    biased;
                    got = rx.recv() => {
                        if got.is_none() {
                            self.watcher = None;
                        }
                    }
                    _ = clock.sleep(period) => {}
                }
            }
            None => clock.sleep(period).await,
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let (Some((key, _)), Some(hub)) = (self.watcher.take(), self.hub.upgrade()) {
            hub.cancel(key);
        }
    }
}
