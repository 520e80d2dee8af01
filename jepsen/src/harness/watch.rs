//! The watch workload: writers put unique values under `w/` while watchers,
//! one per node, watch the prefix from revision 1. A watcher whose stream
//! breaks or goes silent resumes from the last revision it saw plus one, on
//! the next node; each resumed stream is checked as a watcher of its own.
//! After the final heal every watcher must catch up to the last write
//! (progress), and a fresh watch from revision 1 is the committed history
//! the guarantees are checked against (`check::watch`); every acknowledged
//! put must be in it at its revision.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::client::{pb::etcdserverpb as etcd, pb::mvccpb, write_error, Clients};
use super::history::{Event as HEvent, Type};
use super::Check;
use crate::check::watch::{self, Event, Kind, Response, WatcherLog};

const PREFIX: &str = "w/";
const PREFIX_END: &str = "w0";
const KEYS: usize = 10;
/// A watcher that hears nothing for this long while writes go on resumes
/// elsewhere.
const SILENCE_MS: u64 = 4000;
/// After the final heal, how long watchers get to catch up.
pub const CATCH_UP_MS: u64 = 20_000;
/// Events one watcher may hold (bounds memory on long runs).
const EVENTS_MAX: usize = 2_000_000;

/// Draws the next put: (f, invocation value).
pub fn generate(rng: &mut StdRng, token: &str) -> (String, Value) {
    let k = format!("{PREFIX}{}", rng.gen_range(0..KEYS));
    ("put".into(), json!({"key": k, "value": token}))
}

pub async fn execute(clients: &Clients, node: usize, inv: &Value) -> Result<Value, (Type, String)> {
    let k = inv["key"].as_str().unwrap_or("").to_string();
    let token = inv["value"].as_str().unwrap_or("").to_string();
    clients
        .kv(node)
        .put(etcd::PutRequest {
            key: k.clone().into_bytes(),
            value: token.clone().into_bytes(),
            ..Default::default()
        })
        .await
        .map(|r| {
            json!({"key": k, "value": token, "revision": r.into_inner().header.map(|h| h.revision)})
        })
        .map_err(|e| write_error(&e))
}

fn convert(events: &[mvccpb::Event]) -> Vec<Event> {
    events
        .iter()
        .filter_map(|e| {
            let kv = e.kv.as_ref()?;
            let del = e.r#type == mvccpb::event::EventType::Delete as i32;
            Some(Event {
                revision: kv.mod_revision,
                key: String::from_utf8_lossy(&kv.key).into_owned(),
                kind: if del { Kind::Delete } else { Kind::Put },
                value: (!del).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
            })
        })
        .collect()
}

pub type Logs = Arc<Mutex<Vec<WatcherLog>>>;

