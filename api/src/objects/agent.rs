//! `secretstore.v1.Agent`: what a node agent needs, and nothing more.
//!
//! `Watch` streams the node's full state (tasks, and the files each task
//! gets) now and after every change that alters it. It registers a watch
//! on the reserved range *before* reading, so no change falls between the
//! read and the watch; bursts of changes coalesce into one new state.
//! States are whole, never deltas, so an agent that reconnects after a gap
//! converges from the first message.
//!
//! Both read this member's applied state without a ReadIndex round: the
//! stream reacts to changes this member has applied, so local reads are
//! as fresh as the event that woke it. A member cut off from the quorum
//! stops seeing changes, and its agents keep what they have, as they would
//! with the cluster unreachable.
//!
//! `Fetch` returns a secret's plaintext (or a config's data) only if a task
//! assigned to the asking node uses that object, and a node agent's
//! certificate (`spiffe://secretd/node/NAME`) may only ask as that node.
//! Access ends with the assignment: each fetch checks it again.
//!
//! `InspectTask` shows one task of the asking node (`agent exec` needs its
//! targets), so a node needs no admin key; another node's task is "not
//! found", as a task that does not exist.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use secretd_store::watch::WatchSpec;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use secretd_secrets::layout::RESERVED;
use secretd_secrets::node_view::{self, node_state};
use secretd_secrets::store::ObjectStore;
use secretd_secrets::validate;

use crate::errors::secrets_status as status;
use crate::identity::{Caller, Role};
use crate::pb::secretstore::{
    agent_server::Agent, AgentState, AgentTaskRequest, AgentWatchRequest, FetchRequest,
    FetchResponse, Task,
};

/// Messages queued per agent stream (a state's parts wait their turn).
const STATES_QUEUED_MAX: usize = 2;
/// A state's part, at most: well under the agent's largest message
/// (`AGENT_MESSAGE_BYTES_MAX`), whatever `--max-request-bytes` says. A task
/// larger than a part (its spec is bounded by the request size at `task
/// create`) travels alone.
pub const STATE_PART_BYTES_MAX: usize = 1 << 20;
/// Largest message on the agent's stream, both ways (the agent decodes up
/// to this).
pub const AGENT_MESSAGE_BYTES_MAX: usize = 4 << 20;
/// Store events queued before the watcher is demoted to catch-up; any one
/// event is enough to recompute, so this only bounds memory.
const EVENTS_QUEUED_MAX: usize = 64;

/// `Agent.Watch` streams one node may hold open on one member: an agent
/// needs one, and a reconnect may briefly overlap the old one. Each stream
/// is a store watcher and a task that reads the node's tasks on changes,
/// so a node certificate opening thousands slowed the whole member (D14).
pub const STREAMS_PER_NODE_MAX: usize = 4;
/// `Agent.Watch` streams on one member, all nodes together.
pub const STREAMS_MAX: usize = 4_096;

pub struct AgentService {
    pub node: Arc<Node>,
    pub store: Arc<ObjectStore>,
    pub streams: Arc<StreamCount>,
}

/// Open `Agent.Watch` streams, by node.
#[derive(Default)]
pub struct StreamCount(parking_lot::Mutex<std::collections::HashMap<String, usize>>);

/// One open stream, counted until dropped.
struct StreamSlot {
    count: Arc<StreamCount>,
    node: String,
}

impl StreamCount {
    fn open(self: &Arc<Self>, node: &str) -> Result<StreamSlot, Status> {
        let mut open = self.0.lock();
        let total: usize = open.values().sum();
        let mine = open.get(node).copied().unwrap_or(0);
        if mine >= STREAMS_PER_NODE_MAX {
            return Err(Status::resource_exhausted(format!(
                "node {node} already has {mine} agent streams open on this member (at most \
                 {STREAMS_PER_NODE_MAX}; an agent needs one)"
            )));
        }
        if total >= STREAMS_MAX {
            return Err(Status::resource_exhausted(format!(
                "this member serves {total} agent streams, its most; try another member"
            )));
        }
        *open.entry(node.to_string()).or_default() += 1;
        Ok(StreamSlot {
            count: self.clone(),
            node: node.to_string(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.count.0.lock();
        if let Some(n) = open.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.node);
            }
        }
    }
}

/// Removes the store watcher when the stream's task ends.
struct WatchGuard {
    node: Arc<Node>,
    key: secretd_store::watch::WatcherKey,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.node.hub().cancel(self.key);
    }
}

/// A node agent's certificate names its node: it may ask only for that
/// node's state and files. No other role may ask at all (the gate refuses
/// them first; this is the second lock on the same door): the admin could
/// otherwise read every secret. Without client certificates there is no
/// identity to bind, and the member warned about that at start.
fn bind_node<T>(req: &Request<T>, node: &str) -> Result<(), Status> {
    let caller = Caller::of(req)?;
    match &caller.role {
        Role::Node(n) if n == node => Ok(()),
        Role::Unauthenticated => Ok(()),
        Role::Node(n) => {
            tracing::warn!(certificate = %n, asked = %validate::echo(node), "refused an agent asking for another node");
            Err(Status::permission_denied(format!(
                "this certificate is for node {n}, not {}",
                validate::echo(node)
            )))
        }
        other => Err(not_a_node(other)),
    }
}

fn not_a_node(role: &Role) -> Status {
    Status::permission_denied(format!(
        "{role} may not use the agent API: only a node agent's certificate may, for its own node"
    ))
}

/// The node a request asks as: the one it names (which must be the
/// certificate's), or, when it names none, the certificate's. `None`
/// without client certificates and no node named: any node.
fn asking_node<T>(req: &Request<T>, named: &str) -> Result<Option<String>, Status> {
    if !named.is_empty() {
        bind_node(req, named)?;
        return Ok(Some(named.to_string()));
    }
    match Caller::of(req)?.role {
        Role::Node(n) => Ok(Some(n)),
        Role::Unauthenticated => Ok(None),
        other => Err(not_a_node(&other)),
    }
}

