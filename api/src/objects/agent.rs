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

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use secretd_store::node::Node;
use secretd_store::watch::WatchSpec;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::layout::Kind;
use super::store::ObjectStore;
use super::validate;
use crate::identity::{Caller, Role};
use crate::pb::secretstore::{
    agent_server::Agent, AgentFile, AgentState, AgentWatchRequest, FetchRequest, FetchResponse,
};
use crate::reserved::RESERVED;

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

/// The node's state: its tasks, and each file with the version to serve.
pub async fn node_state(store: &ObjectStore, node: &str) -> Result<AgentState, Status> {
    let tasks = store.task_list(node, true).await?;
    let mut out = AgentState::default();
    let secret_ids: BTreeSet<String> = tasks
        .iter()
        .flat_map(|t| t.secrets.iter().map(|m| m.source_id.clone()))
        .collect();
    let (current, revision) = store.current_versions(&secret_ids, true).await?;
    out.revision = revision;
    for t in &tasks {
        out.tasks.push(t.id.clone());
        for (kind, list) in [(Kind::Secret, &t.secrets), (Kind::Config, &t.configs)] {
            for m in list {
                let version = match kind {
                    Kind::Secret if m.version != 0 => m.version,
                    Kind::Secret => *current.get(&m.source_id).ok_or_else(|| {
                        Status::internal(format!(
                            "task {} uses secret {} which does not exist",
                            t.id, m.source_id
                        ))
                    })?,
                    Kind::Config => 0,
                };
                out.files.push(AgentFile {
                    task: t.id.clone(),
                    path: m.target.trim_start_matches('/').to_string(),
                    uid: m.uid,
                    gid: m.gid,
                    mode: m.mode,
                    secret: kind == Kind::Secret,
                    object_id: m.source_id.clone(),
                    version,
                });
            }
        }
    }
    Ok(out)
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
        other => Err(Status::permission_denied(format!(
            "{other} may not use the agent API: only a node agent's certificate may, for its own node"
        ))),
    }
}

fn same(a: &AgentState, b: &AgentState) -> bool {
    a.tasks == b.tasks && a.files == b.files
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
        validate::node(&node_name)?;
        let (events_tx, mut events) = mpsc::channel(EVENTS_QUEUED_MAX);
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
                        if last.as_ref().is_none_or(|l| !same(l, &s)) {
                            tracing::debug!(revision = s.revision, "agent state: sending");
                            if tx.send(Ok(s.clone())).await.is_err() {
                                break;
                            }
                            last = Some(s);
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
                tokio::select! {
                    ev = events.recv() => if ev.is_none() { break },
                    _ = tx.closed() => break,
                }
                while events.try_recv().is_ok() {}
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
}

impl AgentService {
    async fn deliver(&self, req: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        bind_node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let denied = || {
            let what = if r.secret {
                format!(
                    "secret {} version {}",
                    validate::echo(&r.object_id),
                    r.version
                )
            } else {
                format!("config {}", validate::echo(&r.object_id))
            };
            Status::permission_denied(format!(
                "node {} has no task {} serving {what}",
                validate::echo(&r.node),
                validate::echo(&r.task),
            ))
        };
        let task = match self.store.task_get(&r.task, true).await {
            Ok(t) => t,
            Err(s) if s.code() == tonic::Code::NotFound => return Err(denied()),
            Err(s) => return Err(s),
        };
        let mounts = if r.secret {
            &task.secrets
        } else {
            &task.configs
        };
        // A node may fetch exactly the versions its task serves now: the
        // pinned one, or the current one when the task follows.
        let current = if r.secret {
            let ids = std::iter::once(r.object_id.clone()).collect();
            self.store
                .current_versions(&ids, true)
                .await?
                .0
                .get(&r.object_id)
                .copied()
        } else {
            None
        };
        let serves = |m: &crate::pb::secretstore::Mount| {
            m.source_id == r.object_id
                && (!r.secret
                    || (m.version != 0 && m.version == r.version)
                    || (m.version == 0 && current == Some(r.version)))
        };
        let uses = task.node == r.node && mounts.iter().any(serves);
        if !uses {
            tracing::warn!(node = %r.node, task = %r.task, object = %r.object_id, version = r.version, "refused a fetch outside the node's assignments");
            return Err(denied());
        }
        let data = if r.secret {
            self.store
                .open_secret(&r.object_id, r.version, true)
                .await?
                .expose()
                .to_vec()
        } else {
            self.store.config_data(&r.object_id, true).await?
        };
        tracing::info!(node = %r.node, task = %r.task, object = %r.object_id, version = r.version, "delivered");
        Ok(Response::new(FetchResponse { data }))
    }
}
