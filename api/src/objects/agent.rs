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

use super::status;
use crate::identity::{Caller, Role};
use crate::pb::secretstore::{
    agent_server::Agent, AgentState, AgentTaskRequest, AgentWatchRequest, FetchRequest,
    FetchResponse, Task,
};

/// States queued per agent stream; a slow agent only ever needs the latest.
const STATES_QUEUED_MAX: usize = 2;
/// Store events queued before the watcher is demoted to catch-up; any one
/// event is enough to recompute, so this only bounds memory.
const EVENTS_QUEUED_MAX: usize = 64;

pub struct AgentService {
    pub node: Arc<Node>,
    pub store: Arc<ObjectStore>,
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
        let node_name = req.into_inner().node;
        validate::node(&node_name).map_err(status)?;
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
            let _guard = guard;
            let mut last: Option<AgentState> = None;
            loop {
                match node_state(&store, &node_name).await {
                    Ok(s) => {
                        if last.as_ref().is_none_or(|l| !node_view::same(l, &s)) {
                            tracing::debug!(revision = s.revision, "agent state: sending");
                            if tx.send(Ok(s.clone())).await.is_err() {
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
                tokio::select! {
                    ev = events.recv() => if ev.is_none() { break },
                    _ = tx.closed() => break,
                }
                while events.try_recv().is_some() {}
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

impl AgentService {
    async fn deliver(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        bind_node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let data = node_view::deliver(&self.store, &r).await.map_err(status)?;
        Ok(Response::new(FetchResponse { data }))
    }
}
