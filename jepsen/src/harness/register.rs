//! The register workload: reads, writes and compare-and-sets on a set of
//! keys, each key an independent register, checked for linearizability key
//! by key with the WGL checker. A write or CAS whose outcome is unknown
//! (timeout, broken connection) stays open to the end of the history, and
//! its process is retired: a process never has two operations open.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use super::client::{error_text, pb::etcdserverpb as etcd, write_error, Clients};
use super::history::{pair, read_until_ok, End, Event, Recorder, Type};
use super::Check;
use crate::check::model::{Register, RegisterOp, RegisterOut};
use crate::check::{check_partitioned, Op, Outcome};

/// Keys in use at a time.
pub const KEYS: usize = 12;
const VALUES_MAX: i64 = 5;
/// Every this often the workload moves on to fresh keys, as Jepsen's
/// independent keys do: a key's history stays short enough for the
/// linearizability search, however long the run.
pub const KEY_EPOCH_MS: u64 = 5000;

fn key(k: usize) -> String {
    format!("r/{k}")
}

fn parse_value(kv: Option<&super::client::pb::mvccpb::KeyValue>) -> Option<i64> {
    kv.and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
}

/// Draws the next operation: (f, invocation value).
pub fn generate(rng: &mut StdRng, elapsed_ms: u64) -> (String, Value) {
    let k = (elapsed_ms / KEY_EPOCH_MS) as usize * KEYS + rng.gen_range(0..KEYS);
    match rng.gen_range(0..4) {
        0 | 1 => ("read".into(), json!({"key": k, "value": null})),
        2 => (
            "write".into(),
            json!({"key": k, "value": rng.gen_range(0..VALUES_MAX)}),
        ),
        _ => (
            "cas".into(),
            json!({"key": k, "value": [rng.gen_range(0..VALUES_MAX), rng.gen_range(0..VALUES_MAX)]}),
        ),
    }
}

