//! Bad input across the APIs, table-driven: each malformed, oversized or
//! out-of-bounds request gets a specific error (code and message), and
//! afterwards the cluster is healthy and has lost nothing.

use std::time::Duration;

use crate::common::Cluster;
use secretd_api::pb::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, CompactionRequest,
    Compare, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use secretd_api::pb::etcdserverpb::{
    maintenance_client::MaintenanceClient, AlarmRequest, AlarmType,
};
use secretd_api::pb::raftpb::{raft_client::RaftClient, FetchKekRequest, RaftBatch};
use secretd_api::pb::secretstore::{
    admin_client::AdminClient, agent_client::AgentClient, configs_client::ConfigsClient,
    secrets_client::SecretsClient, tasks_client::TasksClient, AgentWatchRequest, CreateRequest,
    FetchRequest, InspectRequest, Mount, RemoveRequest, RotateRequest, Settings, Task,
};
use tonic::Code;

fn put(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })),
    }
}

fn create(name: &str, data: &[u8]) -> CreateRequest {
    CreateRequest {
        name: name.into(),
        labels: Default::default(),
        data: data.to_vec(),
        ..Default::default()
    }
}

fn mount(source: &str, target: &str, mode: u32) -> Mount {
    Mount {
        source: source.into(),
        target: target.into(),
        mode,
        ..Default::default()
    }
}

