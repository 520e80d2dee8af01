//! The secrets workload: create secrets (each with a task on node `n1`),
//! rotate them, and read versions back through the agent API
//! (`Agent.Fetch`, served from the answering member's own state), on every
//! member. Every data value written is unique, so a read can be traced to
//! the write that produced it. Checked: a read of (secret, version)
//! returns exactly what the acknowledged write of that version wrote (or,
//! for a version no write acknowledged, what some unacknowledged write of
//! that secret wrote); no two acknowledged writes share a version; after
//! the final heal each secret's current version is at least every
//! acknowledged one and decrypts to what was written for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::client::{error_text, pb::secretstore as ss, write_error, Clients};
use super::history::{pair, read_until_ok, End, Event, Recorder, Type};
use super::Check;

/// The node every task is assigned to (the agent identity reads use).
const NODE: &str = "n1";
/// Secrets tracked at most (creates stop past it; rotations go on).
const SECRETS_MAX: usize = 64;

/// Secrets that exist and have a task: (id, task, highest acknowledged version).
#[derive(Clone, Default)]
pub struct Known(Arc<Mutex<Vec<(String, String, u64)>>>);

impl Known {
    fn pick(&self, rng: &mut StdRng) -> Option<(String, String, u64)> {
        let k = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (!k.is_empty()).then(|| k[rng.gen_range(0..k.len())].clone())
    }

