//! Prometheus `/metrics` and `/health` over plain HTTP, on their own
//! listeners (`--listen-metrics-urls`, as etcd has it), so that scrapers and
//! load balancers need no client certificate. Both reveal counts and
//! states only, never keys or values. `/metrics` is also on the client
//! port, as etcd serves it (behind the gate: `authz::HTTP_PATHS`), with
//! Prometheus' `process_*` metrics, which `etcdctl check datascale` reads. Anyone who reaches the port may
//! connect, so the listeners have their own budget (`conn::Limits::metrics`:
//! 16 connections, closed after at most 10 s without a request), apart
//! from the client port's and storage's descriptors.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{
    register_int_counter_vec, register_int_gauge, Encoder, IntCounter, IntCounterVec, IntGauge,
    TextEncoder,
};
use secretd_store::node::Node;
use tokio::net::TcpListener;

use crate::conn::Admission;

use crate::pb::etcdserverpb::RangeRequest;
use secretd_secrets::layout::{self, Kind};

fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help).expect("metric registered once")
}

struct Gauges {
    has_leader: IntGauge,
    is_leader: IntGauge,
    term: IntGauge,
    committed: IntGauge,
    applied: IntGauge,
    db_bytes: IntGauge,
    secrets: IntGauge,
    configs: IntGauge,
    tasks: IntGauge,
    leases: IntGauge,
    watchers: IntGauge,
    keys: IntGauge,
    answer_bytes: IntGauge,
}

static GAUGES: LazyLock<Gauges> = LazyLock::new(|| Gauges {
    has_leader: gauge(
        "secretd_server_has_leader",
        "1 if this member knows a leader.",
    ),
    is_leader: gauge(
        "secretd_server_is_leader",
        "1 if this member is the leader.",
    ),
    term: gauge("secretd_raft_term", "Current raft term."),
    committed: gauge("secretd_raft_committed_index", "Raft commit index."),
    applied: gauge("secretd_raft_applied_index", "Raft applied index."),
    db_bytes: gauge(
        "secretd_mvcc_db_total_size_in_bytes",
        "Backend size (keyspace and metadata).",
    ),
    secrets: gauge("secretd_secrets", "Secrets stored."),
    configs: gauge("secretd_configs", "Configs stored."),
    tasks: gauge("secretd_tasks", "Task assignments stored."),
    leases: gauge("secretd_leases", "Leases granted."),
    watchers: gauge("secretd_watchers", "Watchers registered on this member."),
    keys: gauge(
        "secretd_mvcc_keys",
        "Keys in the keyspace, secretd's objects included.",
    ),
    answer_bytes: gauge(
        "secretd_answer_bytes_in_flight",
        "Bytes of read answers rendered and not yet sent (--max-response-bytes-in-flight).",
    ),
});

/// go-grpc-prometheus's server counters, which etcd exports on its client
/// port and clients read (the `etcd-client` crate counts successful
/// `Authenticate` calls by `grpc_server_handled_total`). Only the RPCs of
/// `authz::MATRIX` are counted, so the labels stay bounded.
static GRPC_STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_server_started_total",
        "Total number of RPCs started on the server.",
        &["grpc_type", "grpc_service", "grpc_method"]
    )
    .expect("metric registered once")
});
static GRPC_HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure.",
        &["grpc_type", "grpc_service", "grpc_method", "grpc_code"]
    )
    .expect("metric registered once")
});

/// gRPC's status codes by number, as go-grpc-prometheus names them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// `Unknown`'s place in `GRPC_CODES`.
const CODE_UNKNOWN: usize = 2;

/// One RPC's counters: `started` made with its row, each status's
/// `handled` child the first time a call ends with it (as
/// `with_label_values` would make it, so `/metrics` shows the same
/// series). Held so a call costs two atomic adds, not two label hashes
/// and lookups under the vectors' locks.
struct RpcCounters {
    labels: [&'static str; 3],
    started: IntCounter,
    handled: [std::sync::OnceLock<IntCounter>; GRPC_CODES.len()],
}

/// The counters of every RPC in `authz::MATRIX`, by path.
static RPC_COUNTERS: LazyLock<HashMap<&'static str, RpcCounters>> = LazyLock::new(|| {
    crate::authz::MATRIX
        .iter()
        .filter_map(|&(known, _)| {
            let (service, method) = known.trim_start_matches('/').split_once('/')?;
            let ty = match known {
                "/etcdserverpb.Watch/Watch" | "/etcdserverpb.Lease/LeaseKeepAlive" => "bidi_stream",
                "/etcdserverpb.Maintenance/Snapshot" | "/v3electionpb.Election/Observe" => {
                    "server_stream"
                }
                _ => "unary",
            };
            let labels = [ty, service, method];
            let counters = RpcCounters {
                labels,
                started: GRPC_STARTED.with_label_values(&labels),
                handled: Default::default(),
            };
            Some((known, counters))
        })
        .collect()
});

/// One served gRPC call, counted as started when made and as handled, with
/// its status, when `finish` sees it; a call dropped before it had one (the
/// client went away) counts as `Canceled`.
pub struct GrpcCall {
    counters: &'static RpcCounters,
    done: bool,
}

impl GrpcCall {
    /// The call to `path` (`/package.Service/Method`), if the role matrix
    /// names it.
    pub fn start(path: &str) -> Option<GrpcCall> {
        let counters = RPC_COUNTERS.get(path)?;
        counters.started.inc();
        Some(GrpcCall {
            counters,
            done: false,
        })
    }

