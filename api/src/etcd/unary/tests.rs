//! The hand path against the generated server: the same request through
//! each, the same answer back, byte for byte (headers, frames, trailers),
//! for reads, writes (their revisions apart), errors from the service,
//! and every body the hand path gives on.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tower::Service;

use super::*;
use crate::identity::{Caller, Role};
use crate::pb::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse,
};

const LIMIT_BYTES: usize = 4096;

/// A request the hand path must answer as the generated server does:
/// its path, body, headers and the code both answer.
type Refused<'a> = (&'a str, Bytes, &'a [(&'a str, &'a str)], tonic::Code);

/// What a client sees of an answer.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    data: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
    held: bool,
}

fn sorted(h: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = h
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

async fn seen(resp: Answer) -> Seen {
    let status = resp.status().as_u16();
    let headers = sorted(resp.headers());
    let held = resp
        .extensions()
        .get::<crate::gate::HeldUntilSent>()
        .is_some();
    let mut body = resp.into_body();
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("an answer's body does not fail");
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = sorted(&f.into_trailers().expect("data or trailers")),
        }
    }
    Seen {
        status,
        headers,
        data,
        trailers,
        held,
    }
}

fn framed(flag: u8, message: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(flag);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// How a request's body arrives: whole in one frame, or in frames of
/// three bytes (a prefix split across frames, a frame running past a
/// message) followed by trailers.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Whole,
    Split,
}

/// A request body of given frames.
struct Frames(std::collections::VecDeque<http_body::Frame<Bytes>>);

