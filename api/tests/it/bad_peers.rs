//! A peer that speaks garbage, belongs to another cluster, or misaddresses
//! its messages is refused with a clear error, and the cluster loses nothing.

use crate::common::Cluster;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use secretd_api::pb::etcdserverpb::{maintenance_client::MaintenanceClient, StatusRequest};
use secretd_api::pb::raftpb::{raft_client::RaftClient, RaftBatch, SnapshotChunk};
use sha2::Digest as _;
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
    c.wait_leader(crate::common::secs(15)).await;
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
    // Garbage, and garbage with a correct sha256 trailer (the stream's
    // hash checks out, the file does not).
    let mut hashed = b"not a snapshot".to_vec();
    hashed.extend_from_slice(&sha2::Sha256::digest(b"not a snapshot"));
    for data in [b"not a snapshot".to_vec(), hashed] {
        let chunks = vec![SnapshotChunk {
            from: 7,
            cluster_id,
            message: snap.write_to_bytes().unwrap().into(),
            data,
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
    }

    // Nothing was lost and the cluster still works, with the same term.
    cluster_unharmed(&c, &mut m).await;
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    assert!(
        log.contains("refused undecodable raft message") && log.contains("another cluster"),
        "refusals are logged"
    );
}

/// Opens a raft stream to member `to` over plain TCP: the connection and
/// the member's answer to the hello.
async fn raw_hello(
    c: &Cluster,
    to: usize,
    from: u64,
    cluster_id: u64,
    to_id: u64,
) -> (tokio::net::TcpStream, u8, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.members[to].peer_port))
        .await
        .unwrap();
    let (code, why) = crate::common::raft_hello(&mut s, from, cluster_id, to_id).await;
    (s, code, why)
}

/// Nothing was lost, the cluster still works, and no refused message
/// changed the term.
async fn cluster_unharmed(c: &Cluster, m: &mut MaintenanceClient<tonic::transport::Channel>) {
    c.wait_leader(crate::common::secs(10)).await;
    assert_eq!(c.ok(&["get", "safe"]), "safe\n1\n");
    c.ok(&["put", "after", "2"]);
    let term = m
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .raft_term;
    assert!(term < 1000, "a refused message changed the term to {term}");
}

/// The raft stream without gRPC holds senders to the same checks: a
/// foreign cluster or a misaddressed hello is refused with its reason, and
/// a bad frame (oversized, undecodable, from someone else, a snapshot)
/// ends the stream before raft sees it. The cluster loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_raft_streams_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    c.ok(&["put", "safe", "1"]);
    let mut m = MaintenanceClient::new(c.channel(0).await);
    let status = m.status(StatusRequest {}).await.unwrap().into_inner();
    let cluster_id = status.header.unwrap().cluster_id;
    let me = u64::from_str_radix(&c.member_id(0).await, 16).unwrap();
    let other = u64::from_str_radix(&c.member_id(1).await, 16).unwrap();

    let (_, code, why) = raw_hello(&c, 0, other, cluster_id ^ 1, me).await;
    assert_eq!(code, 1);
    assert!(why.contains("cluster id mismatch"), "{why}");
    let (_, code, why) = raw_hello(&c, 0, other, cluster_id, me ^ 1).await;
    assert_eq!(code, 1);
    assert!(why.contains("reached member"), "{why}");
    // A raft stream of a version this member does not speak is refused
    // with both versions named (the sender can fall back), never misread.
    {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", c.members[0].peer_port))
            .await
            .unwrap();
        let mut hello = b"SDRAFT99".to_vec();
        for x in [other, cluster_id, me] {
            hello.extend_from_slice(&x.to_le_bytes());
        }
        s.write_all(&hello).await.unwrap();
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!((&head[..2], head[2]), (&b"SD"[..], 1));
        let mut why = vec![0u8; u16::from_le_bytes([head[3], head[4]]) as usize];
        s.read_exact(&mut why).await.unwrap();
        let why = String::from_utf8(why).unwrap();
        assert!(
            why.contains("\"99\"")
                && why.contains("\"01\"")
                && why.contains(&format!(
                    "peer wire {}",
                    secretd_api::peer::PEER_WIRE_VERSION
                )),
            "{why}"
        );
    }

    let mut heartbeat = Message::default();
    heartbeat.set_msg_type(MessageType::MsgHeartbeat);
    heartbeat.from = other;
    heartbeat.to = me;
    heartbeat.term = 1000; // would depose the leader if it were believed
    let frame = |m: &Message| {
        let b = m.write_to_bytes().unwrap();
        let mut f = (b.len() as u32).to_le_bytes().to_vec();
        f.extend(b);
        f
    };
    let mut from_elsewhere = heartbeat.clone();
    from_elsewhere.from = 7;
    let mut snapshot = heartbeat.clone();
    snapshot.set_msg_type(MessageType::MsgSnapshot);
    let bad_frames: Vec<(&str, Vec<u8>)> = vec![
        ("oversized", u32::MAX.to_le_bytes().to_vec()),
        ("empty", 0u32.to_le_bytes().to_vec()),
        ("undecodable", {
            let mut f = 6u32.to_le_bytes().to_vec();
            f.extend(b"\xff\xfe\xfd\xfc\xfb\xfa");
            f
        }),
        ("from someone else", frame(&from_elsewhere)),
        ("a snapshot", frame(&snapshot)),
    ];
    for (what, f) in bad_frames {
        let (mut s, code, why) = raw_hello(&c, 0, other, cluster_id, me).await;
        assert_eq!((code, why.as_str()), (0, ""), "{what}: the hello is fine");
        s.write_all(&f).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(crate::common::secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the member closes the stream");
        assert!(
            n.is_err() || rest.is_empty(),
            "{what}: nothing comes back but the close"
        );
    }

    cluster_unharmed(&c, &mut m).await;
    let log = std::fs::read_to_string(&c.members[0].log).unwrap();
    for said in [
        "another cluster",
        "misaddressed raft stream",
        "refused a frame of 4294967295 bytes",
        "refused a frame of 0 bytes",
        "undecodable raft message",
        "raft message from 7",
        "a snapshot on the raft stream",
    ] {
        assert!(log.contains(said), "the log does not say {said:?}");
    }
}
