//! A peer that speaks garbage, belongs to another cluster, or misaddresses
//! its messages is refused with a clear error, and the cluster loses nothing.

use std::time::Duration;

use crate::common::Cluster;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use secretd_api::pb::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use secretd_api::pb::raftpb::{raft_client::RaftClient, RaftBatch, SnapshotChunk};
use tonic::Code;

async fn send(c: &Cluster, to: usize, batch: RaftBatch) -> tonic::Status {
    let ch = tonic::transport::Channel::from_shared(format!(
        "http://127.0.0.1:{}",
        c.members[to].peer_port
    ))
    .unwrap()
    .connect_lazy();
    RaftClient::new(ch)
        .send(tokio_stream::iter(vec![batch]))
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_foreign_and_misaddressed_peer_traffic_is_refused() {
    let c = Cluster::start(3);
    c.wait_leader(Duration::from_secs(15)).await;
    c.ok(&["put", "safe", "1"]);
    let mut m = MaintenanceClient::new(c.channel(0).await);
    let cluster_id = m
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .cluster_id;
    let me = u64::from_str_radix(&c.member_id(0).await, 16).unwrap();

    let st = send(
        &c,
        0,
        RaftBatch {
            from: 7,
            cluster_id,
            messages: vec![bytes::Bytes::from_static(b"\xff\xfe garbage")],
        },
    )
    .await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(
        st.message().contains("undecodable raft message"),
        "{}",
        st.message()
    );

    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeat);
    msg.from = 7;
    msg.to = me;
    msg.term = 1000; // would depose the leader if it were believed
    let st = send(
        &c,
        0,
        RaftBatch {
            from: 7,
            cluster_id: cluster_id ^ 1,
            messages: vec![msg.write_to_bytes().unwrap().into()],
        },
    )
    .await;
    assert_eq!(st.code(), Code::FailedPrecondition);
    assert!(
        st.message().contains("cluster id mismatch"),
        "{}",
        st.message()
    );

    let st = send(
        &c,
        0,
        RaftBatch {
            from: 8,
            cluster_id,
            messages: vec![msg.write_to_bytes().unwrap().into()],
        },
    )
    .await;
    assert_eq!(st.code(), Code::InvalidArgument);
    assert!(
        st.message().contains("raft message from"),
        "{}",
        st.message()
    );

    // A snapshot stream whose file is garbage never reaches raft.
    let mut snap = Message::default();
    snap.set_msg_type(MessageType::MsgSnapshot);
    snap.from = 7;
    snap.to = me;
    snap.mut_snapshot().mut_metadata().index = 999;
    let chunks = vec![SnapshotChunk {
        from: 7,
        cluster_id,
        message: snap.write_to_bytes().unwrap().into(),
        data: b"not a snapshot".to_vec(),
    }];
    let ch = tonic::transport::Channel::from_shared(format!(
        "http://127.0.0.1:{}",
        c.members[0].peer_port
    ))
    .unwrap()
    .connect_lazy();
    let st = RaftClient::new(ch)
        .send_snapshot(tokio_stream::iter(chunks))
        .await
        .expect_err("refused");
    assert_eq!(st.code(), Code::InvalidArgument, "{}", st.message());

    // Nothing was lost and the cluster still works, with the same term.
    c.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(c.ok(&["get", "safe"]), "safe\n1\n");
    c.ok(&["put", "after", "2"]);
    let term = m
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .raft_term;
    assert!(term < 1000, "a refused message changed the term to {term}");
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(
        log.contains("refused undecodable raft message") && log.contains("another cluster"),
        "refusals are logged"
    );
}
