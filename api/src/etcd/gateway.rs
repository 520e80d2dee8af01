//! etcd's JSON gateway (grpc-gateway) on the client port: what Patroni,
//! APISIX, `etcd3gw` and `curl` speak.
//!
//! `POST /v3/<route>` (and `/v3beta/<route>`) with a JSON request, answered
//! with the JSON response: proto3 JSON with the protos' own field names,
//! int64 as strings, bytes as base64 (the serde code is generated from the
//! protos, in `secretd_store::pb`). Watch, LeaseKeepAlive and Snapshot
//! answer (as does Election's Observe) a chunked stream of `{"result": ...}`
//! objects, one per line.
//! Errors have etcd's gateway shape, `{"error", "message", "code"}`, and
//! the HTTP status grpc-gateway maps the gRPC code to (both in `errors`,
//! which the gate answers refusals with too).
//!
//! Each route calls the same service as its RPC, with the caller the gate
//! found (`gate::Gate` decides a route as its RPC, `authz::GATEWAY`), so
//! the gateway adds no path around the role matrix or the reserved range.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use crate::errors::{error_body, error_response, go_error, json_response, not_found};
use crate::etcd::cluster::ClusterService;
use crate::etcd::election::ElectionService;
use crate::etcd::kv::KvService;
use crate::etcd::lease::LeaseService;
use crate::etcd::lock::LockService;
use crate::etcd::maintenance::MaintenanceService;
use crate::etcd::watch::wire::WatchOut;
use crate::etcd::watch::WatchService;
use crate::identity::Caller;
use crate::pb::etcdserverpb::{
    auth_server::Auth, cluster_server::Cluster, kv_server::Kv, lease_server::Lease,
    maintenance_server::Maintenance,
};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3lockpb::lock_server::Lock;

/// Requests one streaming call's body may carry (each a JSON object).
const STREAM_REQUESTS_MAX: usize = 1024;

/// The services the gateway calls.
#[derive(Clone)]
pub struct Services {
    pub kv: Arc<KvService>,
    pub lease: Arc<LeaseService>,
    pub cluster: Arc<ClusterService>,
    pub maintenance: Arc<MaintenanceService>,
    pub watch: Arc<WatchService>,
    pub auth: Arc<crate::etcd::auth::AuthService>,
    pub lock: Arc<LockService>,
    pub election: Arc<ElectionService>,
    pub node: Arc<secretd_store::node::Node>,
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A request as the service would get it over gRPC: the message, and the
/// caller the gate found.
fn request<T>(msg: T, caller: Option<Caller>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(c) = caller {
        r.extensions_mut().insert(c);
    }
    r
}

async fn unary<Req, Resp, F, Fut>(caller: Option<Caller>, body: Bytes, call: F) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let req = match parse::<Req>(&body) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    let resp = match call(request(req, caller)).await {
        Ok(resp) => resp,
        Err(s) => return error_response(&s),
    };
    // A read answer's charge grows with its JSON as it is written (base64
    // makes values a third larger), and goes on with it to the gate.
    let held = resp.extensions().get::<crate::gate::HeldUntilSent>();
    let mut out = ChargedJson {
        buf: Vec::new(),
        charge: held.map(|h| h.charge()),
        refused: None,
    };
    if let Err(e) = serde_json::to_writer(&mut out, resp.get_ref()) {
        return error_response(&match out.refused {
            Some(s) => s,
            None => Status::internal(e.to_string()),
        });
    }
    let mut answer = json_response(StatusCode::OK, out.buf);
    if let Some(h) = held {
        answer.extensions_mut().insert(h.clone());
    }
    answer
}

/// A JSON answer being written, charged past what its charge already
/// holds (the answer's records) as it grows.
struct ChargedJson<'a> {
    buf: Vec<u8>,
    charge: Option<&'a secretd_store::answers::Charge>,
    refused: Option<Status>,
}