    /// Counts the call as handled with `grpc-status` `status` (a number;
    /// anything else is `Unknown`). Only the first call counts.
    pub fn finish(&mut self, status: &[u8]) {
        if self.done {
            return;
        }
        self.done = true;
        let code = std::str::from_utf8(status)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n < GRPC_CODES.len())
            .unwrap_or(CODE_UNKNOWN);
        let c = self.counters;
        c.handled[code]
            .get_or_init(|| {
                let [ty, service, method] = c.labels;
                GRPC_HANDLED.with_label_values(&[ty, service, method, GRPC_CODES[code]])
            })
            .inc();
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.finish(b"1");
    }
}

fn count(node: &Node, prefix: Vec<u8>) -> i64 {
    let req = RangeRequest {
        range_end: layout::prefix_end(&prefix),
        key: prefix,
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    node.mvcc().range(&req).map(|(r, _)| r.count).unwrap_or(-1)
}

fn render(node: &Node) -> String {
    let g = &*GAUGES;
    let st = node.status();
    g.has_leader.set(i64::from(st.leader != 0));
    g.is_leader.set(i64::from(st.is_leader));
    g.term.set(st.term as i64);
    g.committed.set(st.commit_index as i64);
    g.applied.set(st.applied_index as i64);
    g.db_bytes.set(st.db_size_bytes);
    g.secrets
        .set(count(node, layout::object_prefix(Kind::Secret)));
    g.configs
        .set(count(node, layout::object_prefix(Kind::Config)));
    g.tasks.set(count(node, layout::task_prefix()));
    g.leases.set(node.mvcc().lessor().len() as i64);
    g.watchers.set(node.hub().watcher_count() as i64);
    g.keys.set(node.mvcc().key_count() as i64);
    g.answer_bytes.set(node.mvcc().answers().in_flight() as i64);
    // Make sure the store's histograms exist even before their first use.
    for h in [
        &*secretd_store::metrics::FSYNC_SECONDS,
        &*secretd_store::metrics::APPLY_SECONDS,
        &*secretd_store::metrics::WATCH_PUBLISH_SECONDS,
    ] {
        let _ = h.get_sample_count();
    }
    let _ = secretd_store::metrics::LEADER_CHANGES.get();
    let _ = secretd_store::metrics::PROPOSALS_COMMITTED.get();
    let _ = secretd_store::metrics::APPLY_REFUSED_ENTRIES.get();
    let _ = secretd_store::metrics::SLOW_READ_INDEXES.get();
    let _ = secretd_store::metrics::ANSWERS_REFUSED.get();
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        return format!("# cannot encode metrics: {e}\n");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The `/metrics` answer, on the metrics listeners and (gated, as etcd
/// serves it there) on the client port.
pub fn response(node: &Node) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        render(node),
    )
        .into_response()
}

/// etcd's `/health`: healthy when this member has a leader, no alarm is
/// raised and its storage has not failed.
pub fn health(node: &Node) -> (StatusCode, String) {
    let st = node.status();
    let reason = if let Some(f) = st.fatal {
        format!("storage failed: {f}")
    } else if st.leader == 0 {
        "no leader".to_string()
    } else if let Some(a) = node.alarm_errors().first() {
        format!("alarm raised: {a}")
    } else {
        String::new()
    };
    let ok = reason.is_empty();
    let body = serde_json::json!({"health": if ok { "true" } else { "false" }, "reason": reason});
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body.to_string())
}

/// Serves `/metrics` and `/health` on each listener until the process
/// ends (or the returned tasks are aborted), every connection admitted
/// against `adm`.
pub fn spawn(
    listeners: Vec<TcpListener>,
    node: Arc<Node>,
    adm: &Arc<Admission>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for l in listeners {
        let (n1, n2) = (node.clone(), node.clone());
        let app = axum::Router::new()
            .route("/metrics", get(move || async move { response(&n1) }))
            .route(
                "/health",
                get(move || async move {
                    let (code, body) = health(&n2);
                    (
                        code,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }),
            );
        let adm = adm.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let (tcp, _, slot) = crate::conn::accept(&l, &adm).await;
                let (app, idle_ms) = (app.clone(), adm.limits.idle_ms);
                tokio::spawn(async move {
                    secretd_fuse::health::serve_http1(tcp, app, idle_ms).await;
                    drop(slot);
                });
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(method: &str, code: &str) -> u64 {
        GRPC_HANDLED
            .with_label_values(&["unary", "etcdserverpb.KV", method, code])
            .get()
    }

    #[test]
    fn a_call_is_counted_once_with_its_status_by_its_held_counters() {
        assert_eq!(GRPC_CODES[CODE_UNKNOWN], "Unknown");
        let started = || {
            GRPC_STARTED
                .with_label_values(&["unary", "etcdserverpb.KV", "Compact"])
                .get()
        };
        let (s0, ok0, unknown0, canceled0) = (
            started(),
            handled("Compact", "OK"),
            handled("Compact", "Unknown"),
            handled("Compact", "Canceled"),
        );
        let mut ok = GrpcCall::start("/etcdserverpb.KV/Compact").expect("a matrix row");
        ok.finish(b"0");
        ok.finish(b"5"); // only the first status counts
        drop(ok);
        GrpcCall::start("/etcdserverpb.KV/Compact")
            .expect("a matrix row")
            .finish(b"not a number");
        GrpcCall::start("/etcdserverpb.KV/Compact")
            .expect("a matrix row")
            .finish(b"17"); // past the last code
        drop(GrpcCall::start("/etcdserverpb.KV/Compact")); // no status: Canceled
        assert_eq!(started() - s0, 4);
        assert_eq!(handled("Compact", "OK") - ok0, 1);
        assert_eq!(handled("Compact", "Unknown") - unknown0, 2);
        assert_eq!(handled("Compact", "Canceled") - canceled0, 1);
        assert!(GrpcCall::start("/etcdserverpb.KV/NotAnRpc").is_none());
    }
}
