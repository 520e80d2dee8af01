//! Watch progress notifications over the gRPC API (etcdctl 3.4 cannot ask
//! for them): periodic ones for watchers that asked, and on request.

use std::time::Duration;

use crate::common::Cluster;
use secretd_api::pb::etcdserverpb::WatchResponse;
use secretd_api::pb::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, PutRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn next(s: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(5), s.message())
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
    c.wait_leader(Duration::from_secs(10)).await;
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