impl std::io::Write for ChargedJson<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = self.charge {
            let past = (self.buf.len() + data.len()).saturating_sub(c.bytes());
            if past > 0 {
                if let Err(e) = c.add(past) {
                    self.refused = Some(crate::errors::status(e));
                    return Err(std::io::Error::other("answer budget"));
                }
            }
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The requests of a streaming call's body: JSON objects one after the
/// other, as grpc-gateway reads them.
fn parse_stream<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, Status> {
    let mut out = Vec::new();
    for item in serde_json::Deserializer::from_slice(body).into_iter::<T>() {
        if out.len() == STREAM_REQUESTS_MAX {
            return Err(Status::invalid_argument(format!(
                "at most {STREAM_REQUESTS_MAX} requests per stream"
            )));
        }
        out.push(item.map_err(|e| Status::invalid_argument(e.to_string()))?);
    }
    Ok(out)
}

/// A chunked response of `{"result": ...}` lines, ending with
/// `{"error": ...}` if the stream fails.
fn stream_response<T: Serialize + Send + 'static>(
    s: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Response {
    let lines = s.map(|item| {
        let v = match item {
            Ok(r) => serde_json::json!({ "result": r }),
            Err(e) => serde_json::json!({ "error": error_body(&e) }),
        };
        let mut b = v.to_string().into_bytes();
        b.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(b))
    });
    let mut r = Response::new(Body::from_stream(lines));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The etcd user a streaming route acts as (unary routes find it in
/// their service, from the same caller).
async fn who(
    node: &secretd_store::node::Node,
    caller: Option<axum::Extension<Caller>>,
) -> Result<crate::etcd::auth::Who, Status> {
    let caller = caller.ok_or_else(|| Status::permission_denied("no caller identity"))?;
    crate::etcd::auth::Who::from_caller(node, &caller.0).await
}

/// A streaming route: the caller as an etcd user, the body's JSON objects
/// as the request stream, the answers as `{"result": ...}` lines.
async fn streaming<Req, Resp, S>(
    node: &secretd_store::node::Node,
    caller: Option<axum::Extension<Caller>>,
    body: &[u8],
    serve: impl FnOnce(Vec<Req>, crate::etcd::auth::Who) -> S,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let who = match who(node, caller).await {
        Ok(w) => w,
        Err(e) => return error_response(&e),
    };
    match parse_stream(body) {
        Ok(reqs) => stream_response(serve(reqs, who)),
        Err(e) => error_response(&e),
    }
}

macro_rules! unary_route {
    ($router:ident, $path:expr, $svc:expr, $method:ident) => {{
        let svc = $svc.clone();
        $router = $router.route(
            $path,
            post(
                move |caller: Option<axum::Extension<Caller>>, body: Bytes| async move {
                    unary(caller.map(|c| c.0), body, |r| async move {
                        svc.$method(r).await
                    })
                    .await
                },
            ),
        );
    }};
}

/// The gateway's routes, under both of etcd's prefixes, plus `/version`,
/// `/health`, `/livez` and `/readyz`.
pub fn router(s: Services, body_bytes_max: usize) -> axum::Router {
    let mut r = axum::Router::new();
    for prefix in crate::authz::GATEWAY_PREFIXES {
        r = kv_and_lease_routes(r, &s, prefix);
        r = cluster_and_maintenance_routes(r, &s, prefix);
        r = auth_routes(r, &s, prefix);
        r = lock_and_election_routes(r, &s, prefix);
        r = stream_routes(r, &s, prefix);
    }
    public_routes(r, &s)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_bytes_max))
        .layer(axum::middleware::map_response(cors))
}

fn kv_and_lease_routes(mut r: axum::Router, s: &Services, prefix: &str) -> axum::Router {
    let p = |route: &str| format!("{prefix}{route}");
    {
        unary_route!(r, &p("kv/range"), s.kv, range);
        unary_route!(r, &p("kv/put"), s.kv, put);
        unary_route!(r, &p("kv/deleterange"), s.kv, delete_range);
        unary_route!(r, &p("kv/txn"), s.kv, txn);
        unary_route!(r, &p("kv/compaction"), s.kv, compact);
        unary_route!(r, &p("lease/grant"), s.lease, lease_grant);
        for route in ["lease/revoke", "kv/lease/revoke"] {
            unary_route!(r, &p(route), s.lease, lease_revoke);
        }
        for route in ["lease/timetolive", "kv/lease/timetolive"] {
            unary_route!(r, &p(route), s.lease, lease_time_to_live);
        }
        for route in ["lease/leases", "kv/lease/leases"] {
            unary_route!(r, &p(route), s.lease, lease_leases);
        }
    }
    r
}

