//! Watch streams over the gRPC API, where etcdctl 3.4 cannot reach:
//! progress notifications (periodic ones for watchers that asked, and on
//! request), and a stream whose client half-closed its requests.

use crate::common::Cluster;
use secretd_api::pb::etcdserverpb::WatchResponse;
use secretd_api::pb::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, PutRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn next(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(crate::common::secs(5), s.message())
        .await
        .expect("response in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn periodic_and_requested_progress() {
    let c = Cluster::start_with(
        1,
        &["--experimental-watch-progress-notify-interval", "300ms"],
    );
    c.wait_leader(crate::common::secs(10)).await;
    let mut kv = c.kv(0).await;
    kv.put(PutRequest {
        key: "p".into(),
        value: "1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut w = WatchClient::new(c.channel(0).await);
    let create = WatchCreateRequest {
        key: "p".into(),
        progress_notify: true,
        ..Default::default()
    };
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await
    .unwrap();
    let mut stream = w.watch(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let created: WatchResponse = next(&mut stream).await;
    assert!(created.created);
    // Idle: a progress notification at the current revision.
    let p: WatchResponse = next(&mut stream).await;
    assert!(p.events.is_empty() && !p.canceled);
    assert_eq!(p.header.unwrap().revision, 2);
    // A write comes as an event, then progress moves past it.
    kv.put(PutRequest {
        key: "p".into(),
        value: "2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut saw_event = false;
    for _ in 0..5 {
        let r: WatchResponse = next(&mut stream).await;
        if !r.events.is_empty() {
            assert_eq!(r.events[0].kv.as_ref().unwrap().mod_revision, 3);
            saw_event = true;
            break;
        }
    }
    assert!(saw_event);
    // Requested progress: watch id -1, header at the current revision.
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await
    .unwrap();
    loop {
        let r: WatchResponse = next(&mut stream).await;
        if r.watch_id == -1 {
            assert_eq!(r.header.unwrap().revision, 3);
            break;
        }
    }
}

/// A client that sends its create request and then closes its request
/// stream (half-close) keeps its watcher, as with etcd: the responses
/// outlive the requests. The stream once ended with OK right after
/// `created`, and every later event was lost without an error.
#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_watch_keeps_delivering() {
    use secretd_client::pb::etcdserverpb as pb;
    let c = Cluster::start(1);
    c.wait_leader(crate::common::secs(10)).await;
    let mut kv = c.kv(0).await;
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: "half".into(),
                ..Default::default()
            },
        )),
    };
    // One request, then the request stream ends: tonic half-closes it.
    let mut stream = pb::watch_client::WatchClient::new(c.channel(0).await)
        .watch(futures::stream::iter([create]))
        .await
        .unwrap()
        .into_inner();
    assert!(next_or_end(&mut stream).await.created);
    for v in ["1", "2"] {
        kv.put(PutRequest {
            key: "half".into(),
            value: v.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let r = next_or_end(&mut stream).await;
        let got = &r.events[0].kv.as_ref().unwrap().value;
        assert_eq!(got, v.as_bytes(), "{r:?}");
    }
}

/// The next response, failing the test if the stream ends, fails or
/// stays silent for 5 s.
async fn next_or_end(
    s: &mut tonic::Streaming<secretd_client::pb::etcdserverpb::WatchResponse>,
) -> secretd_client::pb::etcdserverpb::WatchResponse {
    match tokio::time::timeout(crate::common::secs(5), s.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("the watch ended (status OK) after the client half-closed"),
        Ok(Err(e)) => panic!("the watch failed: {e}"),
        Err(_) => panic!("no response within 5 s"),
    }
}