impl Frames {
    fn of(body: Bytes, shape: Shape) -> Frames {
        let frames = match shape {
            Shape::Whole => vec![http_body::Frame::data(body)],
            Shape::Split => {
                let mut f: Vec<_> = body
                    .chunks(3)
                    .map(|c| http_body::Frame::data(Bytes::copy_from_slice(c)))
                    .collect();
                let mut t = http::HeaderMap::new();
                t.insert("x-request-trailer", http::HeaderValue::from_static("1"));
                f.push(http_body::Frame::trailers(t));
                f
            }
        };
        Frames(frames.into())
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn request(
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
    shape: Shape,
) -> http::Request<Frames> {
    let mut b = http::Request::post(format!("http://member{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Frames::of(body, shape)).expect("a request");
    req.extensions_mut().insert(Caller {
        role: Role::Admin,
        remote: None,
        common_name: None,
        token: None,
    });
    req
}

/// A one-member cluster on the store's in-memory network, with a leader,
/// and its KV service.
async fn member() -> (secretd_store::testing::MemCluster, KvService) {
    let c = secretd_store::testing::MemCluster::start(1, 1);
    c.leader(&[0], Duration::from_secs(60)).await;
    let node = c.nodes[0].clone();
    (c, KvService { node })
}

/// Both servers' answers to the same request, its body whole.
async fn both(svc: &KvService, path: &str, body: Bytes, headers: &[(&str, &str)]) -> (Seen, Seen) {
    both_as(svc, path, body, headers, Shape::Whole).await
}

/// Both servers' answers to the same request, its body whole and split
/// (for requests that change nothing); the answers given are the whole
/// body's.
async fn both_shapes(
    svc: &KvService,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
) -> (Seen, Seen) {
    let (a, b) = both_as(svc, path, body.clone(), headers, Shape::Whole).await;
    let (split_a, split_b) = both_as(svc, path, body, headers, Shape::Split).await;
    assert_eq!(split_a, split_b, "{path}, split");
    // A served request is served alike however its body came; tonic's
    // errors for a broken body may depend on where its frames end.
    if !a.headers.iter().any(|(k, _)| k == "grpc-status") {
        assert_eq!(a, split_a, "{path}: whole and split");
    }
    (a, b)
}

async fn both_as(
    svc: &KvService,
    path: &str,
    body: Bytes,
    headers: &[(&str, &str)],
    shape: Shape,
) -> (Seen, Seen) {
    let mut hand = KvGrpc::new(svc.clone(), LIMIT_BYTES, &reading_budget(LIMIT_BYTES));
    let mut generated = KvServer::new(svc.clone())
        .max_decoding_message_size(LIMIT_BYTES)
        .max_encoding_message_size(usize::MAX);
    let a = hand
        .call(request(path, body.clone(), headers, shape))
        .await
        .unwrap();
    let b = generated
        .call(request(path, body, headers, shape))
        .await
        .unwrap();
    (seen(a).await, seen(b).await)
}

fn put(key: &str, value: &[u8]) -> Bytes {
    let p = PutRequest {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    };
    framed(0, &p.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_path_answers_as_the_generated_server() {
    let (_cluster, svc) = member().await;
    let range = "/etcdserverpb.KV/Range";

    // Writes: the same answer but for the revision each made.
    let (a, b) = both(&svc, "/etcdserverpb.KV/Put", put("k", b"v"), &[]).await;
    assert_eq!(
        (a.status, &a.headers, &a.trailers),
        (b.status, &b.headers, &b.trailers)
    );
    assert_eq!(a.trailers, vec![("grpc-status".to_string(), b"0".to_vec())]);
    let rev = |s: &Seen| {
        crate::pb::etcdserverpb::PutResponse::decode(&s.data[5..])
            .unwrap()
            .header
            .unwrap()
            .revision
    };
    assert_eq!(rev(&a) + 1, rev(&b));
    let (c, d) = both_as(
        &svc,
        "/etcdserverpb.KV/Put",
        put("k", b"v"),
        &[],
        Shape::Split,
    )
    .await;
    assert_eq!((&c.headers, &c.trailers), (&a.headers, &a.trailers));
    assert_eq!((rev(&c), rev(&d)), (rev(&b) + 1, rev(&b) + 2));

    // Reads, a read-only txn, a range that holds its answer until sent.
    let reads = [
        (
            range,
            RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            range,
            RangeRequest {
                key: vec![0],
                range_end: vec![0],
                serializable: true,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/etcdserverpb.KV/Txn",
            TxnRequest {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    target: compare::CompareTarget::Version as i32,
                    result: compare::CompareResult::Equal as i32,
                    target_union: Some(compare::TargetUnion::Version(2)),
                    ..Default::default()
                }],
                success: vec![],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })),
                }],
            }
            .encode_to_vec(),
        ),
    ];
    for (path, message) in reads {
        let (a, b) = both_shapes(&svc, path, framed(0, &message), &[]).await;
        assert_eq!(a, b, "{path}");
        assert_eq!(a.status, 200);
    }
    let (a, _) = both(
        &svc,
        range,
        framed(
            0,
            &RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        &[],
    )
    .await;
    assert!(
        a.held,
        "a range's answer is held against the budget until sent"
    );
    let got = RangeResponse::decode(&a.data[5..]).unwrap();
    assert_eq!(got.kvs[0].value, b"v");
    let txn = TxnResponse::decode(
        &both(
            &svc,
            "/etcdserverpb.KV/Txn",
            framed(0, &TxnRequest::default().encode_to_vec()),
            &[],
        )
        .await
        .0
        .data[5..],
    )
    .unwrap();
    assert!(txn.succeeded);

    // The service's refusals, and every body the hand path hands on.
    let reserved = PutRequest {
        key: secretd_secrets::layout::RESERVED.to_vec(),
        ..Default::default()
    };
    let mut two = BytesMut::from(&put("k", b"v")[..]);
    two.put_slice(&put("k", b"w"));
    let mut short = BytesMut::from(&put("k", b"v")[..]);
    short.truncate(short.len() - 1);
    let over = framed(0, &vec![b'x'; LIMIT_BYTES + 1]);
    let refused: Vec<Refused> = vec![
        (
            "/etcdserverpb.KV/Put",
            framed(0, &reserved.encode_to_vec()),
            &[],
            tonic::Code::InvalidArgument,
        ),
        (
            range,
            framed(0, &[0xff, 0xff, 0xff]),
            &[],
            tonic::Code::Internal,
        ),
        (range, Bytes::new(), &[], tonic::Code::Internal),
        (
            range,
            Bytes::from_static(&[0, 0, 0]),
            &[],
            tonic::Code::Internal,
        ),
        (range, framed(1, b"compressed"), &[], tonic::Code::Internal),
        (range, framed(7, b"a flag"), &[], tonic::Code::Internal),
        (
            range,
            put("k", b"v"),
            &[("grpc-encoding", "gzip")],
            tonic::Code::Unimplemented,
        ),
        (
            "/etcdserverpb.KV/Put",
            short.freeze(),
            &[],
            tonic::Code::Internal,
        ),
        (range, over, &[], tonic::Code::OutOfRange),
        (
            "/etcdserverpb.KV/Nope",
            put("k", b"v"),
            &[],
            tonic::Code::Unimplemented,
        ),
    ];
    for (i, (path, body, headers, code)) in refused.into_iter().enumerate() {
        let (a, b) = both_shapes(&svc, path, body, headers).await;
        assert_eq!(a, b, "case {i}: {path}");
        let status = a.headers.iter().find(|(k, _)| k == "grpc-status");
        assert_eq!(
            status.map(|(_, v)| v.as_slice()),
            Some((code as i32).to_string().as_bytes()),
            "case {i}: {a:?}"
        );
    }
    // Which path each body took: a plain message is the hand path's,
    // the rest the generated server's.
    let reading = reading_budget(LIMIT_BYTES);
    let path_of = |body: Bytes, shape| {
        let reading = reading.clone();
        async move {
            match read_one(request(range, body, &[], shape), LIMIT_BYTES, &reading).await {
                Read::One(..) => "hand",
                Read::Other(_) => "generated",
                Read::Failed(_) => "failed",
            }
        }
    };
    for shape in [Shape::Whole, Shape::Split] {
        assert_eq!(path_of(put("k", b"v"), shape).await, "hand");
        assert_eq!(path_of(framed(0, &[0xff, 0xff, 0xff]), shape).await, "hand");
    }
    for body in [
        Bytes::new(),
        framed(1, b"compressed"),
        two.clone().freeze(),
        framed(0, &vec![b'x'; LIMIT_BYTES + 1]),
    ] {
        assert_eq!(path_of(body.clone(), Shape::Whole).await, "generated");
        assert_eq!(path_of(body, Shape::Split).await, "generated");
    }
    assert!(!plain(
        request(
            range,
            Bytes::new(),
            &[("grpc-encoding", "gzip")],
            Shape::Whole
        )
        .headers()
    ));
    assert!(plain(
        request(
            range,
            Bytes::new(),
            &[("grpc-encoding", "identity")],
            Shape::Whole
        )
        .headers()
    ));
    // Two reads in one body: the same answer, data and all.
    let read = framed(
        0,
        &RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let mut two_reads = BytesMut::from(&read[..]);
    two_reads.put_slice(&read);
    both_shapes(&svc, range, two_reads.freeze(), &[]).await;
    // Two writes: whatever tonic makes of them, the hand path makes too.
    let (a, b) = both(&svc, "/etcdserverpb.KV/Put", two.freeze(), &[]).await;
    assert_eq!(
        (a.status, &a.headers, &a.trailers),
        (b.status, &b.headers, &b.trailers)
    );
}

/// A body whose first prefix says the message is over the limit, and that
/// never ends: the hand path answers at once, unbuffered, as tonic does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_its_body_is_read() {
    let (_cluster, svc) = member().await;
    let (tx, req) = open_request();
    tx.send(Ok(http_body::Frame::data(prefix_of(u32::MAX as usize))))
        .await
        .unwrap();
    let reading = reading_budget(LIMIT_BYTES);
    let resp = KvGrpc::new(svc, LIMIT_BYTES, &reading)
        .call(req)
        .await
        .unwrap();
    assert_eq!(status_of(&resp), Some(tonic::Code::OutOfRange), "{resp:?}");
    drop(tx);
}

type FrameTx = tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, Infallible>>;
type OpenBody = http_body_util::StreamBody<
    tokio_stream::wrappers::ReceiverStream<Result<http_body::Frame<Bytes>, Infallible>>,
>;

/// A Range request whose body is what the test sends on the channel, and
/// ends when the sender is dropped.
fn open_request() -> (FrameTx, http::Request<OpenBody>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut req = http::Request::post("http://member/etcdserverpb.KV/Range")
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(Caller {
        role: Role::Admin,
        remote: None,
        common_name: None,
        token: None,
    });
    (tx, req)
}

fn prefix_of(len: usize) -> Bytes {
    let mut prefix = BytesMut::new();
    prefix.put_u8(0);
    prefix.put_u32(len as u32);
    prefix.freeze()
}

fn status_of(resp: &Answer) -> Option<tonic::Code> {
    let v = resp.headers().get("grpc-status")?;
    Some(tonic::Code::from_bytes(v.as_bytes()))
}

/// Waits until the member holds `bytes` of requests being read.
async fn reading_reaches(reading: &AnswerBudget, bytes: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while reading.in_flight() != bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "never held {bytes} bytes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An open request for a message at the limit, `bytes` of it sent.
async fn sent_in_part(bytes: usize) -> (FrameTx, http::Request<OpenBody>) {
    let (tx, req) = open_request();
    for data in [prefix_of(LIMIT_BYTES), Bytes::from(vec![0u8; bytes])] {
        tx.send(Ok(http_body::Frame::data(data))).await.unwrap();
    }
    (tx, req)
}

/// Requests whose bodies do not end hold the member's request bytes; past
/// its most the next is refused at once, and the bytes come back when a
/// request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_being_read_are_bounded_per_member() {
    let (_cluster, svc) = member().await;
    let most = 2 * (PREFIX_BYTES + LIMIT_BYTES);
    let reading = Arc::new(AnswerBudget::default());
    reading.set_max(most);
    assert_eq!(
        reading_budget(LIMIT_BYTES).max(),
        READING_BYTES_MAX,
        "a small limit leaves the default"
    );
    assert_eq!(
        reading_budget(READING_BYTES_MAX).max(),
        2 * (PREFIX_BYTES + READING_BYTES_MAX),
        "room for two requests at the limit"
    );
    let hand = KvGrpc::new(svc, LIMIT_BYTES, &reading);
    // Two requests at the limit, each 4,000 bytes of its message sent.
    let mut open = Vec::new();
    for i in 1..=2 {
        let (tx, req) = sent_in_part(4000).await;
        let answer = tokio::spawn(hand.clone().call(req));
        reading_reaches(&reading, i * (PREFIX_BYTES + 4000)).await;
        open.push((tx, answer));
    }
    // A third, its body kept open (`_tx`), is refused at its first frame
    // past the most, and gives back what it held.
    let (_tx, req) = sent_in_part(300).await;
    // Without a bound it would wait for the rest of its body for ever.
    let refused = tokio::time::timeout(Duration::from_secs(60), hand.clone().call(req))
        .await
        .expect("refused at once, not left reading")
        .unwrap();
    assert_eq!(status_of(&refused), Some(tonic::Code::ResourceExhausted));
    let why = refused
        .headers()
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
        .replace("%20", " ");
    assert!(why.contains(&format!("at most {most}")), "{why}");
    reading_reaches(&reading, 2 * (PREFIX_BYTES + 4000)).await;
    // The first ends short of its message: tonic's answer, bytes back.
    let (tx1, first) = open.remove(0);
    drop(tx1);
    let first = first.await.unwrap().unwrap();
    assert_eq!(status_of(&first), Some(tonic::Code::Internal), "{first:?}");
    reading_reaches(&reading, PREFIX_BYTES + 4000).await;
    // Room again: a whole read is served.
    let read = framed(
        0,
        &RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let served = hand
        .clone()
        .call(request("/etcdserverpb.KV/Range", read, &[], Shape::Whole))
        .await
        .unwrap();
    assert_eq!(status_of(&served), None, "served: {served:?}");
    drop(open);
    reading_reaches(&reading, 0).await;
}

#[test]
fn an_answer_past_the_prefix_is_refused_not_cut() {
    assert_eq!(framed_len(0).unwrap(), 0);
    assert_eq!(framed_len(u32::MAX as usize).unwrap(), u32::MAX);
    let past = framed_len(u32::MAX as usize + 1).unwrap_err();
    assert_eq!(past.code(), tonic::Code::ResourceExhausted);
    assert!(past.message().contains("more than 4GB"), "{past:?}");
}