fn cluster_and_maintenance_routes(mut r: axum::Router, s: &Services, prefix: &str) -> axum::Router {
    let p = |route: &str| format!("{prefix}{route}");
    {
        unary_route!(r, &p("cluster/member/add"), s.cluster, member_add);
        unary_route!(r, &p("cluster/member/remove"), s.cluster, member_remove);
        unary_route!(r, &p("cluster/member/update"), s.cluster, member_update);
        unary_route!(r, &p("cluster/member/list"), s.cluster, member_list);
        unary_route!(r, &p("cluster/member/promote"), s.cluster, member_promote);
        unary_route!(r, &p("maintenance/alarm"), s.maintenance, alarm);
        unary_route!(r, &p("maintenance/status"), s.maintenance, status);
        unary_route!(r, &p("maintenance/defragment"), s.maintenance, defragment);
        unary_route!(r, &p("maintenance/hash"), s.maintenance, hash);
        unary_route!(r, &p("maintenance/hashkv"), s.maintenance, hash_kv);
        unary_route!(
            r,
            &p("maintenance/transfer-leadership"),
            s.maintenance,
            move_leader
        );
    }
    r
}

fn auth_routes(mut r: axum::Router, s: &Services, prefix: &str) -> axum::Router {
    let p = |route: &str| format!("{prefix}{route}");
    {
        unary_route!(r, &p("auth/enable"), s.auth, auth_enable);
        unary_route!(r, &p("auth/disable"), s.auth, auth_disable);
        unary_route!(r, &p("auth/status"), s.auth, auth_status);
        unary_route!(r, &p("auth/authenticate"), s.auth, authenticate);
        unary_route!(r, &p("auth/user/add"), s.auth, user_add);
        unary_route!(r, &p("auth/user/get"), s.auth, user_get);
        unary_route!(r, &p("auth/user/list"), s.auth, user_list);
        unary_route!(r, &p("auth/user/delete"), s.auth, user_delete);
        unary_route!(r, &p("auth/user/changepw"), s.auth, user_change_password);
        unary_route!(r, &p("auth/user/grant"), s.auth, user_grant_role);
        unary_route!(r, &p("auth/user/revoke"), s.auth, user_revoke_role);
        unary_route!(r, &p("auth/role/add"), s.auth, role_add);
        unary_route!(r, &p("auth/role/get"), s.auth, role_get);
        unary_route!(r, &p("auth/role/list"), s.auth, role_list);
        unary_route!(r, &p("auth/role/delete"), s.auth, role_delete);
        unary_route!(r, &p("auth/role/grant"), s.auth, role_grant_permission);
        unary_route!(r, &p("auth/role/revoke"), s.auth, role_revoke_permission);
    }
    r
}

/// etcd 3.5's Lock and Election routes; Observe answers a stream of lines.
fn lock_and_election_routes(mut r: axum::Router, s: &Services, prefix: &str) -> axum::Router {
    let p = |route: &str| format!("{prefix}{route}");
    {
        unary_route!(r, &p("lock/lock"), s.lock, lock);
        unary_route!(r, &p("lock/unlock"), s.lock, unlock);
        unary_route!(r, &p("election/campaign"), s.election, campaign);
        unary_route!(r, &p("election/proclaim"), s.election, proclaim);
        unary_route!(r, &p("election/leader"), s.election, leader);
        unary_route!(r, &p("election/resign"), s.election, resign);
    }
    let election = s.election.clone();
    r.route(
        &p("election/observe"),
        post(
            move |caller: Option<axum::Extension<Caller>>, body: Bytes| async move {
                let req = match parse(&body) {
                    Ok(r) => r,
                    Err(e) => return error_response(&e),
                };
                match election.observe(request(req, caller.map(|c| c.0))).await {
                    Ok(stream) => stream_response(stream.into_inner()),
                    Err(e) => error_response(&e),
                }
            },
        ),
    )
}

