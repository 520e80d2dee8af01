//! Whole clusters in one process: 3 and 5 members of the real store (raft
//! loop, log, MVCC, apply) joined by the in-memory network, with seeded
//! message drops and partitions. Elections, replication and ReadIndex are
//! checked here without ports, TLS or gRPC.

use std::time::{Duration, Instant};

use crate::cluster::{self, Member};
use crate::node::{Node, NodeConfig};
use crate::pb::etcdserverpb::{PutRequest, RangeRequest};
use crate::testing::net::MemNetwork;
use crate::testing::{MemCluster, TOKEN};
use crate::StoreError;

/// Reads of the `k/` keys the tests write.
trait Reads {
    async fn read_all(&self, i: usize) -> Result<Vec<(String, String)>, StoreError>;
    async fn read_all_retrying(&self, i: usize) -> Vec<(String, String)>;
}

impl Reads for MemCluster {
    /// A linearizable read of every `k/` key through member `i`.
    async fn read_all(&self, i: usize) -> Result<Vec<(String, String)>, StoreError> {
        let resp = self.nodes[i]
            .range(RangeRequest {
                key: b"k/".to_vec(),
                range_end: b"k0".to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(resp
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect())
    }

    async fn read_all_retrying(&self, i: usize) -> Vec<(String, String)> {
        for _ in 0..20 {
            match self.read_all(i).await {
                Ok(kvs) => return kvs,
                Err(StoreError::Timeout) => {}
                Err(e) => panic!("read through member {i}: {e}"),
            }
        }
        panic!("member {i} never answered a linearizable read");
    }
}

fn expected(n: usize) -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = (0..n)
        .map(|i| (format!("k/{i:03}"), format!("v{i}")))
        .collect();
    want.sort();
    want
}

/// 3 members losing a fifth of all messages: they elect a leader, every
/// write through any member commits, and a linearizable read through every
/// member sees all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_and_read_through_dropped_messages() {
    let c = MemCluster::start(3, 7);
    c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    c.net.set_drop_rate(0.2);
    for i in 0..60 {
        c.put(i % 3, &format!("k/{i:03}"), &format!("v{i}")).await;
    }
    for i in 0..3 {
        assert_eq!(c.read_all_retrying(i).await, expected(60), "member {i}");
    }
    c.net.set_drop_rate(0.0);
}

/// Five members read at once, right after their start and then round
/// after round. Each member numbers its ReadIndex rounds from 1, so their
/// first rounds carry the same number: the leader must answer each of
/// them, and none may wait for its half-second retry. When a round's
/// context was its number alone, the leader took the members' first
/// rounds for one and answered only one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_members_read_index_round_is_answered_when_they_ask_at_once() {
    const ROUNDS: usize = 10;
    let c = MemCluster::start(5, 11);
    c.leader(&[0, 1, 2, 3, 4], Duration::from_secs(10)).await;
    for _ in 0..ROUNDS {
        let asked: Vec<_> = c
            .nodes
            .iter()
            .map(|n| n.submit_read_index().expect("queued"))
            .collect();
        for rx in asked {
            rx.await.expect("answered").expect("read index");
        }
    }
    let slow: u64 = c.nodes.iter().map(|n| n.status().slow_read_indexes).sum();
    // A loaded machine may make one round slow; colliding first rounds
    // made most of the members wait.
    assert!(
        slow <= 1,
        "{slow} of {} rounds waited for a retry",
        5 * ROUNDS
    );
}

