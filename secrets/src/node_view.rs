//! What one node's agent may see and fetch: the node's tasks with the file
//! each gets (and the version to serve), one of its tasks whole (for
//! `agent exec`), and the data of exactly those files. Who is asking (the node certificate) is the API's concern; this
//! module decides what that node is owed.
//!
//! Both read this member's applied state without a ReadIndex round: the
//! agent's stream reacts to changes this member has applied, so local
//! reads are as fresh as the event that woke it.

use std::collections::BTreeSet;

use crate::layout::Kind;
use crate::pb::secretstore::{AgentFile, AgentState, AgentTaskEnv, FetchRequest, Mount, Task};
use crate::store::ObjectStore;
use crate::{validate, Error, Result};

/// The node's state: its tasks, and each file with the version to serve.
pub async fn node_state(store: &ObjectStore, node: &str) -> Result<AgentState> {
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
        if !t.env.is_empty() {
            out.envs.push(AgentTaskEnv {
                task: t.id.clone(),
                env: t.env.clone(),
            });
        }
        for (kind, list) in [(Kind::Secret, &t.secrets), (Kind::Config, &t.configs)] {
            for m in list {
                let version = match kind {
                    Kind::Secret if m.version != 0 => m.version,
                    Kind::Secret => *current.get(&m.source_id).ok_or_else(|| {
                        Error::internal(format!(
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
                    template_driver: m.template_driver.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// One task, for the node `node` (`None`: any node, for a listener
/// without client certificates, where every caller may do anything). A
/// task of another node is answered exactly as one that does not exist,
/// so a node learns nothing of the others' tasks. A linearizable read:
/// `agent exec` may ask right after the task was created elsewhere.
pub async fn task(store: &ObjectStore, node: Option<&str>, id: &str) -> Result<Task> {
    let t = store.task_get(id, false).await?;
    match node {
        Some(n) if t.node != n => Err(Error::NotFound {
            kind: "task",
            name: id.to_string(),
        }),
        _ => Ok(t),
    }
}

/// Two states an agent would act on the same way (the revision aside).
pub fn same(a: &AgentState, b: &AgentState) -> bool {
    a.tasks == b.tasks && a.files == b.files && a.envs == b.envs
}

/// The data of one file a node's task serves now: the pinned secret
/// version, or the current one when the task follows; a config's data.
/// Anything else, including a task that does not exist or runs on another
/// node, is refused alike (Denied), so a node learns nothing about objects
/// it is not owed.
pub async fn deliver(store: &ObjectStore, r: &FetchRequest) -> Result<Vec<u8>> {
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
        Error::Denied(format!(
            "node {} has no task {} serving {what}",
            validate::echo(&r.node),
            validate::echo(&r.task),
        ))
    };
    let task = match store.task_get(&r.task, true).await {
        Ok(t) => t,
        Err(Error::NotFound { .. }) => return Err(denied()),
        Err(e) => return Err(e),
    };
    let mounts = if r.secret {
        &task.secrets
    } else {
        &task.configs
    };
    let current = if r.secret {
        let ids = std::iter::once(r.object_id.clone()).collect();
        store
            .current_versions(&ids, true)
            .await?
            .0
            .get(&r.object_id)
            .copied()
    } else {
        None
    };
    let serves = |m: &Mount| {
        m.source_id == r.object_id
            && (!r.secret
                || (m.version != 0 && m.version == r.version)
                || (m.version == 0 && current == Some(r.version)))
    };
    if task.node != r.node || !mounts.iter().any(serves) {
        tracing::warn!(node = %r.node, task = %r.task, object = %r.object_id, version = r.version, "refused a fetch outside the node's assignments");
        return Err(denied());
    }
    let data = if r.secret {
        store
            .open_secret(&r.object_id, r.version, true)
            .await?
            .expose()
            .to_vec()
    } else {
        store.config_data(&r.object_id, true).await?
    };
    tracing::info!(node = %r.node, task = %r.task, object = %r.object_id, version = r.version, "delivered");
    Ok(data)
}