/// Watch, LeaseKeepAlive and Snapshot: a body in, a stream of lines out.
fn stream_routes(mut r: axum::Router, s: &Services, prefix: &str) -> axum::Router {
    let p = |route: &str| format!("{prefix}{route}");
    {
        let (watch, node) = (s.watch.clone(), s.node.clone());
        r = r.route(
            &p("watch"),
            post(
                move |caller: Option<axum::Extension<Caller>>, body: Bytes| async move {
                    // The watches stay open after the body ends, as etcd
                    // keeps them, until the client goes away (`serve`
                    // outlives its requests).
                    streaming(&node, caller, &body, |reqs, who| {
                        watch
                            .serve(futures::stream::iter(reqs.into_iter().map(Ok)), who)
                            .map(|r| r.and_then(WatchOut::into_response))
                    })
                    .await
                },
            ),
        );
        let (lease, node) = (s.lease.clone(), s.node.clone());
        r = r.route(
            &p("lease/keepalive"),
            post(
                move |caller: Option<axum::Extension<Caller>>, body: Bytes| async move {
                    streaming(&node, caller, &body, |reqs, who| {
                        lease.keep_alive(futures::stream::iter(reqs.into_iter().map(Ok)), who)
                    })
                    .await
                },
            ),
        );
        let maintenance = s.maintenance.clone();
        r = r.route(
            &p("maintenance/snapshot"),
            post(
                move |caller: Option<axum::Extension<Caller>>, body: Bytes| async move {
                    let req = match parse(&body) {
                        Ok(r) => r,
                        Err(e) => return error_response(&e),
                    };
                    match maintenance
                        .snapshot(request(req, caller.map(|c| c.0)))
                        .await
                    {
                        Ok(stream) => stream_response(stream.into_inner()),
                        Err(e) => error_response(&e),
                    }
                },
            ),
        );
    }
    r
}

/// `/version`, `/health`, `/livez` and `/readyz`, and `/metrics` (which
/// the gate decides as `authz::HTTP_PATHS` says).
fn public_routes(r: axum::Router, s: &Services) -> axum::Router {
    let (node, ready, metrics) = (s.node.clone(), s.node.clone(), s.node.clone());
    r.route(
        "/metrics",
        get(move || {
            let node = metrics.clone();
            async move { crate::metrics::response(&node) }
        }),
    )
    .route(
        "/version",
        get(|| async {
            json_response(
                StatusCode::OK,
                // etcd's bytes, keys in its order.
                format!(
                    r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
                    crate::ETCD_SERVER_VERSION,
                    crate::ETCD_CLUSTER_VERSION
                )
                .into_bytes(),
            )
        }),
    )
    .route(
        "/health",
        get(move || {
            let node = node.clone();
            async move {
                let (code, body) = crate::metrics::health(&node);
                json_response(code, body.into_bytes())
            }
        }),
    )
    .route("/livez", get(|| async { (StatusCode::OK, "ok") }))
    .route(
        "/readyz",
        get(move || {
            let node = ready.clone();
            async move {
                let (code, _) = crate::metrics::health(&node);
                let text = if code == StatusCode::OK {
                    "ok"
                } else {
                    "not ready"
                };
                (code, text)
            }
        }),
    )
}

/// etcd's gateway allows any origin; browsers' preflights get the same.
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    r
}

/// What the client port answers for a path no service or route has: gRPC
/// clients get UNIMPLEMENTED, as tonic answers them; anyone else gets
/// grpc-gateway's 404, as etcd answers them.
pub async fn fallback(req: axum::extract::Request) -> Response {
    not_found(req.headers())
}

/// Request bytes a 405 reads before it answers, and for how long.
const REFUSED_BODY_BYTES_MAX: usize = 64 * 1024;
const REFUSED_BODY_WAIT_MS: u64 = 1_000;