type StateStream = Pin<Box<dyn Stream<Item = Result<AgentState, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    type WatchStream = StateStream;

    async fn watch(
        &self,
        req: Request<AgentWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        bind_node(&req, &req.get_ref().node)?;
        let AgentWatchRequest {
            node: node_name,
            parts,
        } = req.into_inner();
        validate::node(&node_name).map_err(status)?;
        let slot = self.streams.open(&node_name)?;
        let (events_tx, mut events) = secretd_store::watch::inbox(EVENTS_QUEUED_MAX);
        let spec = WatchSpec {
            key: RESERVED.to_vec(),
            range_end: vec![0],
            ..Default::default()
        };
        let key = self
            .node
            .hub()
            .watch(spec, 0, events_tx)
            .map_err(crate::errors::status)?;
        let guard = WatchGuard {
            node: self.node.clone(),
            key,
        };
        let (tx, rx) = mpsc::channel(STATES_QUEUED_MAX);
        let store = self.store.clone();
        tracing::info!(node = %node_name, "agent connected");
        tokio::spawn(async move {
            let _held = (guard, slot);
            let mut last: Option<AgentState> = None;
            loop {
                match node_state(&store, &node_name).await {
                    Ok(s) => {
                        if last.as_ref().is_none_or(|l| !node_view::same(l, &s)) {
                            tracing::debug!(revision = s.revision, "agent state: sending");
                            if send_state(&tx, s.clone(), parts).await.is_err() {
                                break;
                            }
                            last = Some(s);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        break;
                    }
                }
                let last = last.as_ref().expect("sent above");
                match next_change(&mut events, &tx, last, &node_name).await {
                    Change::Concerns => {}
                    Change::Behind => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "this agent stream fell behind the member's compaction; reconnect",
                            )))
                            .await;
                        break;
                    }
                    Change::Closed => break,
                }
                tracing::debug!(node = %node_name, "agent state: woken by a change");
            }
            tracing::info!(node = %node_name, "agent disconnected");
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let who = crate::audit::who(&req);
        let what = format!(
            "{}/{}/{}",
            req.get_ref().node,
            req.get_ref().task,
            req.get_ref().object_id
        );
        let kind = if req.get_ref().secret {
            "secret"
        } else {
            "config"
        };
        let version = req.get_ref().secret.then_some(req.get_ref().version);
        let r = self.deliver(req).await;
        crate::audit::record(&who, &format!("{kind}.deliver"), &what, version, &r);
        r
    }

    async fn inspect_task(&self, req: Request<AgentTaskRequest>) -> Result<Response<Task>, Status> {
        let node = asking_node(&req, &req.get_ref().node)?;
        let task = node_view::task(&self.store, node.as_deref(), &req.get_ref().task)
            .await
            .map_err(status)?;
        Ok(Response::new(task))
    }
}

/// What ended a stream's wait for a change.
enum Change {
    /// A change that may alter what the node is owed.
    Concerns,
    /// The watcher was cancelled: the revisions it missed were compacted.
    Behind,
    /// The agent went away, or the member is stopping.
    Closed,
}

/// Waits for a change that concerns the node (`node_view::concerns`),
/// taking every batch already queued with it; the rest are read and
/// dropped here, without reading any task.
async fn next_change(
    events: &mut secretd_store::watch::WatchInbox,
    tx: &mpsc::Sender<Result<AgentState, Status>>,
    last: &AgentState,
    node: &str,
) -> Change {
    let mut concerns = false;
    loop {
        let batch = tokio::select! {
            b = events.recv() => b,
            _ = tx.closed() => return Change::Closed,
        };
        let Some(batch) = batch else {
            return Change::Closed;
        };
        for msg in batch {
            if msg.compact_revision != 0 {
                return Change::Behind;
            }
            concerns |= msg.events.iter().any(|ev| match ev.decode() {
                Some(ev) => {
                    let put = ev.r#type == secretd_store::pb::mvccpb::event::EventType::Put as i32;
                    let kv = ev.kv.unwrap_or_default();
                    node_view::concerns(last, node, &kv.key, put.then_some(&kv.value[..]))
                }
                None => true,
            });
        }
        if concerns {
            // What is queued already is seen by the state about to be read.
            while let Some(batch) = events.try_recv() {
                if batch.iter().any(|m| m.compact_revision != 0) {
                    return Change::Behind;
                }
            }
            return Change::Concerns;
        }
    }
}

/// Sends a state whole, or in parts to an agent that takes them (D10: a
/// state past one message once stopped every update, removals included).
/// An agent that does not take parts is told why it gets nothing.
async fn send_state(
    tx: &mpsc::Sender<Result<AgentState, Status>>,
    state: AgentState,
    parts: bool,
) -> Result<(), ()> {
    use prost::Message as _;
    let len = state.encoded_len();
    if !parts && len > STATE_PART_BYTES_MAX {
        let why = format!(
            "the node's state is {len} bytes, more than one message ({STATE_PART_BYTES_MAX}); \
             this agent cannot take it in parts: upgrade it"
        );
        let _ = tx.send(Err(Status::failed_precondition(why))).await;
        return Err(());
    }
    for part in node_view::parts(state, STATE_PART_BYTES_MAX) {
        tx.send(Ok(part)).await.map_err(drop)?;
    }
    Ok(())
}

impl AgentService {
    async fn deliver(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        bind_node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let data = node_view::deliver(&self.store, &r).await.map_err(status)?;
        Ok(Response::new(FetchResponse { data }))
    }
}
