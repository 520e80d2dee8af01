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

/// Whether a change to `key` (`put`: the value written; `None`: deleted)
/// may change what `node` is owed, given `last`, the state it was last
/// sent. False only when it certainly cannot: what a node is owed is read
/// from task records and the records of the objects its tasks use, so a
/// change elsewhere (another node's task, an object none of its tasks use,
/// names, refs, keys, settings) leaves it alone. Every agent stream was
/// woken by every change and scanned every task (D14).
pub fn concerns(last: &AgentState, node: &str, key: &[u8], put: Option<&[u8]>) -> bool {
    use prost::Message as _;
    if let Some(id) = key.strip_prefix(crate::layout::task_prefix().as_slice()) {
        if last.tasks.iter().any(|t| t.as_bytes() == id) {
            return true;
        }
        // Not one of its tasks: only a new one for this node matters.
        return put.is_some_and(|v| {
            crate::pb::secretstore::Task::decode(v).map_or(true, |t| t.node == node)
        });
    }
    for kind in [Kind::Secret, Kind::Config] {
        if let Some(id) = crate::layout::id_of_object_key(kind, key) {
            let secret = kind == Kind::Secret;
            return last
                .files
                .iter()
                .any(|f| f.secret == secret && f.object_id == id);
        }
    }
    false
}

/// Splits a state into parts of at most `part_bytes_max` encoded bytes,
/// between tasks: a task's name, files and environment stay in one part
/// (a task larger than the bound goes alone; `task create` bounds a task
/// by the request size). Every part carries the state's revision; all but
/// the last say `more`. A state that fits is one part, itself.
pub fn parts(state: AgentState, part_bytes_max: usize) -> Vec<AgentState> {
    use prost::Message as _;
    if state.encoded_len() <= part_bytes_max {
        return vec![state];
    }
    let revision = state.revision;
    let mut files: std::collections::HashMap<String, Vec<AgentFile>> = Default::default();
    for f in state.files {
        files.entry(f.task.clone()).or_default().push(f);
    }
    let mut envs: std::collections::HashMap<String, AgentTaskEnv> = state
        .envs
        .into_iter()
        .map(|e| (e.task.clone(), e))
        .collect();
    let fresh = || AgentState {
        revision,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut part = fresh();
    for task in state.tasks {
        let mut one = fresh();
        one.files = files.remove(&task).unwrap_or_default();
        one.envs.extend(envs.remove(&task));
        one.tasks.push(task);
        let grown = part.encoded_len() + one.encoded_len();
        if !part.tasks.is_empty() && grown > part_bytes_max {
            out.push(std::mem::replace(&mut part, fresh()));
        }
        part.tasks.extend(one.tasks);
        part.files.extend(one.files);
        part.envs.extend(one.envs);
    }
    out.push(part);
    let last = out.len() - 1;
    for p in &mut out[..last] {
        p.more = true;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn state(tasks: usize, env_bytes: usize) -> AgentState {
        let mut s = AgentState {
            revision: 42,
            ..Default::default()
        };
        for t in 0..tasks {
            let task = format!("t{t:03}");
            s.tasks.push(task.clone());
            for f in 0..3 {
                s.files.push(AgentFile {
                    task: task.clone(),
                    path: format!("f{f}"),
                    object_id: format!("o{t}-{f}"),
                    ..Default::default()
                });
            }
            if t % 2 == 0 {
                s.envs.push(AgentTaskEnv {
                    task: task.clone(),
                    env: [("BIG".to_string(), "x".repeat(env_bytes))].into(),
                });
            }
        }
        s
    }

    /// D10: forty tasks with 60 KB of environment each made a state past
    /// one message, and the agent applied nothing again (a removed task's
    /// secret stayed in its mount). In parts, every part fits, tasks stay
    /// whole, and the parts put together are the state.
    #[test]
    fn only_changes_to_its_tasks_and_their_objects_concern_a_node() {
        use crate::layout::{self, Kind};
        use crate::pb::secretstore::Task;
        use prost::Message as _;
        let last = state(2, 10);
        let task = |node: &str| {
            Task {
                node: node.into(),
                ..Default::default()
            }
            .encode_to_vec()
        };
        let on = |k: Vec<u8>, v: Option<&[u8]>| concerns(&last, "n1", &k, v);
        // Its tasks, changed or removed; a new task for it.
        assert!(on(layout::task_key("t000"), Some(&task("n1"))));
        assert!(on(layout::task_key("t001"), None));
        assert!(on(layout::task_key("new"), Some(&task("n1"))));
        // Another node's task, written or removed.
        assert!(!on(layout::task_key("other"), Some(&task("n2"))));
        assert!(!on(layout::task_key("other"), None));
        // A record that does not decode: assume it does.
        assert!(on(layout::task_key("other"), Some(b"\xff\xff")));
        // The objects its tasks use, and others.
        assert!(on(layout::object_key(Kind::Config, "o0-1"), Some(b"")));
        assert!(!on(layout::object_key(Kind::Secret, "o0-1"), Some(b"")));
        assert!(!on(layout::object_key(Kind::Config, "unused"), Some(b"")));
        assert!(!on(layout::name_key(Kind::Secret, "x"), Some(b"")));
        assert!(!on(layout::settings_key(), Some(b"")));
    }

    #[test]
    fn a_large_state_goes_in_parts_that_make_it_whole() {
        let whole = state(40, 60_000);
        let bound = 256 * 1024;
        assert!(whole.encoded_len() > bound);
        let ps = parts(whole.clone(), bound);
        assert!(ps.len() > 1);
        for (i, p) in ps.iter().enumerate() {
            assert!(p.encoded_len() <= bound, "part {i}: {}", p.encoded_len());
            assert_eq!(p.more, i + 1 < ps.len());
            assert_eq!(p.revision, 42);
            for f in &p.files {
                assert!(p.tasks.contains(&f.task), "a task's files in its part");
            }
        }
        let mut done = AgentState {
            revision: 42,
            ..Default::default()
        };
        for p in ps {
            done.tasks.extend(p.tasks);
            done.files.extend(p.files);
            done.envs.extend(p.envs);
        }
        assert!(same(&done, &whole));
        // A small state is one part, unchanged.
        let small = state(2, 10);
        assert_eq!(parts(small.clone(), bound), vec![small]);
    }
}