    fn acked(&self, id: &str, version: u64) {
        let mut k = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = k.iter_mut().find(|e| e.0 == id) {
            e.2 = e.2.max(version);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn all(&self) -> Vec<(String, String, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The task pinned to version 1 beside the following task `task`.
fn pinned_task(task: &str) -> String {
    format!("jp-{}", task.trim_start_matches("jt-"))
}

pub fn generate(rng: &mut StdRng, token: &str, known: &Known) -> (String, Value) {
    let roll = rng.gen_range(0..10);
    match known.pick(rng) {
        Some((id, task, top)) if roll >= 2 || known.len() >= SECRETS_MAX => {
            if roll < 6 {
                (
                    "rotate".into(),
                    json!({"id": id, "data": format!("d-{token}")}),
                )
            } else {
                // A node may fetch only what its tasks serve now: version 1
                // through the task pinned to it, the newest acknowledged
                // version through the task that follows the secret (which
                // fails, harmlessly, if a rotation nobody acknowledged yet
                // moved it on).
                let (version, task) = if top > 1 && rng.gen_bool(0.5) {
                    (1, pinned_task(&task))
                } else {
                    (top.max(1), task)
                };
                (
                    "read".into(),
                    json!({"id": id, "task": task, "version": version}),
                )
            }
        }
        _ => (
            "create".into(),
            json!({"name": format!("js-{token}"), "data": format!("d-{token}")}),
        ),
    }
}

type Outcome = Result<Value, (Type, String)>;

pub async fn execute(
    clients: &Clients,
    node: usize,
    f: &str,
    inv: &Value,
    known: &Known,
) -> Outcome {
    let ch = clients.channel(node);
    let s = |k: &str| inv[k].as_str().unwrap_or("").to_string();
    match f {
        "create" => create(ch, &s("name"), &s("data"), known).await,
        "rotate" => {
            let r = ss::secrets_client::SecretsClient::new(ch)
                .rotate(ss::RotateRequest {
                    name_or_id: s("id"),
                    data: s("data").into_bytes(),
                })
                .await
                .map_err(|e| write_error(&e))?
                .into_inner();
            known.acked(&r.id, r.version);
            Ok(json!({"id": r.id, "version": r.version, "data": s("data")}))
        }
        _ => {
            let version = inv["version"].as_u64().unwrap_or(1);
            let data = ss::agent_client::AgentClient::new(ch)
                .fetch(ss::FetchRequest {
                    node: NODE.into(),
                    task: s("task"),
                    secret: true,
                    object_id: s("id"),
                    version,
                })
                .await
                // A read changes nothing: any error is a failure.
                .map_err(|e| (Type::Fail, error_text(&e)))?
                .into_inner()
                .data;
            Ok(json!({"id": s("id"), "version": version, "data": String::from_utf8_lossy(&data)}))
        }
    }
}

/// A task on the test's node serving `id` (the current version, or
/// `version` pinned).
fn task_for(task: String, id: &str, version: u64) -> ss::Task {
    ss::Task {
        id: task,
        node: NODE.into(),
        secrets: vec![ss::Mount {
            source: id.to_string(),
            target: "s".into(),
            mode: 0o400,
            version,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Creates a secret, then the tasks that let the agent API read it.
async fn create(ch: Channel, name: &str, data: &str, known: &Known) -> Outcome {
    let id = ss::secrets_client::SecretsClient::new(ch.clone())
        .create(ss::CreateRequest {
            name: name.to_string(),
            labels: Default::default(),
            data: data.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|e| write_error(&e))?
        .into_inner()
        .id;
    // The task lets the agent API read it; a failure here leaves a secret
    // nobody reads, which the check does not mind.
    let task = format!("jt-{name}");
    let mut tasks = ss::tasks_client::TasksClient::new(ch);
    let t = tasks.create(task_for(task.clone(), &id, 0)).await;
    // A second task pins version 1, so old versions stay readable (and
    // kept) after rotations.
    let _ = tasks.create(task_for(pinned_task(&task), &id, 1)).await;
    if t.is_ok() {
        known
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.clone(), task, 1));
    }
    Ok(json!({"id": id, "version": 1, "data": data}))
}

/// After the final heal: each known secret's current version, and its
/// data through the agent API.
pub async fn final_reads(clients: &Clients, rec: &Recorder, process: i64, n: usize, known: &Known) {
    for (i, (id, task, _)) in known.all().into_iter().enumerate() {
        let (id, task) = (&id, &task);
        read_until_ok(rec, process, "final-read", json!({"id": id}), 10, |a| async move {
            let ch = clients.channel((i + a) % n);
            let o = ss::secrets_client::SecretsClient::new(ch.clone())
                .inspect(ss::InspectRequest {
                    name_or_id: id.clone(),
                })
                .await
                .map_err(|e| error_text(&e))?
                .into_inner();
            let data = ss::agent_client::AgentClient::new(ch)
                .fetch(ss::FetchRequest {
                    node: NODE.into(),
                    task: task.clone(),
                    secret: true,
                    object_id: id.clone(),
                    version: o.current_version,
                })
                .await
                .map_err(|e| error_text(&e))?
                .into_inner()
                .data;
            Ok(json!({"id": id, "version": o.current_version, "data": String::from_utf8_lossy(&data)}))
        })
        .await;
    }
}

pub fn check(events: &[Event]) -> Check {
    let paired = pair(events);
    let Written {
        acked,
        unknown,
        mut problems,
    } = written(&paired);
    let explains = |id: &str, v: u64, data: &str| -> bool {
        match acked.get(id).and_then(|m| m.get(&v)) {
            Some(d) => d == data,
            None => {
                unknown.get(id).is_some_and(|u| u.iter().any(|d| d == data))
                    && !acked.get(id).is_some_and(|m| m.values().any(|d| d == data))
            }
        }
    };
    let mut reads = 0;
    let mut finals = 0;
    for (inv, end) in &paired {
        let End::Ok(e) = end else { continue };
        if inv.f != "read" && inv.f != "final-read" {
            continue;
        }
        let id = e.value["id"].as_str().unwrap_or("");
        let v = e.value["version"].as_u64().unwrap_or(0);
        let data = e.value["data"].as_str().unwrap_or("");
        if inv.f == "read" {
            reads += 1;
        } else {
            finals += 1;
            if let Some(top) = acked.get(id).and_then(|m| m.keys().next_back()) {
                if v < *top {
                    problems.push(format!(
                        "lost write: secret {id} is at version {v} after the heal, but version {top} was acknowledged"
                    ));
                }
            }
        }
        if !explains(id, v, data) {
            problems.push(format!(
                "read at line {}: secret {id} version {v} decrypted to {data:?}, which no write of that version wrote",
                inv.index + 1
            ));
        }
    }
    let name = "secrets: every version decrypts to what was written";
    Check {
        name: name.into(),
        valid: Some(problems.is_empty()),
        ops: reads,
        detail: if problems.is_empty() {
            format!(
                "{} secrets, {} acknowledged versions, {reads} reads, {finals} final reads",
                acked.len(),
                acked.values().map(BTreeMap::len).sum::<usize>()
            )
        } else {
            problems.into_iter().take(20).collect::<Vec<_>>().join("\n")
        },
    }
}

/// What the history says was written.
struct Written {
    /// id -> version -> acknowledged data.
    acked: HashMap<String, BTreeMap<u64, String>>,
    /// id -> data of rotations whose outcome is unknown.
    unknown: HashMap<String, Vec<String>>,
    /// A version acknowledged twice is a lost write already.
    problems: Vec<String>,
}

fn written(paired: &[(&Event, End<'_>)]) -> Written {
    let mut acked: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    let mut unknown: HashMap<String, Vec<String>> = HashMap::new();
    let mut problems = Vec::new();
    for (inv, end) in paired {
        match (inv.f.as_str(), end) {
            ("create" | "rotate", End::Ok(e)) => {
                let id = e.value["id"].as_str().unwrap_or("").to_string();
                let v = e.value["version"].as_u64().unwrap_or(0);
                let data = e.value["data"].as_str().unwrap_or("").to_string();
                if let Some(prev) = acked.entry(id.clone()).or_default().insert(v, data.clone()) {
                    problems.push(format!(
                        "lost write: secret {id} version {v} acknowledged twice ({prev} and {data}, line {})",
                        inv.index + 1
                    ));
                }
            }
            ("rotate", End::Unknown(_)) => unknown
                .entry(inv.value["id"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(inv.value["data"].as_str().unwrap_or("").to_string()),
            _ => {}
        }
    }
    Written {
        acked,
        unknown,
        problems,
    }
}
