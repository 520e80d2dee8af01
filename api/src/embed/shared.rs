//! What a member and every in-process client of it share: the service
//! structs the member's listeners register (so a call in process runs the
//! same code, checks included), and the stop. Once the member stops, the
//! services are let go (so its storage can close) and every client and
//! watcher answers `EmbedError::Stopped`.

use std::pin::Pin;
use std::sync::{Arc, Weak};

use futures::Stream;
use secretd_store::node::Node;
use tokio::sync::Semaphore;
use tonic::Status;

use super::error::EmbedError;
use crate::etcd::kv::KvService;
use crate::etcd::lease::LeaseService;
use crate::etcd::watch::wire::WatchOut;
use crate::etcd::watch::WatchService;
use crate::objects::service::ObjectService;

/// Watch streams the in-process clients of one member may hold at once
/// (each holds a task and a hub inbox on the member).
pub const WATCH_STREAMS_MAX: usize = 4096;

/// The services, as the member's client listener registers them.
pub(super) struct Services {
    pub node: Arc<Node>,
    pub kv: KvService,
    pub lease: LeaseService,
    pub watch: WatchService,
    pub objects: ObjectService,
    /// Bytes a request may carry, as the gRPC decoder allows on the wire.
    pub request_bytes_max: usize,
}

/// A watch stream's responses, taken away when the member stops.
pub(super) type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchOut, Status>> + Send>>;
pub(super) type StreamSlot = tokio::sync::Mutex<Option<WatchStream>>;

pub(super) struct Shared {
    services: parking_lot::RwLock<Option<Arc<Services>>>,
    /// `true` once the member stops.
    pub stopped: tokio::sync::watch::Sender<bool>,
    /// One permit per live watch stream (`WATCH_STREAMS_MAX`).
    pub watch_permits: Arc<Semaphore>,
    /// Live watch streams, dropped at the stop.
    streams: parking_lot::Mutex<Vec<Weak<StreamSlot>>>,
}

impl Shared {
    pub fn new(services: Services) -> Arc<Shared> {
        Arc::new(Shared {
            services: parking_lot::RwLock::new(Some(Arc::new(services))),
            stopped: tokio::sync::watch::channel(false).0,
            watch_permits: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
            streams: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// The services, or `Stopped`.
    pub fn services(&self) -> Result<Arc<Services>, EmbedError> {
        self.services.read().clone().ok_or(EmbedError::Stopped)
    }

    /// Keeps a watch stream to drop at the stop (the registry never holds
    /// more than the permits allow: dead entries go first).
    pub fn register(&self, slot: &Arc<StreamSlot>) {
        let mut streams = self.streams.lock();
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(slot));
    }

    /// A stop that cannot wait (a dropped member): no new call gets the
    /// services, and every watcher is told.
    pub fn close_now(&self) {
        self.services.write().take();
        self.stopped.send_replace(true);
    }

    /// The stop: no new call gets the services, every watcher is told and
    /// its stream dropped (ending its task on the member).
    pub async fn close(&self) {
        self.services.write().take();
        self.stopped.send_replace(true);
        let streams: Vec<_> = std::mem::take(&mut *self.streams.lock());
        for slot in streams.iter().filter_map(Weak::upgrade) {
            slot.lock().await.take();
        }
    }
}
