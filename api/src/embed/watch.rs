//! The in-process client's Watch: one watcher per stream, served by the
//! member's own `WatchService` (so etcd's auth, the reserved range and the
//! hub's bounded inboxes apply as on the wire), its events decoded into
//! typed [`WatchEvent`]s. At most `WATCH_STREAMS_MAX` live at once per
//! member; the member's stop ends them all.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use super::client::{Client, KeyValue};
use super::error::EmbedError;
use super::shared::{StreamSlot, WATCH_STREAMS_MAX};
use crate::pb::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::pb::mvccpb;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change: the key as it is now (a delete: the key and the revision
/// only), and as it was before when the member still had it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl From<mvccpb::Event> for WatchEvent {
    fn from(e: mvccpb::Event) -> WatchEvent {
        let kind = match e.r#type == mvccpb::event::EventType::Delete as i32 {
            true => EventKind::Delete,
            false => EventKind::Put,
        };
        WatchEvent {
            kind,
            kv: e.kv.map(KeyValue::from).unwrap_or_else(|| KeyValue {
                key: Vec::new(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: 0,
            }),
            prev: e.prev_kv.map(KeyValue::from),
        }
    }
}

/// A live watch. Events of one revision come together, in revision order.
pub struct Watcher {
    slot: Arc<StreamSlot>,
    stopped: tokio::sync::watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Client {
    /// Watches `key` (with `prefix`, every key under it) from
    /// `start_revision` (0: from the next write). Answers once the member
    /// created the watch; a refusal (etcd auth, the reserved range, a
    /// compacted start) is an error here.
    pub async fn watch(
        &self,
        key: &[u8],
        prefix: bool,
        start_revision: i64,
    ) -> Result<Watcher, EmbedError> {
        let permit = self
            .shared
            .watch_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                EmbedError::ResourceExhausted(format!(
                    "{WATCH_STREAMS_MAX} watch streams are open on this member"
                ))
            })?;
        let create = WatchCreateRequest {
            key: key.to_vec(),
            range_end: match prefix {
                true => secretd_store::mvcc::prefix_end(key),
                false => Vec::new(),
            },
            start_revision,
            prev_kv: true,
            ..Default::default()
        };
        let msg = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        let (s, req) = self.request("/etcdserverpb.Watch/Watch", msg)?;
        let who = crate::etcd::auth::Who::of(&s.node, &req).await?;
        // The requests end after the create: the watcher lives on, as a
        // half-closed stream's do, until the `Watcher` is dropped.
        let inbound = futures::stream::iter([Ok(req.into_inner())]);
        let slot = Arc::new(tokio::sync::Mutex::new(Some(s.watch.serve(inbound, who))));
        self.shared.register(&slot);
        let mut w = Watcher {
            slot,
            stopped: self.shared.stopped.subscribe(),
            _permit: permit,
        };
        let created = w.response().await?;
        match created.canceled {
            true => Err(cancel_error(created)),
            false => Ok(w),
        }
    }
}

fn cancel_error(r: WatchResponse) -> EmbedError {
    if r.compact_revision > 0 {
        return EmbedError::Compacted {
            compact_revision: r.compact_revision,
        };
    }
    EmbedError::WatchCanceled(r.cancel_reason)
}

impl Watcher {
    /// The next revision's events (progress notifications are skipped).
    /// A cancelled watch (compaction, a permission revoked) is an error.
    pub async fn next(&mut self) -> Result<Vec<WatchEvent>, EmbedError> {
        loop {
            let r = self.response().await?;
            if r.canceled {
                return Err(cancel_error(r));
            }
            if !r.events.is_empty() {
                return Ok(r.events.into_iter().map(WatchEvent::from).collect());
            }
        }
    }

    async fn response(&mut self) -> Result<WatchResponse, EmbedError> {
        let mut slot = self.slot.lock().await;
        let Some(stream) = slot.as_mut() else {
            return Err(EmbedError::Stopped);
        };
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(out)) => Ok(out.into_response()?),
                Some(Err(status)) => Err(status.into()),
                None => Err(EmbedError::Stopped),
            },
            _ = self.stopped.wait_for(|s| *s) => Err(EmbedError::Stopped),
        }
    }
}
