//! The member's budget for read answers (`--max-response-bytes-in-flight`):
//! an answer larger than the budget is refused while it is rendered, and
//! an answer a client takes slowly keeps its bytes charged until the
//! client has taken them, so other reads past the budget are refused
//! meanwhile, and served once it is done.
//!
//! A write's answer (`--max-write-answer-bytes`): rendered inside apply on
//! every member, so bounded by its entry, and refused alike on every
//! member, having written nothing.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use secretd_api::pb::etcdserverpb::{
    request_op::Request as Op, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};

use crate::common::{secs, Cluster};

const VALUE_BYTES: usize = 512 * 1024;
const KEYS: usize = 12;

/// A Range of the first `limit` keys under `k/`.
fn range(limit: i64) -> RangeRequest {
    RangeRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        limit,
        ..Default::default()
    }
}

/// A gRPC message: flag, length, bytes.
fn framed(m: &impl Message) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(m.encoded_len() as u32);
    m.encode(&mut b).unwrap();
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_charged_until_they_are_sent() {
    let c = Cluster::start_with(1, &["--max-response-bytes-in-flight", "4194304"]);
    c.wait_leader(secs(15)).await;
    let mut kv = c.kv(0).await;
    fill(&mut kv).await;
    // 6 MiB in one answer is past the whole budget: refused, saying why;
    // a limit, or keys only, is served.
    let all = c.etcdctl(&["get", "k/", "--prefix"]);
    let err = String::from_utf8_lossy(&all.stderr);
    assert!(!all.status.success(), "6 MiB answered past a 4 MiB budget");
    assert!(
        err.contains("passes the member's 4 MiB for answers in flight"),
        "{err}"
    );
    let some = c.ok(&["get", "k/", "--prefix", "--limit", "4", "--keys-only"]);
    assert_eq!(some.lines().filter(|l| !l.is_empty()).count(), 4, "{some}");
    let r = kv.range(range(7)).await.unwrap().into_inner();
    assert_eq!(r.kvs.len(), 7);
    // Sorted and filtered answers are picked on the index: only the
    // records returned are read and charged.
    let sorted = kv
        .range(RangeRequest {
            sort_order: 2,  // descending
            sort_target: 3, // by mod revision
            ..range(3)
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = sorted.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [b"k/11", b"k/10", b"k/09"]);
    let newest = kv
        .range(RangeRequest {
            min_mod_revision: 10,
            ..range(2)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(newest.kvs.len(), 2);
    // etcd's JSON gateway alike (HTTP 429, with the reason).
    let gw = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-d"])
        .arg(r#"{"key":"ay8=","range_end":"azA="}"#)
        .arg(format!("http://{}/v3/kv/range", c.endpoint(0)))
        .output()
        .expect("curl");
    let gw = String::from_utf8_lossy(&gw.stdout);
    assert!(gw.ends_with("\n429"), "{gw}");
    assert!(gw.contains("--max-response-bytes-in-flight"), "{gw}");
    // Its JSON is charged as written: 7 values are 3.5 MiB of records but
    // 4.7 MiB of base64; 5 are 3.3 MiB of JSON.
    let gateway = |limit: u32| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d"])
            .arg(format!(
                r#"{{"key":"ay8=","range_end":"azA=","limit":{limit}}}"#
            ))
            .arg(format!("http://{}/v3/kv/range", c.endpoint(0)))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(gateway(7), "429");
    assert_eq!(gateway(5), "200");

    // A client that asks for 3 MiB and does not read: the member holds it.
    let (mut body, first) = slow_range(&c, 6).await;

    // Meanwhile 2 MiB more is past the budget.
    let busy = match kv.range(range(4)).await {
        Ok(r) => panic!(
            "{} keys served past the budget while 3 MiB waited on a client",
            r.into_inner().kvs.len()
        ),
        Err(e) => e,
    };
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert!(
        busy.message().contains("holding 3 MiB of answers already"),
        "{busy:?}"
    );

    let held = answer_bytes(&c);
    assert!((3 << 20..4 << 20).contains(&held), "{held} bytes held");

    // Taken whole, the slow answer is all there, and its bytes are given back.
    let mut got = BytesMut::from(&first[..]);
    body.flow_control().release_capacity(first.len()).unwrap();
    while let Some(d) = body.data().await {
        let d = d.unwrap();
        body.flow_control().release_capacity(d.len()).unwrap();
        got.extend_from_slice(&d);
    }
    let trailers = body.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let mut got = got.freeze();
    assert_eq!(got.get_u8(), 0);
    let len = got.get_u32() as usize;
    assert_eq!(len, got.len());
    let slow = RangeResponse::decode(got).unwrap();
    assert_eq!(slow.kvs.len(), 6);
    assert!(slow.kvs.iter().all(|kv| kv.value.len() == VALUE_BYTES));
    let deadline = tokio::time::Instant::now() + secs(20);
    loop {
        match kv.range(range(4)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().kvs.len(), 4);
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slow answer's bytes were never given back: {e:?}"),
        }
    }
    assert_eq!(answer_bytes(&c), 0);
}

/// `KEYS` values of `VALUE_BYTES` under `k/`.
async fn fill(
    kv: &mut secretd_api::pb::etcdserverpb::kv_client::KvClient<tonic::transport::Channel>,
) {
    for i in 0..KEYS {
        kv.put(PutRequest {
            key: format!("k/{i:02}").into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// A raw HTTP/2 client's Range of the first `limit` keys under `k/`, of
/// which it takes the first piece and no more: the rest waits on its
/// window.
async fn slow_range(c: &Cluster, limit: i64) -> (h2::RecvStream, Bytes) {
    let tcp = tokio::net::TcpStream::connect(c.endpoint(0)).await.unwrap();
    let (h2c, conn) = h2::client::Builder::new()
        .initial_window_size(65_535)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut h2c = h2c.ready().await.unwrap();
    let req = http::Request::post(format!("http://{}/etcdserverpb.KV/Range", c.endpoint(0)))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, mut send) = h2c.send_request(req, false).unwrap();
    send.send_data(framed(&range(limit)), true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let first = body.data().await.unwrap().unwrap();
    assert!(!first.is_empty());
    (body, first)
}

/// An answer whose client stops taking it is given up after
/// `--max-answer-stall`: its bytes and charge are freed while the client
/// is still connected, and the client's stream ends in an error, never in
/// a whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_its_client_stops_taking_is_given_up() {
    let c = Cluster::start_with(
        1,
        &[
            "--max-response-bytes-in-flight",
            "4194304",
            "--max-answer-stall",
            "2s",
        ],
    );
    c.wait_leader(secs(15)).await;
    let mut kv = c.kv(0).await;
    fill(&mut kv).await;
    let (mut body, first) = slow_range(&c, 6).await;
    assert!(answer_bytes(&c) >= 3 << 20);
    let deadline = tokio::time::Instant::now() + secs(30);
    while answer_bytes(&c) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a stalled answer still held {} bytes",
            answer_bytes(&c)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(metric(&c, "secretd_answers_cut_total") >= 1);
    // The budget is free for others while the stalled client stays.
    let r = kv.range(range(4)).await.unwrap().into_inner();
    assert_eq!(r.kvs.len(), 4);
    // Reading again, the stalled client gets what was already on its way
    // and then a reset stream, not the 3 MiB.
    let mut got = first.len();
    body.flow_control().release_capacity(first.len()).unwrap();
    let ended = loop {
        match body.data().await {
            Some(Ok(d)) => {
                got += d.len();
                body.flow_control().release_capacity(d.len()).unwrap();
            }
            Some(Err(e)) => break format!("{e}"),
            None => break "ended".to_string(),
        }
    };
    assert!(
        got < 3 << 20,
        "{got} bytes of a given-up answer arrived ({ended})"
    );
    if ended == "ended" {
        let t = body.trailers().await.ok().flatten();
        let status = t.as_ref().and_then(|t| t.get("grpc-status"));
        assert!(status.is_some_and(|s| s != "0"), "{t:?}");
    }
}

/// A txn reading `ranges` times the first `limit` keys under `k/` (0: all
/// of them), and writing `w/marker`.
fn reading_txn(ranges: usize, limit: i64) -> TxnRequest {
    let mut success: Vec<RequestOp> = (0..ranges)
        .map(|_| RequestOp {
            request: Some(Op::RequestRange(range(limit))),
        })
        .collect();
    success.push(RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: b"w/marker".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })),
    });
    TxnRequest {
        success,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_answers_are_bounded_alike_on_every_member() {
    let c = Cluster::start_with(3, &["--max-write-answer-bytes", "4194304"]);
    let leader = c.wait_leader(secs(20)).await;
    let mut kv = c.kv(leader).await;
    fill(&mut kv).await;
    // Nine ranges of the 6 MiB prefix: 54 MiB on every member. A member
    // sets the bound once it knows every peer measures it (it asks each
    // peer's release when it connects): until then the txn runs
    // unmeasured, as before, everywhere alike.
    let deadline = tokio::time::Instant::now() + secs(30);
    let refused = loop {
        match kv.txn(reading_txn(9, 0)).await {
            Err(e) => break e,
            Ok(_) if tokio::time::Instant::now() < deadline => {
                kv.delete_range(DeleteRangeRequest {
                    key: b"w/marker".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok(_) => panic!("54 MiB of a write's answer ran past a 4 MiB bound"),
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-write-answer-bytes"),
        "{refused:?}"
    );
    // Within the bound it runs; its answer is whole.
    let ok = kv.txn(reading_txn(3, 2)).await.unwrap().into_inner();
    assert_eq!(ok.responses.len(), 4);
    // A delete returning 6 MiB of records is refused; without them it runs.
    let mut del = DeleteRangeRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        prev_kv: true,
    };
    let e = kv.delete_range(del.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    // Every member refused the same writes and ran the same ones: each
    // holds the marker of the txn that ran, and every key the refused
    // delete did not delete.
    let applied = kv.put(PutRequest {
        key: b"w/sync".to_vec(),
        ..Default::default()
    });
    let sync_rev = applied.await.unwrap().into_inner().header.unwrap().revision;
    for i in 0..3 {
        let mut m = c.kv(i).await;
        let deadline = tokio::time::Instant::now() + secs(20);
        let serial = |key: &[u8], range_end: &[u8]| RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            serializable: true,
            count_only: true,
            ..Default::default()
        };
        loop {
            let r = m.range(serial(b"w/sync", b"")).await.unwrap().into_inner();
            if r.header.unwrap().revision >= sync_rev {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {i} never applied the sync write"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let marker = m
            .range(serial(b"w/marker", b""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(marker.count, 1, "member {i}");
        let keys = m.range(serial(b"k/", b"k0")).await.unwrap().into_inner();
        assert_eq!(keys.count as usize, KEYS, "member {i}");
    }
    // A member restarted while a peer is down still bounds its writes:
    // it remembers what the peer runs (`peer-wires` in its data
    // directory) until it reaches it again.
    let mut c = c;
    let (down, restarted) = ((leader + 1) % 3, (leader + 2) % 3);
    c.kill9(down);
    c.kill9(restarted);
    c.spawn(restarted);
    let deadline = tokio::time::Instant::now() + secs(30);
    let mut m = loop {
        let mut m = c.kv(restarted).await;
        let r = m
            .put(PutRequest {
                key: b"w/after-restart".to_vec(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted member never took a write: {r:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let e = m.txn(reading_txn(9, 0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    del.prev_kv = false;
    let gone = kv.delete_range(del).await.unwrap().into_inner();
    assert_eq!(gone.deleted as usize, KEYS);
}

/// The member's `secretd_answer_bytes_in_flight`, from its `/metrics`.
fn answer_bytes(c: &Cluster) -> u64 {
    metric(c, "secretd_answer_bytes_in_flight")
}

/// A metric of member 0, from its `/metrics`.
fn metric(c: &Cluster, name: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/metrics", c.endpoint(0))])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics: {text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}