/// 5 members: the leader is cut off. The other four elect a new one and go
/// on; the old leader cannot answer a linearizable read (it would be
/// stale), and after healing it catches up and answers with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_replace_an_isolated_leader() {
    let c = MemCluster::start(5, 11);
    let all = [0, 1, 2, 3, 4];
    let old = c.leader(&all, Duration::from_secs(10)).await;
    for i in 0..10 {
        c.put(old, &format!("k/{i:03}"), &format!("v{i}")).await;
    }
    c.net.isolate(c.nodes[old].id(), true);
    let rest: Vec<usize> = all.iter().copied().filter(|i| *i != old).collect();
    let new = c.leader(&rest, Duration::from_secs(10)).await;
    assert_ne!(new, old);
    for i in 10..30 {
        c.put(rest[i % 4], &format!("k/{i:03}"), &format!("v{i}"))
            .await;
    }
    // Cut off, the old leader has no quorum to confirm a read index with.
    match c.read_all(old).await {
        Err(StoreError::Timeout) => {}
        other => panic!("an isolated member answered a linearizable read: {other:?}"),
    }
    for i in &rest {
        assert_eq!(c.read_all_retrying(*i).await, expected(30), "member {i}");
    }
    c.net.isolate(c.nodes[old].id(), false);
    c.leader(&all, Duration::from_secs(10)).await;
    assert_eq!(c.read_all_retrying(old).await, expected(30));
}

/// A member cut off while the log is truncated past it catches up from a
/// snapshot file the network carries, and then answers with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_catches_up_by_snapshot() {
    let c = MemCluster::start_with(3, 5, |cfg| {
        cfg.snapshot_count = 50;
        cfg.snapshot_catchup_entries = 10;
    });
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let behind = (leader + 1) % 3;
    c.net.isolate(c.nodes[behind].id(), true);
    for i in 0..200 {
        c.put(leader, &format!("k/{i:03}"), &format!("v{i}")).await;
    }
    let snaps = c.nodes[leader].snapshot_dir();
    c.net.isolate(c.nodes[behind].id(), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(kvs) = c.read_all(behind).await {
            if kvs == expected(200) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the member never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0);
    assert!(sent > 0, "it caught up without a snapshot");
}