/// Runs an operation against `node`: its completion value, or the
/// completion type (fail: definitely not done; info: unknown) and error.
pub async fn execute(
    clients: &Clients,
    node: usize,
    f: &str,
    inv: &Value,
) -> Result<Value, (Type, String)> {
    let k = inv["key"].as_u64().unwrap_or(0) as usize;
    let mut kv = clients.kv(node);
    match f {
        "read" => kv
            .range(etcd::RangeRequest {
                key: key(k).into_bytes(),
                ..Default::default()
            })
            .await
            .map(|r| json!({"key": k, "value": parse_value(r.into_inner().kvs.first())}))
            // A read that failed changed nothing.
            .map_err(|e| (Type::Fail, error_text(&e))),
        "write" => {
            let v = inv["value"].as_i64().unwrap_or(0);
            kv.put(etcd::PutRequest {
                key: key(k).into_bytes(),
                value: v.to_string().into_bytes(),
                ..Default::default()
            })
            .await
            .map(|_| inv.clone())
            .map_err(|e| write_error(&e))
        }
        _ => {
            let from = inv["value"][0].as_i64().unwrap_or(0);
            let to = inv["value"][1].as_i64().unwrap_or(0);
            let r = kv
                .txn(etcd::TxnRequest {
                    compare: vec![etcd::Compare {
                        result: etcd::compare::CompareResult::Equal as i32,
                        target: etcd::compare::CompareTarget::Value as i32,
                        key: key(k).into_bytes(),
                        range_end: Vec::new(),
                        target_union: Some(etcd::compare::TargetUnion::Value(
                            from.to_string().into_bytes(),
                        )),
                    }],
                    success: vec![etcd::RequestOp {
                        request: Some(etcd::request_op::Request::RequestPut(etcd::PutRequest {
                            key: key(k).into_bytes(),
                            value: to.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: Vec::new(),
                })
                .await;
            match r {
                Ok(r) if r.get_ref().succeeded => Ok(inv.clone()),
                // The compare failed: a definite no.
                Ok(_) => Err((Type::Fail, "compare failed".into())),
                Err(e) => Err(write_error(&e)),
            }
        }
    }
}

/// Reads every key once more, after the final heal (part of the history).
pub async fn final_reads(clients: &Clients, rec: &Recorder, process: i64, n: usize) {
    let epoch = (rec.elapsed_ns() / 1_000_000 / KEY_EPOCH_MS) as usize;
    // The last two epochs: the workload stopped in one of them.
    for k in epoch.saturating_sub(1) * KEYS..(epoch + 1) * KEYS {
        read_until_ok(
            rec,
            process,
            "read",
            json!({"key": k, "value": null}),
            10,
            |a| async move {
                clients
                    .kv((k + a) % n)
                    .range(etcd::RangeRequest {
                        key: key(k).into_bytes(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| json!({"key": k, "value": parse_value(r.into_inner().kvs.first())}))
                    .map_err(|e| error_text(&e))
            },
        )
        .await;
    }
}

/// Pairs each invocation with its completion (by process), per key.
pub fn check(events: &[Event], budget: Duration) -> Check {
    let mut by_key: BTreeMap<i64, Vec<Op<RegisterOp, RegisterOut>>> = BTreeMap::new();
    for (inv, end) in pair(events) {
        let (outcome, complete) = match end {
            // A read that failed or may have failed changed nothing.
            End::Fail(_) => continue,
            End::Unknown(_) if inv.f == "read" => continue,
            End::Unknown(_) => (Outcome::Unknown, u64::MAX),
            End::Ok(e) => (
                Outcome::Ok(match inv.f.as_str() {
                    "read" => RegisterOut::Value(e.value["value"].as_i64()),
                    "write" => RegisterOut::Done,
                    _ => RegisterOut::Cas(true),
                }),
                e.index,
            ),
        };
        let input = match inv.f.as_str() {
            "read" => RegisterOp::Read,
            "write" => RegisterOp::Write(inv.value["value"].as_i64().unwrap_or(0)),
            _ => RegisterOp::Cas(
                inv.value["value"][0].as_i64().unwrap_or(0),
                inv.value["value"][1].as_i64().unwrap_or(0),
            ),
        };
        let k = inv.value["key"].as_i64().unwrap_or(-1);
        by_key.entry(k).or_default().push(Op {
            process: inv.process as u64,
            input,
            outcome,
            invoke: inv.index,
            complete,
            line: inv.index as usize + 1,
        });
    }
    let ops: usize = by_key.values().map(Vec::len).sum();
    let verdict = check_partitioned::<Register>(by_key.into_values().collect(), budget);
    Check::from_verdict("linearizable (register, per key)", verdict, ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: u64, process: i64, kind: Type, f: &str, value: Value) -> Event {
        Event {
            index,
            time_ns: index,
            process,
            kind,
            f: f.into(),
            value,
            error: None,
        }
    }

    #[test]
    fn a_stale_read_is_caught_and_an_unknown_write_may_land() {
        // p0 writes 3; after that completes, p1 reads nothing: stale.
        let stale = vec![
            ev(0, 0, Type::Invoke, "write", json!({"key": 1, "value": 3})),
            ev(1, 0, Type::Ok, "write", json!({"key": 1, "value": 3})),
            ev(2, 1, Type::Invoke, "read", json!({"key": 1, "value": null})),
            ev(3, 1, Type::Ok, "read", json!({"key": 1, "value": null})),
        ];
        assert_eq!(check(&stale, Duration::from_secs(5)).valid, Some(false));
        // An unknown write of 4 may take effect later: reading 4 is fine.
        let unknown = vec![
            ev(0, 0, Type::Invoke, "write", json!({"key": 1, "value": 4})),
            ev(1, 0, Type::Info, "write", json!({"key": 1, "value": 4})),
            ev(2, 1, Type::Invoke, "read", json!({"key": 1, "value": null})),
            ev(3, 1, Type::Ok, "read", json!({"key": 1, "value": null})),
            ev(4, 1, Type::Invoke, "read", json!({"key": 1, "value": null})),
            ev(5, 1, Type::Ok, "read", json!({"key": 1, "value": 4})),
        ];
        assert_eq!(check(&unknown, Duration::from_secs(5)).valid, Some(true));
    }
}
