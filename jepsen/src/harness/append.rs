//! The append workload: transactions of one to three micro-operations
//! (read a list, append a unique element to a list) over a few keys. Each
//! is one optimistic etcd txn: read the keys, then commit with compares on
//! their mod revisions (a failed compare is a definite failure). Checked
//! for strict serializability through the txns' revisions
//! (`check::append`), plus lost and phantom writes against a final read.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::client::{error_text, pb::etcdserverpb as etcd, write_error, Clients};
use super::history::{pair, read_until_ok, End, Event, Recorder, Type};
use super::Check;
use crate::check::append::{self, Txn};

pub const KEYS: usize = 8;

fn key(k: usize) -> String {
    format!("a/{k}")
}

fn list(v: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(v)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn range_op(k: &str) -> etcd::RequestOp {
    etcd::RequestOp {
        request: Some(etcd::request_op::Request::RequestRange(
            etcd::RangeRequest {
                key: k.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

fn ranges(r: &etcd::TxnResponse) -> Vec<(String, Vec<u8>, i64)> {
    r.responses
        .iter()
        .filter_map(|op| match &op.response {
            Some(etcd::response_op::Response::ResponseRange(rr)) => Some(rr),
            _ => None,
        })
        .map(|rr| match rr.kvs.first() {
            Some(kv) => (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.value.clone(),
                kv.mod_revision,
            ),
            None => (String::new(), Vec::new(), 0),
        })
        .collect()
}

/// Draws the next transaction; `token` makes appended elements unique.
pub fn generate(rng: &mut StdRng, token: &str) -> (String, Value) {
    let mut micro: Vec<(bool, usize)> = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let k = rng.gen_range(0..KEYS);
        if micro.iter().all(|(_, x)| *x != k) {
            micro.push((rng.gen_bool(0.5), k));
        }
    }
    let reads: Vec<String> = micro.iter().filter(|m| !m.0).map(|m| key(m.1)).collect();
    let appends: Vec<(String, String)> = micro
        .iter()
        .filter(|m| m.0)
        .enumerate()
        .map(|(j, m)| (key(m.1), format!("{token}.{j}")))
        .collect();
    ("txn".into(), json!({"reads": reads, "appends": appends}))
}

/// Runs one transaction against `node`.
pub async fn execute(clients: &Clients, node: usize, inv: &Value) -> Result<Value, (Type, String)> {
    let reads: Vec<String> = serde_json::from_value(inv["reads"].clone()).unwrap_or_default();
    let appends = pairs(&inv["appends"]);
    let keys: Vec<String> = reads
        .iter()
        .cloned()
        .chain(appends.iter().map(|(k, _)| k.clone()))
        .collect();
    let mut kv = clients.kv(node);
    // 1. Read every key involved, at one revision.
    let first = kv
        .txn(etcd::TxnRequest {
            success: keys.iter().map(|k| range_op(k)).collect(),
            ..Default::default()
        })
        .await;
    let first = match first {
        Ok(r) => r.into_inner(),
        Err(e) => return Err((Type::Fail, error_text(&e))),
    };
    let state = ranges(&first);
    let revision = first.header.as_ref().map(|h| h.revision).unwrap_or(0);
    if appends.is_empty() {
        let seen: Vec<(String, Vec<String>)> = keys
            .iter()
            .zip(&state)
            .map(|(k, (_, v, _))| (k.clone(), list(v)))
            .collect();
        return Ok(json!({"revision": revision, "reads": seen, "appends": appends}));
    }
    // 2. Commit if nothing changed since.
    let r = kv.txn(commit(&keys, &reads, &appends, &state)).await;
    match r {
        Ok(r) if r.get_ref().succeeded => {
            let r = r.into_inner();
            let seen: Vec<(String, Vec<String>)> = reads
                .iter()
                .zip(ranges(&r))
                .map(|(k, (_, v, _))| (k.clone(), list(&v)))
                .collect();
            let revision = r.header.map(|h| h.revision).unwrap_or(0);
            Ok(json!({"revision": revision, "reads": seen, "appends": appends}))
        }
        Ok(_) => Err((Type::Fail, "conflict".into())),
        Err(e) => Err(write_error(&e)),
    }
}

/// The txn that appends to the lists read at `state` (in the order of
/// `keys`) and reads `reads` again, if no key changed since.
fn commit(
    keys: &[String],
    reads: &[String],
    appends: &[(String, String)],
    state: &[(String, Vec<u8>, i64)],
) -> etcd::TxnRequest {
    let compare = keys
        .iter()
        .zip(state)
        .map(|(k, (_, _, m))| etcd::Compare {
            result: etcd::compare::CompareResult::Equal as i32,
            target: etcd::compare::CompareTarget::Mod as i32,
            key: k.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(etcd::compare::TargetUnion::ModRevision(*m)),
        })
        .collect();
    let mut success: Vec<etcd::RequestOp> = reads.iter().map(|k| range_op(k)).collect();
    for (k, v) in appends {
        let idx = keys.iter().position(|x| x == k).unwrap_or(0);
        let mut value = state[idx].1.clone();
        if !value.is_empty() {
            value.push(b' ');
        }
        value.extend_from_slice(v.as_bytes());
        success.push(etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest {
                key: k.as_bytes().to_vec(),
                value,
                ..Default::default()
            })),
        });
    }
    etcd::TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    }
}

/// Reads every list after the final heal.
pub async fn final_reads(clients: &Clients, rec: &Recorder, process: i64, n: usize) {
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let keys = &keys;
    read_until_ok(
        rec,
        process,
        "final-read",
        json!(keys),
        20,
        |a| async move {
            let r = clients
                .kv(a % n)
                .txn(etcd::TxnRequest {
                    success: keys.iter().map(|k| range_op(k)).collect(),
                    ..Default::default()
                })
                .await
                .map_err(|e| error_text(&e))?;
            let lists: BTreeMap<String, Vec<String>> = keys
                .iter()
                .zip(ranges(r.get_ref()))
                .map(|(k, (_, v, _))| (k.clone(), list(&v)))
                .collect();
            Ok(json!(lists))
        },
    )
    .await;
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or("").to_string(),
                        p[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn check(events: &[Event]) -> Check {
    let mut txns = Vec::new();
    let mut finals: Option<BTreeMap<String, Vec<String>>> = None;
    for (inv, end) in pair(events) {
        if inv.f == "final-read" {
            if let End::Ok(e) = end {
                finals = serde_json::from_value(e.value.clone()).ok();
            }
            continue;
        }
        let (revision, complete, reads) = match end {
            End::Fail(_) => continue,
            End::Unknown(_) => (None, u64::MAX, Vec::new()),
            End::Ok(e) => (
                e.value["revision"].as_i64(),
                e.index,
                e.value["reads"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|p| {
                                (
                                    p[0].as_str().unwrap_or("").to_string(),
                                    serde_json::from_value(p[1].clone()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        };
        txns.push(Txn {
            line: inv.index as usize + 1,
            revision,
            invoke: inv.index,
            complete,
            reads,
            appends: pairs(&inv.value["appends"]),
        });
    }
    let name = "strict serializable (append, by revision)";
    let Some(finals) = finals else {
        return Check {
            name: name.into(),
            valid: None,
            ops: txns.len(),
            detail: "no final read succeeded: cannot check".into(),
        };
    };
    let anomalies = append::check(&txns, &finals);
    Check {
        name: name.into(),
        valid: Some(anomalies.is_empty()),
        ops: txns.len(),
        detail: if anomalies.is_empty() {
            format!("{} transactions", txns.len())
        } else {
            anomalies
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        },
    }
}