/// Every record in every member's meta column family, after every kind of
/// entry and a snapshot install, belongs to a class of `schema` (so none can
/// silently fall out of snapshots); and the member that caught up by
/// snapshot holds the same replicated state as the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_meta_record_is_classified() {
    use crate::auth::hash_password;
    use crate::pb::etcdserverpb::{
        alarm_request::AlarmAction, AlarmRequest, AlarmType, AuthRoleAddRequest,
        AuthUserAddRequest, CompactionRequest,
    };
    use crate::pb::internal::{auth_request::Op, internal_request::Request, AuthRequest};
    use crate::schema;

    let c = MemCluster::start_with(3, 3, |cfg| {
        cfg.snapshot_count = 20;
        cfg.snapshot_catchup_entries = 5;
    });
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let behind = (leader + 2) % 3;
    c.net.isolate(c.nodes[behind].id(), true);
    let n = &c.nodes[leader];
    let lease = n.lease_grant(600, 0, None).await.unwrap().id;
    n.put(
        PutRequest {
            key: b"k/leased".to_vec(),
            value: b"x".to_vec(),
            lease,
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    for i in 0..40 {
        c.put(leader, &format!("k/{i:03}"), "v").await;
    }
    n.compact(
        CompactionRequest {
            revision: 10,
            physical: false,
        },
        None,
    )
    .await
    .unwrap();
    for op in [
        Op::UserAdd(AuthUserAddRequest {
            name: "u".into(),
            hashed_password: hash_password("pw", 4).unwrap(),
            ..Default::default()
        }),
        Op::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
    ] {
        n.propose(Request::Auth(AuthRequest { op: Some(op) }))
            .await
            .unwrap();
    }
    n.alarm(AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: n.id(),
        alarm: AlarmType::Nospace as i32,
    })
    .await
    .unwrap();
    c.net.isolate(c.nodes[behind].id(), false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hashes: Vec<u32> = c
            .nodes
            .iter()
            .map(|n| n.mvcc().hash_state().unwrap())
            .collect();
        let applied: Vec<u64> = c.nodes.iter().map(|n| n.status().applied_index).collect();
        if hashes.iter().all(|h| *h == hashes[0]) && applied.iter().all(|a| *a == applied[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never converged: {hashes:?} {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &c.nodes {
        let (db, dir) = (n.db(), n.config().data_dir.clone());
        let mut seen = Vec::new();
        for item in db.iterator_cf(db.cf(schema::CF_META), crate::db::IteratorMode::Start) {
            let (k, _) = item.unwrap();
            assert!(
                schema::class(&k).is_some(),
                "{}: meta record {:?} is in no class of store::schema",
                dir.display(),
                String::from_utf8_lossy(&k)
            );
            seen.push(String::from_utf8_lossy(&k).into_owned());
        }
        for want in [
            "applied_index",
            "current_rev",
            "compact_rev",
            "cluster_token",
            "lease/",
            "member/",
            "alarm/",
            "auth/user/u",
            "auth/role/r",
        ] {
            assert!(
                seen.iter().any(|k| k.starts_with(want)),
                "{want} never written: {seen:?}"
            );
        }
    }
}

/// D16: a txn nested 50 deep once passed admission, and apply could not
/// decode its entry (prost stops at 100 nested messages, and the entry
/// wraps the request), so every member stopped with "corrupt log entry",
/// again at every restart. Admission refuses it now, and the cluster goes
/// on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_txn_is_refused_and_the_cluster_goes_on() {
    let c = MemCluster::start(3, 5);
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let deep = crate::node::entry::tests::nested_txn(50);
    for i in 0..3 {
        let got = c.nodes[i].txn(deep.clone(), None).await;
        assert_eq!(got.unwrap_err(), StoreError::TxnTooDeep, "member {i}");
    }
    let deepest = crate::node::entry::tests::nested_txn(crate::node::entry::TXN_NESTING_MAX);
    c.nodes[leader]
        .txn(deepest, None)
        .await
        .expect("the deepest admitted txn");
    c.put(0, "k/000", "v0").await;
    for i in 0..3 {
        assert_eq!(c.read_all_retrying(i).await, expected(1), "member {i}");
        assert!(c.nodes[i].status().fatal.is_none(), "member {i} stopped");
    }
}

/// CORRUPT naming one member: every member refuses keyspace writes alike
/// (etcd's corrupt applier), the named member serves no reads while the
/// others do, keepalives go on, and disarming it lets writes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stops_writes_everywhere_and_reads_on_the_named_member() {
    use crate::pb::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
    let c = MemCluster::start(3, 5);
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    c.put(leader, "k/000", "v0").await;
    let lease = c.nodes[leader].lease_grant(600, 0, None).await.unwrap().id;
    let named = (leader + 1) % 3;
    c.nodes[leader]
        .raise_corrupt(c.nodes[named].id())
        .await
        .unwrap();
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.nodes[i].check_serving().is_ok() && i == named {
            assert!(
                Instant::now() < deadline,
                "member {i} never heard of CORRUPT"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let put = PutRequest {
        key: b"k/001".to_vec(),
        value: b"v1".to_vec(),
        ..Default::default()
    };
    for i in 0..3 {
        assert_eq!(
            c.nodes[i].put(put.clone(), None).await.unwrap_err(),
            StoreError::Corrupt,
            "member {i}"
        );
    }
    let read = RangeRequest {
        key: b"k/000".to_vec(),
        serializable: true,
        ..Default::default()
    };
    assert_eq!(
        c.nodes[named].range(read.clone()).await.unwrap_err(),
        StoreError::MemberDamaged
    );
    let other = (named + 1) % 3;
    assert_eq!(c.nodes[other].range(read).await.unwrap().kvs.len(), 1);
    c.nodes[leader]
        .lease_renew(lease, None)
        .await
        .expect("keepalives go on");
    c.nodes[leader]
        .alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: c.nodes[named].id(),
            alarm: AlarmType::Corrupt as i32,
        })
        .await
        .unwrap();
    c.put(leader, "k/001", "v1").await;
    for i in 0..3 {
        assert_eq!(c.read_all_retrying(i).await, expected(2), "member {i}");
    }
}

/// The raft input queue holds `INPUT_QUEUE_MAX` proposals and reads; past
/// it a request is refused at once with `too many requests`, never queued
/// without bound (a member whose loop handles nothing: stepped, never
/// stepped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_input_queue_is_bounded() {
    fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let net = MemNetwork::new(1);
    let peer_urls = vec!["http://n1.mem:2380".to_string()];
    let m = Member {
        id: cluster::member_id(&peer_urls, TOKEN),
        name: "n1".into(),
        peer_urls,
    };
    let cfg = NodeConfig {
        name: m.name.clone(),
        data_dir: dir.path().join("n1"),
        initial_members: vec![m.clone()],
        cluster_token: TOKEN.into(),
        ..Default::default()
    };
    let (node, _stepper) = Node::open(cfg)
        .unwrap()
        .start_stepped(net.transport(m.id), crate::clock::Clock::real(), 1)
        .unwrap();
    let put = || PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    for i in 0..crate::node::INPUT_QUEUE_MAX {
        // Polled once: queued, then waiting for an answer never to come.
        assert!(now_or_never(node.put(put(), None)).is_none(), "request {i}");
    }
    assert_eq!(
        now_or_never(node.put(put(), None)),
        Some(Err(StoreError::TooManyRequests))
    );
}

/// An entry that passed its checksum but cannot be applied (from an older
/// member, or one admission should have refused) is never a reason to
/// stop: every member skips it alike, its proposer hears why, and later
/// writes apply everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_apply_cannot_decode_is_refused_on_every_member() {
    use crate::pb::internal::{internal_request::Request, InternalRequest};
    use prost::Message as _;
    let c = MemCluster::start(3, 9);
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let node = &c.nodes[leader];
    let too_deep = InternalRequest {
        id: node.next_request_id(),
        proposer: node.id(),
        request: Some(Request::Txn(crate::node::entry::tests::nested_txn(60))),
        auth_revision: None,
        auth_fence: None,
        write_answer_bytes_max: None,
        txn_decided_first: false,
        txn_rules_etcd: false,
    }
    .encode_to_vec();
    let no_request = InternalRequest {
        id: node.next_request_id(),
        proposer: node.id(),
        ..Default::default()
    }
    .encode_to_vec();
    for (what, data) in [("too deep", too_deep), ("no request", no_request)] {
        let rx = node.submit_raw(data).expect("proposed");
        let got = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("answered")
            .expect("not dropped");
        match got {
            Err(StoreError::InvalidArgument(m)) => {
                assert!(m.starts_with("request cannot be applied"), "{what}: {m}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Garbage that names nobody: nobody to answer, and nothing stops.
    drop(node.submit_raw(vec![0xff; 7]).expect("proposed"));
    c.put((leader + 1) % 3, "k/000", "v0").await;
    for i in 0..3 {
        assert_eq!(c.read_all_retrying(i).await, expected(1), "member {i}");
        assert!(c.nodes[i].status().fatal.is_none(), "member {i} stopped");
    }
}

/// Opens member `cfg` again once the stopped one has let go of its
/// database (its last tasks drop their handles within moments).
fn reopen(cfg: &NodeConfig) -> Result<crate::node::Opened, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Node::open(cfg.clone()) {
            Err(StoreError::Storage(m)) if m.contains("lock") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
}

/// Waits until member `node` leads.
async fn leads(node: &Node, within: Duration) {
    let deadline = Instant::now() + within;
    while !node.status().is_leader {
        assert!(Instant::now() < deadline, "never led: {:?}", node.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--force-new-cluster` in the store: 3 members commit writes and stop
/// for good; the survivor's log also holds entries past its commit index
/// (a lost leader's last appends). Forced, it discards them, keeps every
/// write it committed, is the only member in raft's configuration and the
/// registry, leads at once with the same cluster id, and takes writes. A
/// second forced start is refused, a start without the flag clears that,
/// and then there is nobody left to remove, which is refused too; so is
/// a data directory with no member in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_keeps_what_the_survivor_committed() {
    use crate::db::Db;
    use crate::log_store::LogStore;
    use crate::pb::internal::{internal_request::Request, InternalRequest};
    use prost::Message as _;
    use raft::Storage as _;

    let mut c = MemCluster::start(3, 11);
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    for i in 0..20 {
        c.put(leader, &format!("k/{i:03}"), &format!("v{i}")).await;
    }
    let survivor = (leader + 1) % 3;
    // The survivor has applied the last write (so it knows it committed).
    // Not the leader's status: a put is answered before the status it
    // publishes shows its commit, so that could name an index one short.
    let deadline = Instant::now() + Duration::from_secs(10);
    let last_write = || RangeRequest {
        key: b"k/019".to_vec(),
        serializable: true,
        ..Default::default()
    };
    while c.nodes[survivor]
        .range(last_write())
        .await
        .unwrap()
        .kvs
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the survivor never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (id, cluster_id) = (c.nodes[survivor].id(), c.nodes[survivor].cluster_id());
    let mut cfg = c.nodes[survivor].config().clone();
    for n in std::mem::take(&mut c.nodes) {
        n.stop();
    }

    // The uncommitted tail: three puts appended after the last entry, in
    // the last term, never committed.
    let tail_from = {
        let opened = reopen(&cfg).expect("reopen the survivor");
        drop(opened);
        let db = Db::open(&cfg.data_dir).unwrap();
        let mut log = LogStore::open(db.clone()).unwrap();
        let (last, term) = (log.last_index().unwrap(), log.hard_state().term);
        assert!(log.hard_state().commit <= last);
        let tail: Vec<raft::eraftpb::Entry> = (1..=3)
            .map(|i| raft::eraftpb::Entry {
                index: last + i,
                term,
                data: InternalRequest {
                    id: i,
                    proposer: 0,
                    request: Some(Request::Put(PutRequest {
                        key: format!("k/tail-{i}").into(),
                        value: b"never committed".to_vec(),
                        ..Default::default()
                    })),
                    auth_revision: None,
                    auth_fence: None,
                    write_answer_bytes_max: None,
                    txn_decided_first: false,
                    txn_rules_etcd: false,
                }
                .encode_to_vec()
                .into(),
                ..Default::default()
            })
            .collect();
        log.append(&tail).unwrap();
        log.persist(true).unwrap();
        last + 1
    };

    cfg.force_new_cluster = true;
    let opened = reopen(&cfg).expect("forced start");
    assert_eq!((opened.id(), opened.cluster_id()), (id, cluster_id));
    let node = opened.start(c.net.transport(id)).unwrap();
    c.net.attach(&node);
    c.nodes = vec![node];
    leads(&c.nodes[0], Duration::from_secs(10)).await;
    let ids: Vec<u64> = c.nodes[0].members().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![id], "the registry holds the survivor alone");
    assert_eq!(c.nodes[0].cluster_id(), cluster_id);
    assert!(c.nodes[0].status().commit_index > tail_from);
    assert_eq!(
        c.read_all_retrying(0).await,
        expected(20),
        "every committed write, and none of the tail"
    );
    c.put(0, "k/020", "v20").await;
    assert_eq!(c.read_all_retrying(0).await, expected(21));

    // The flag left on: refused, nothing changed.
    c.nodes.pop().unwrap().stop();
    let err = reopen(&cfg)
        .err()
        .expect("a second forced start is refused");
    assert!(err.to_string().contains("already applied"), "{err}");
    // Without it: a member as before, which clears the mark...
    cfg.force_new_cluster = false;
    let node = reopen(&cfg).unwrap().start(c.net.transport(id)).unwrap();
    c.net.attach(&node);
    c.nodes = vec![node];
    leads(&c.nodes[0], Duration::from_secs(10)).await;
    assert_eq!(c.read_all_retrying(0).await, expected(21));
    c.nodes.pop().unwrap().stop();
    // ...but there is nobody left to remove.
    cfg.force_new_cluster = true;
    let err = reopen(&cfg).err().expect("nothing to force");
    assert!(err.to_string().contains("already the only member"), "{err}");

    // No member to recover: a missing or an empty data directory.
    for dir in ["missing", "empty"] {
        let mut empty = cfg.clone();
        empty.data_dir = c.dir().join(dir);
        if dir == "empty" {
            std::fs::create_dir(&empty.data_dir).unwrap();
        }
        let err = Node::open(empty).err().expect("nothing to recover");
        assert!(
            err.to_string().contains("nothing to recover"),
            "{dir}: {err}"
        );
    }
    assert!(!c.dir().join("missing").exists(), "nothing created");
}

/// A txn is decided before it writes (`mvcc::txn_path`) only once every
/// member applies it so: while one says it speaks peer wire 3, txns are
/// proposed without the term, and every member applies them as that
/// release does (a nested compare sees the txn's own put); once it says 4,
/// as etcd does (it does not). Every member holds the same keys each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_is_decided_first_only_once_every_member_applies_it_so() {
    use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use crate::pb::etcdserverpb::{
        request_op::Request as Op, Compare, DeleteRangeRequest, RequestOp, TxnRequest,
    };
    let put = |k: &str, v: &str| RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    };
    let txn = |round: &str| TxnRequest {
        success: vec![
            put("k/z", round),
            RequestOp {
                request: Some(Op::RequestTxn(TxnRequest {
                    compare: vec![Compare {
                        key: "k/z".into(),
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        target_union: Some(TargetUnion::Value(round.into())),
                        ..Default::default()
                    }],
                    success: vec![put("k/r", "as-it-runs")],
                    failure: vec![put("k/r", "decided-first")],
                })),
            },
        ],
        ..Default::default()
    };
    let c = MemCluster::start(3, 13);
    let leader = c.leader(&[0, 1, 2], Duration::from_secs(10)).await;
    let older = c.nodes[(leader + 1) % 3].id();
    let wire = crate::transport::wire::TXN_DECIDED_FIRST;
    // What the older apply would get wrong is refused while it may run:
    // a delete to the end then a put keeping the value (written without
    // it), and a range at a revision after a write (an error, the write
    // kept). Decided first, the first is refused as etcd checks it, and
    // the second runs.
    let delete_then_keep = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: "k/".into(),
                    range_end: vec![0],
                    prev_kv: false,
                })),
            },
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: "k/z".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let read_back = TxnRequest {
        success: vec![
            put("q", "written"),
            RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: "q".into(),
                    revision: 1,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    for (round, says, want) in [
        ("1", Some(wire - 1), "as-it-runs"),
        ("2", None, "decided-first"),
    ] {
        c.net.set_wire(older, says);
        c.nodes[leader].txn(txn(round), None).await.unwrap();
        let kvs = vec![
            ("k/r".to_string(), want.to_string()),
            ("k/z".into(), round.into()),
        ];
        let refused = c.nodes[leader].txn(delete_then_keep.clone(), None).await;
        let read = c.nodes[leader].txn(read_back.clone(), None).await;
        if says.is_some() {
            assert_eq!(refused.unwrap_err(), StoreError::DuplicateKey);
            let why = read.unwrap_err().to_string();
            assert!(why.contains(&format!("{older:x}")), "{why}");
        } else {
            assert_eq!(refused.unwrap_err(), StoreError::KeyNotFound);
            read.unwrap();
        }
        for i in 0..3 {
            assert_eq!(
                c.read_all_retrying(i).await,
                kvs,
                "round {round}, member {i}"
            );
        }
    }
}