/// One watcher: streams, resumes, logs. Ends when `until()` says its last
/// seen revision is enough, or `stop` is set and it cannot go on.
pub async fn watcher(
    clients: Clients,
    first_node: usize,
    name: String,
    logs: Logs,
    stop: Arc<std::sync::atomic::AtomicBool>,
    target: Arc<std::sync::atomic::AtomicI64>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let n = clients.urls.len();
    let mut node = first_node;
    let mut segment = 0;
    let mut at = Position {
        next_rev: 1,
        held: 0,
    };
    let done = |next: i64| {
        let t = target.load(Relaxed);
        t > 0 && next > t
    };
    loop {
        if done(at.next_rev) || (stop.load(Relaxed) && target.load(Relaxed) < 0) {
            return;
        }
        segment += 1;
        let idx = new_segment(
            &logs,
            format!("{name}.{segment}@n{}", node + 1),
            at.next_rev,
        );
        let Ok(mut client) = clients.watch(node) else {
            return;
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.send(create_request(at.next_rev)).await;
        let stream = tokio::time::timeout(
            Duration::from_millis(SILENCE_MS),
            client.watch(tokio_stream_from(rx)),
        )
        .await;
        if let Ok(Ok(resp)) = stream {
            if follow(resp.into_inner(), &logs, idx, &mut at, &done).await {
                return;
            }
        }
        drop(tx);
        node = (node + 1) % n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a watcher is: the next revision it needs, and events held so far.
struct Position {
    next_rev: i64,
    held: usize,
}

/// Starts a new log segment (one watch stream) and returns its index.
fn new_segment(logs: &Logs, name: String, start_revision: i64) -> usize {
    let mut l = logs.lock().unwrap_or_else(|e| e.into_inner());
    l.push(WatcherLog {
        name,
        key: PREFIX.into(),
        range_end: PREFIX_END.into(),
        start_revision,
        responses: Vec::new(),
    });
    l.len() - 1
}

fn create_request(start_revision: i64) -> etcd::WatchRequest {
    etcd::WatchRequest {
        request_union: Some(etcd::watch_request::RequestUnion::CreateRequest(
            etcd::WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec(),
                range_end: PREFIX_END.as_bytes().to_vec(),
                start_revision,
                ..Default::default()
            },
        )),
    }
}

/// Logs a stream's responses until an error, a cancel, or silence (then
/// the watcher resumes elsewhere). True when the watcher is finished.
async fn follow(
    mut s: tonic::Streaming<etcd::WatchResponse>,
    logs: &Logs,
    idx: usize,
    at: &mut Position,
    done: &(dyn Fn(i64) -> bool + Sync),
) -> bool {
    while let Ok(Some(Ok(r))) =
        tokio::time::timeout(Duration::from_millis(SILENCE_MS), s.next()).await
    {
        if r.canceled {
            break;
        }
        if r.events.is_empty() {
            continue;
        }
        let events = convert(&r.events);
        if let Some(m) = events.iter().map(|e| e.revision).max() {
            at.next_rev = at.next_rev.max(m + 1);
        }
        at.held += events.len();
        logs.lock().unwrap_or_else(|e| e.into_inner())[idx]
            .responses
            .push(Response {
                revision: r.header.map(|h| h.revision).unwrap_or(0),
                events,
                progress: false,
            });
        if done(at.next_rev) || at.held > EVENTS_MAX {
            return true;
        }
    }
    false
}

/// An mpsc receiver as the request stream of a watch: the stream stays
/// open while the sender lives.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<etcd::WatchRequest>,
) -> impl futures::Stream<Item = etcd::WatchRequest> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// The committed history of the prefix up to `upto`: a fresh watch from
/// revision 1 on a healthy cluster.
pub async fn committed(clients: &Clients, upto: i64) -> Option<Vec<Event>> {
    for node in 0..clients.urls.len() {
        let logs: Logs = Arc::new(Mutex::new(Vec::new()));
        let target = Arc::new(std::sync::atomic::AtomicI64::new(upto));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let w = watcher(
            clients.clone(),
            node,
            "truth".into(),
            logs.clone(),
            stop,
            target,
        );
        if tokio::time::timeout(Duration::from_millis(CATCH_UP_MS), w)
            .await
            .is_err()
        {
            continue;
        }
        let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
        let events: Vec<Event> = logs
            .iter()
            .flat_map(|l| l.responses.iter().flat_map(|r| r.events.clone()))
            .filter(|e| e.revision <= upto)
            .collect();
        if events.last().map(|e| e.revision) == Some(upto) {
            return Some(events);
        }
    }
    None
}

pub fn check(
    events: &[HEvent],
    logs: &[WatcherLog],
    truth: Option<&[Event]>,
    target: i64,
) -> Check {
    let name = "watch guarantees + agreement + no lost put";
    let Some(truth) = truth else {
        return Check {
            name: name.into(),
            valid: None,
            ops: logs.len(),
            detail: "could not read the committed history after the heal".into(),
        };
    };
    let mut problems: Vec<String> = watch::check(logs, truth)
        .into_iter()
        .map(|v| format!("{}: {}: {}", v.watcher, v.guarantee, v.detail))
        .collect();
    problems.extend(progress_problems(logs, target));
    let acked = lost_puts(events, truth, &mut problems);
    Check {
        name: name.into(),
        valid: Some(problems.is_empty()),
        ops: acked,
        detail: if problems.is_empty() {
            format!(
                "{} watch streams, {} committed events, {acked} acknowledged puts",
                logs.len(),
                truth.len()
            )
        } else {
            problems.into_iter().take(20).collect::<Vec<_>>().join("\n")
        },
    }
}

/// Progress: each watcher (its last segment) reached the final write.
fn progress_problems(logs: &[WatcherLog], target: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last_seen: std::collections::BTreeMap<String, i64> = Default::default();
    for l in logs {
        let base = l.name.split('.').next().unwrap_or("").to_string();
        let seen = l
            .responses
            .iter()
            .flat_map(|r| r.events.iter().map(|e| e.revision))
            .max()
            .unwrap_or(l.start_revision - 1);
        let e = last_seen.entry(base).or_insert(0);
        *e = (*e).max(seen);
    }
    for (w, seen) in &last_seen {
        if *seen < target {
            problems.push(format!(
                "{w}: progress: saw up to revision {seen}, never {target} (the last write), within {CATCH_UP_MS} ms of the heal"
            ));
        }
    }
    problems
}

/// Acknowledged puts are committed at their revision: each one that is
/// not is a problem. How many puts were acknowledged.
fn lost_puts(events: &[HEvent], truth: &[Event], problems: &mut Vec<String>) -> usize {
    let set: std::collections::HashSet<(i64, &str, Option<&str>)> = truth
        .iter()
        .map(|e| (e.revision, e.key.as_str(), e.value.as_deref()))
        .collect();
    let mut acked = 0;
    for e in events.iter().filter(|e| e.kind == Type::Ok && e.f == "put") {
        acked += 1;
        let rev = e.value["revision"].as_i64().unwrap_or(0);
        let k = e.value["key"].as_str().unwrap_or("");
        let v = e.value["value"].as_str();
        if !set.contains(&(rev, k, v)) {
            problems.push(format!(
                "lost write: acknowledged put {k}={} at revision {rev} (line {}) is not in the committed history",
                v.unwrap_or(""),
                e.index + 1
            ));
        }
    }
    acked
}