fn task(id: &str, node: &str, secrets: Vec<Mount>, configs: Vec<Mount>) -> Task {
    Task {
        id: id.into(),
        node: node.into(),
        secrets,
        configs,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_specific_errors_and_lose_nothing() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let ch = c.channel(0).await;
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut secrets = SecretsClient::new(ch.clone());
    let mut configs = ConfigsClient::new(ch.clone());
    let mut tasks = TasksClient::new(ch.clone());
    let mut admin = AdminClient::new(ch.clone());
    let mut agent = AgentClient::new(ch.clone());
    let peer_ch = secretd_client::channel(
        &format!("http://127.0.0.1:{}", c.members[0].peer_port),
        None,
        Some(crate::common::secs(5)),
    )
    .unwrap();
    let mut raft = RaftClient::new(peer_ch);

    // What must survive every bad request below.
    c.ok(&["put", "keep", "me"]);
    secrets.create(create("db_pw", b"pw")).await.unwrap();
    configs.create(create("conf", b"c")).await.unwrap();
    tasks
        .create(task(
            "web.1",
            "n1",
            vec![mount("db_pw", "pw", 0o400)],
            vec![],
        ))
        .await
        .unwrap();
    let cluster_id = {
        let info = raft
            .cluster_info(secretd_api::pb::raftpb::ClusterInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        info.cluster_id
    };
    // Over --max-request-bytes (1.5 MiB), under the gRPC frame limit.
    let big = vec![b'x'; 1600 * 1024];
    let reserved = b"\xff\xffsecretd/obj/s/x".to_vec();
    let many_ops: Vec<RequestOp> = (0..129).map(|i| put(format!("k{i}").as_bytes())).collect();
    let many_labels = (0..65).map(|i| (format!("l{i}"), String::new())).collect();
    let many_mounts: Vec<Mount> = (0..101)
        .map(|i| mount("db_pw", &format!("t{i}"), 0o444))
        .collect();

    type Outcome = Result<(), tonic::Status>;
    fn done<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
        r.map(|_| ())
    }
    let cases: Vec<(&str, Outcome, Code, &str)> = vec![
        (
            "put without a key",
            done(kv.put(PutRequest::default()).await),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ),
        (
            "put into the reserved range",
            done(
                kv.put(PutRequest {
                    key: reserved.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "reserved for secretd's own objects",
        ),
        (
            "get of a reserved key",
            done(
                kv.range(RangeRequest {
                    key: reserved.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "reserved",
        ),
        (
            "oversized put",
            done(
                kv.put(PutRequest {
                    key: b"big".to_vec(),
                    value: big.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        ),
        (
            "txn over --max-txn-ops",
            done(
                kv.txn(TxnRequest {
                    success: many_ops.clone(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "too many operations in txn request",
        ),
        (
            "txn putting one key twice",
            done(
                kv.txn(TxnRequest {
                    success: vec![put(b"d"), put(b"d")],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "duplicate key given in txn request",
        ),
        (
            "txn compare on a reserved key",
            done(
                kv.txn(TxnRequest {
                    compare: vec![Compare {
                        key: reserved.clone(),
                        target: compare::CompareTarget::Version as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "reserved",
        ),
        (
            "range at a future revision",
            done(
                kv.range(RangeRequest {
                    key: b"keep".to_vec(),
                    revision: 1 << 40,
                    ..Default::default()
                })
                .await,
            ),
            Code::OutOfRange,
            "future revision",
        ),
        (
            "compact to a future revision",
            done(
                kv.compact(CompactionRequest {
                    revision: 1 << 40,
                    physical: false,
                })
                .await,
            ),
            Code::OutOfRange,
            "future revision",
        ),
        (
            "put with an unknown lease",
            done(
                kv.put(PutRequest {
                    key: b"l".to_vec(),
                    lease: 12345,
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "requested lease not found",
        ),
        (
            "revoke of an unknown lease",
            done(lease.lease_revoke(LeaseRevokeRequest { id: 999 }).await),
            Code::NotFound,
            "requested lease not found",
        ),
        (
            "lease with an absurd TTL",
            done(
                lease
                    .lease_grant(LeaseGrantRequest {
                        ttl: i64::MAX,
                        id: 0,
                    })
                    .await,
            ),
            Code::OutOfRange,
            "too large lease TTL",
        ),
        (
            "secret without a name",
            done(secrets.create(create("", b"x")).await),
            Code::InvalidArgument,
            "name must be provided",
        ),
        (
            "secret with a bad name",
            done(secrets.create(create("-bad", b"x")).await),
            Code::InvalidArgument,
            "invalid name, only 64",
        ),
        (
            "secret name of 65 characters",
            done(secrets.create(create(&"a".repeat(65), b"x")).await),
            Code::InvalidArgument,
            "invalid name, only 64",
        ),
        (
            "empty secret",
            done(secrets.create(create("e", b"")).await),
            Code::InvalidArgument,
            "secret data must be larger than 0 and less than 512000 bytes",
        ),
        (
            "secret of 500 KiB",
            done(secrets.create(create("e", &vec![0; 500 * 1024])).await),
            Code::InvalidArgument,
            "less than 512000 bytes",
        ),
        (
            "secret over the request limit",
            done(secrets.create(create("e", &big)).await),
            Code::InvalidArgument,
            "less than 512000 bytes",
        ),
        (
            "secret with an empty label key",
            done(
                secrets
                    .create(CreateRequest {
                        labels: [(String::new(), "v".into())].into(),
                        ..create("e", b"x")
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "label keys must not be empty",
        ),
        (
            "secret with 65 labels",
            done(
                secrets
                    .create(CreateRequest {
                        labels: many_labels,
                        ..create("e", b"x")
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "too many labels",
        ),
        (
            "duplicate secret name",
            done(secrets.create(create("db_pw", b"x")).await),
            Code::AlreadyExists,
            "secret db_pw already exists",
        ),
        (
            "inspect with an empty name",
            done(
                secrets
                    .inspect(InspectRequest {
                        name_or_id: String::new(),
                    })
                    .await,
            ),
            Code::NotFound,
            "not found",
        ),
        (
            "inspect with a slash",
            done(
                secrets
                    .inspect(InspectRequest {
                        name_or_id: "a/b".into(),
                    })
                    .await,
            ),
            Code::NotFound,
            "secret a/b not found",
        ),
        (
            "remove of an unknown secret",
            done(
                secrets
                    .remove(RemoveRequest {
                        name_or_id: "nosuch".into(),
                    })
                    .await,
            ),
            Code::NotFound,
            "secret nosuch not found",
        ),
        (
            "remove of a secret in use",
            done(
                secrets
                    .remove(RemoveRequest {
                        name_or_id: "db_pw".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "in use by the following task: web.1",
        ),
        (
            "rotate of an unknown secret",
            done(
                secrets
                    .rotate(RotateRequest {
                        name_or_id: "nosuch".into(),
                        data: b"x".to_vec(),
                    })
                    .await,
            ),
            Code::NotFound,
            "secret nosuch not found",
        ),
        (
            "rotate to empty data",
            done(
                secrets
                    .rotate(RotateRequest {
                        name_or_id: "db_pw".into(),
                        data: Vec::new(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "secret data must be larger than 0",
        ),
        (
            "config of 1000 KiB",
            done(configs.create(create("c2", &vec![0; 1000 * 1024])).await),
            Code::InvalidArgument,
            "config data must be larger than 0 and less than 1024000 bytes",
        ),
        (
            "task with a bad ID",
            done(tasks.create(task("bad id", "n1", vec![], vec![])).await),
            Code::InvalidArgument,
            "invalid task ID",
        ),
        (
            "task with a bad node",
            done(tasks.create(task("t1", "n 1", vec![], vec![])).await),
            Code::InvalidArgument,
            "invalid node name",
        ),
        (
            "task with a target escaping its directory",
            done(
                tasks
                    .create(task(
                        "t1",
                        "n1",
                        vec![mount("db_pw", "../x", 0o444)],
                        vec![],
                    ))
                    .await,
            ),
            Code::InvalidArgument,
            "invalid secret target \"../x\"",
        ),
        (
            "task with a setuid mode",
            done(
                tasks
                    .create(task("t1", "n1", vec![mount("db_pw", "x", 0o4755)], vec![]))
                    .await,
            ),
            Code::InvalidArgument,
            "invalid file mode 4755",
        ),
        (
            "task with two mounts on one target",
            done(
                tasks
                    .create(task(
                        "t1",
                        "n1",
                        vec![mount("db_pw", "x", 0o444)],
                        vec![mount("conf", "x", 0o444)],
                    ))
                    .await,
            ),
            Code::InvalidArgument,
            "used more than once",
        ),
        (
            "task with an unknown secret",
            done(
                tasks
                    .create(task("t1", "n1", vec![mount("nosuch", "x", 0o444)], vec![]))
                    .await,
            ),
            Code::NotFound,
            "secret nosuch not found",
        ),
        (
            "task pinning a config version",
            done(
                tasks
                    .create(task(
                        "t1",
                        "n1",
                        vec![],
                        vec![Mount {
                            version: 2,
                            ..mount("conf", "/c", 0o444)
                        }],
                    ))
                    .await,
            ),
            Code::InvalidArgument,
            "configs have one version",
        ),
        (
            "task with 101 mounts",
            done(tasks.create(task("t1", "n1", many_mounts, vec![])).await),
            Code::InvalidArgument,
            "at most 100 secrets and configs",
        ),
        (
            "agent watch for a bad node name",
            done(
                agent
                    .watch(AgentWatchRequest {
                        node: "../n1".into(),
                        parts: true,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "invalid node name",
        ),
        (
            "agent fetch outside the node's tasks",
            done(
                agent
                    .fetch(FetchRequest {
                        node: "n2".into(),
                        task: "web.1".into(),
                        secret: true,
                        object_id: "x".into(),
                        version: 1,
                    })
                    .await,
            ),
            Code::PermissionDenied,
            "node n2 has no task web.1",
        ),
        (
            "unknown cipher setting",
            done(
                admin
                    .update_settings(Settings {
                        secret_cipher: "rot13".into(),
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "unknown cipher \"rot13\"",
        ),
        (
            "KEK request for another cluster",
            done(
                raft.fetch_kek(FetchKekRequest {
                    cluster_id: cluster_id ^ 1,
                    from: 1,
                    generation: 1,
                })
                .await,
            ),
            Code::PermissionDenied,
            "not a member of this cluster",
        ),
        (
            "KEK request from a non-member",
            done(
                raft.fetch_kek(FetchKekRequest {
                    cluster_id,
                    from: 42,
                    generation: 1,
                })
                .await,
            ),
            Code::PermissionDenied,
            "member 2a (hex ID) is not a member",
        ),
        (
            "raft batch of garbage",
            done(
                raft.send(tokio_stream::iter(vec![RaftBatch {
                    from: 1,
                    cluster_id,
                    messages: vec![bytes::Bytes::from_static(b"\xff\xfe garbage")],
                }]))
                .await,
            ),
            Code::InvalidArgument,
            "",
        ),
        (
            "inspect with a 1 MB name",
            done(
                secrets
                    .inspect(InspectRequest {
                        name_or_id: "n".repeat(1 << 20),
                    })
                    .await,
            ),
            Code::NotFound,
            "(1048576 bytes) not found",
        ),
        (
            "an alarm action that does not exist",
            done(
                MaintenanceClient::new(ch.clone())
                    .alarm(AlarmRequest {
                        action: 7,
                        member_id: 0x1234,
                        alarm: AlarmType::Corrupt as i32,
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "unknown alarm action",
        ),
        (
            "nested txns that run more ops than --max-txn-ops",
            done(
                kv.txn(TxnRequest {
                    success: (0..2)
                        .map(|n| RequestOp {
                            request: Some(request_op::Request::RequestTxn(TxnRequest {
                                success: (0..100)
                                    .map(|i| put(format!("n{n}-{i}").as_bytes()))
                                    .collect(),
                                ..Default::default()
                            })),
                        })
                        .collect(),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "too many operations in txn request",
        ),
        (
            "a label key with a NUL",
            done(
                secrets
                    .create(CreateRequest {
                        name: "lbl".into(),
                        labels: [("a\0b".to_string(), "v".to_string())]
                            .into_iter()
                            .collect(),
                        data: b"x".to_vec(),
                        ..Default::default()
                    })
                    .await,
            ),
            Code::InvalidArgument,
            "contains control characters",
        ),
        (
            "a target with a newline",
            done(
                tasks
                    .create(task(
                        "t.nl",
                        "n1",
                        vec![mount("db_pw", "a\nb", 0o400)],
                        vec![],
                    ))
                    .await,
            ),
            Code::InvalidArgument,
            "control character",
        ),
    ];
    assert!(cases.len() >= 30);
    for (what, outcome, code, msg) in &cases {
        let e = outcome.as_ref().expect_err(what);
        assert_eq!(e.code(), *code, "{what}: {e:?}");
        assert!(
            e.message().contains(msg),
            "{what}: {:?} lacks {msg:?}",
            e.message()
        );
    }

    // Healthy, and nothing lost: every member agrees, the old data is there.
    c.ok(&["put", "after", "bad input"]);
    assert_eq!(c.ok(&["get", "keep", "--print-value-only"]), "me\n");
    assert_eq!(
        c.sctl(&["secret", "ls", "--format", "{{.Name}}"], None),
        "db_pw\n"
    );
    assert_eq!(c.sctl(&["task", "ls", "-q"], None), "web.1\n");
    for i in 0..3 {
        let out = c.etcdctl_at(
            &c.endpoint(i),
            &["get", "after", "--consistency=s", "--print-value-only"],
        );
        let deadline = std::time::Instant::now() + crate::common::secs(5);
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        while text != "bad input\n" && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let o = c.etcdctl_at(
                &c.endpoint(i),
                &["get", "after", "--consistency=s", "--print-value-only"],
            );
            text = String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert_eq!(text, "bad input\n", "member {i}");
    }
}

/// HTTP/2 streams one connection may hold (`--max-concurrent-streams`,
/// etcd's flag; its default is unbounded, secretd's 1024): past it, the
/// next request on that connection waits for a stream to close instead of
/// holding more of the member's memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_holds_a_bounded_number_of_streams() {
    use secretd_api::pb::etcdserverpb::{
        kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, PutRequest,
        WatchCreateRequest, WatchRequest,
    };
    let c = Cluster::start_with(1, &["--max-concurrent-streams", "4"]);
    c.wait_leader(crate::common::secs(15)).await;
    let channel = c.channel(0).await;
    let mut watches = Vec::new();
    for _ in 0..4 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let mut s = WatchClient::new(channel.clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().expect("created");
        watches.push((tx, s));
    }
    let put = || {
        let mut kv = KvClient::new(channel.clone());
        async move {
            kv.put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
        }
    };
    // A fifth stream waits; it is not refused and nothing breaks.
    let waiting = tokio::time::timeout(crate::common::secs(2), put()).await;
    assert!(waiting.is_err(), "a fifth stream was served: {waiting:?}");
    drop(watches.pop());
    tokio::time::timeout(crate::common::secs(20), put())
        .await
        .expect("served once a stream closed")
        .expect("put");
}