/// A route asked with a method it does not take: Go's 405, as etcd's
/// gateway answers it. axum's own has no body, which an HTTP/2 client sees
/// as the stream closing on a bare header. The request's body is read
/// first (bounded, as the gate's refusals do): answering while the client
/// still sends makes HTTP/2 reset the stream instead.
async fn method_not_allowed(req: axum::extract::Request) -> Response {
    let drain = axum::body::to_bytes(req.into_body(), REFUSED_BODY_BYTES_MAX);
    let _ = tokio::time::timeout(
        std::time::Duration::from_millis(REFUSED_BODY_WAIT_MS),
        drain,
    )
    .await;
    go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

/// Structured fuzzing of the gateway's JSON: every request type a route
/// decodes, fed random JSON (nested up to a depth) and random bytes, a
/// fixed number of cases from a fixed seed. The property: an answer (the
/// request, or `INVALID_ARGUMENT`), never a panic or a stack overflow.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::pb::etcdserverpb::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,12}".prop_map(Value::String),
            // Field names and values the types have, so that decoding
            // goes deep rather than stopping at the first unknown field.
            prop_oneof![
                Just("key"),
                Just("range_end"),
                Just("value"),
                Just("lease"),
                Just("compare"),
                Just("success"),
                Just("failure"),
                Just("request_txn"),
                Just("request_put"),
                Just("create_request"),
                Just("ID"),
                Just("TTL"),
                Just("a2V5"),
                Just("-1"),
                Just("18446744073709551616"),
            ]
            .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(8, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("key".to_string()),
                Just("range_end".to_string()),
                Just("value".to_string()),
                Just("compare".to_string()),
                Just("success".to_string()),
                Just("failure".to_string()),
                Just("request_txn".to_string()),
                Just("request_put".to_string()),
                Just("request_range".to_string()),
                Just("create_request".to_string()),
                Just("target".to_string()),
                Just("result".to_string()),
                Just("ID".to_string()),
                Just("TTL".to_string()),
                Just("name".to_string()),
                Just("password".to_string()),
                Just("peerURLs".to_string()),
                ".{0,6}".boxed(),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn all(body: &[u8]) {
        let _ = parse::<RangeRequest>(body);
        let _ = parse::<PutRequest>(body);
        let _ = parse::<DeleteRangeRequest>(body);
        let _ = parse::<TxnRequest>(body);
        let _ = parse::<CompactionRequest>(body);
        let _ = parse::<LeaseGrantRequest>(body);
        let _ = parse::<LeaseRevokeRequest>(body);
        let _ = parse::<LeaseTimeToLiveRequest>(body);
        let _ = parse::<AuthenticateRequest>(body);
        let _ = parse::<AuthUserAddRequest>(body);
        let _ = parse::<AuthRoleGrantPermissionRequest>(body);
        let _ = parse::<MemberAddRequest>(body);
        let _ = parse::<AlarmRequest>(body);
        let _ = parse::<crate::pb::v3lockpb::LockRequest>(body);
        let _ = parse::<crate::pb::v3lockpb::UnlockRequest>(body);
        let _ = parse::<crate::pb::v3electionpb::CampaignRequest>(body);
        let _ = parse::<crate::pb::v3electionpb::ProclaimRequest>(body);
        let _ = parse::<crate::pb::v3electionpb::LeaderRequest>(body);
        let _ = parse::<crate::pb::v3electionpb::ResignRequest>(body);
        let _ = parse_stream::<WatchRequest>(body);
        let _ = parse_stream::<LeaseKeepAliveRequest>(body);
    }

    fn config() -> Config {
        Config {
            cases: 1_000,
            rng_seed: RngSeed::Fixed(0x6a7e_3a11),
            failure_persistence: None,
            ..Config::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_json_gets_an_answer(v in json()) {
            all(v.to_string().as_bytes());
        }

        #[test]
        fn random_bytes_get_an_answer(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            all(&b);
        }
    }

    /// Nesting far past what serde_json follows (128): refused, not a
    /// stack overflow; and a txn nested deeper than admission allows still
    /// parses here (admission refuses it, with its own error).
    #[test]
    fn deep_json_is_refused_and_deep_txns_reach_admission() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        all(deep.as_bytes());
        let mut txn = "{}".to_string();
        for _ in 0..40 {
            txn = format!(r#"{{"success":[{{"request_txn":{txn}}}]}}"#);
        }
        let t = parse::<TxnRequest>(txn.as_bytes()).expect("40 levels is JSON serde reads");
        assert_eq!(
            secretd_store::mvcc::txn_checks::validate_txn(&t, 128),
            Err(secretd_store::StoreError::TxnTooDeep)
        );
    }
}
