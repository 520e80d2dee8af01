//! Watchers on a real 3-member cluster, judged by the fault suite's watch
//! checker against the writer's acknowledged history: one watcher from the
//! past, two live ones on different members, and a slow one that stops
//! reading (so its buffer overflows and it catches up from storage).

use crate::common::Cluster;
use secretd_api::pb::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, DeleteRangeRequest, PutRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use secretd_jepsen::check::watch::{self, Event, Kind, Response, WatcherLog};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const RANGE: (&str, &str) = ("w/", "w0");

async fn open(
    c: &Cluster,
    member: usize,
    start: i64,
) -> (tonic::Streaming<WatchResponse>, mpsc::Sender<WatchRequest>) {
    let (tx, rx) = mpsc::channel(4);
    let create = WatchCreateRequest {
        key: RANGE.0.into(),
        range_end: RANGE.1.into(),
        start_revision: start,
        ..Default::default()
    };
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await
    .unwrap();
    let mut s = WatchClient::new(c.channel(member).await)
        .watch(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = s.message().await.unwrap().unwrap();
    assert!(created.created && !created.canceled);
    (s, tx)
}

fn convert(r: WatchResponse) -> Response {
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kv = e.kv.unwrap();
            let kind = if e.r#type == 0 {
                Kind::Put
            } else {
                Kind::Delete
            };
            Event {
                revision: kv.mod_revision,
                key: String::from_utf8(kv.key).unwrap(),
                value: (kind == Kind::Put).then(|| String::from_utf8(kv.value).unwrap()),
                kind,
            }
        })
        .collect::<Vec<_>>();
    Response {
        revision: r.header.map(|h| h.revision).unwrap_or(0),
        progress: events.is_empty(),
        events,
    }
}

/// Reads responses until the watcher has seen `upto`.
async fn drain(
    name: &str,
    mut s: tonic::Streaming<WatchResponse>,
    start: i64,
    upto: i64,
) -> WatcherLog {
    let mut responses = Vec::new();
    let mut last = 0;
    while last < upto {
        let r = tokio::time::timeout(crate::common::secs(20), s.message())
            .await
            .expect("watch events in time")
            .unwrap()
            .unwrap();
        let r = convert(r);
        last = last.max(r.events.iter().map(|e| e.revision).max().unwrap_or(0));
        responses.push(r);
    }
    WatcherLog {
        name: name.into(),
        key: RANGE.0.into(),
        range_end: RANGE.1.into(),
        start_revision: start,
        responses,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_keep_etcds_guarantees() {
    let c = Cluster::start(3);
    c.wait_leader(crate::common::secs(15)).await;
    let (live1, _k1) = open(&c, 0, 0).await;
    let (live2, _k2) = open(&c, 1, 0).await;
    let (slow, _k3) = open(&c, 2, 0).await; // not read until the end
    let mut committed = Vec::new();
    let mut kv = c.kv(0).await;
    let first = kv
        .put(PutRequest {
            key: "outside".into(),
            value: "o".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    committed.push(Event {
        revision: first.header.unwrap().revision,
        key: "outside".into(),
        kind: Kind::Put,
        value: Some("o".into()),
    });
    let mut clients = [c.kv(0).await, c.kv(1).await, c.kv(2).await];
    for i in 0..1500u32 {
        let kv = &mut clients[(i % 3) as usize];
        let key = format!("w/{:02}", i % 40);
        if i % 7 == 6 {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone().into(),
                    range_end: vec![],
                    prev_kv: false,
                })
                .await
                .unwrap()
                .into_inner();
            if r.deleted == 1 {
                committed.push(Event {
                    revision: r.header.unwrap().revision,
                    key,
                    kind: Kind::Delete,
                    value: None,
                });
            }
        } else {
            let value = format!("v{i}");
            let r = kv
                .put(PutRequest {
                    key: key.clone().into(),
                    value: value.clone().into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            committed.push(Event {
                revision: r.header.unwrap().revision,
                key,
                kind: Kind::Put,
                value: Some(value),
            });
        }
    }
    let upto = committed.last().unwrap().revision;
    let start = first.header.unwrap().revision;
    let (past, _k4) = open(&c, 2, start).await;
    let logs = vec![
        drain("live-on-n1", live1, start, upto).await,
        drain("live-on-n2", live2, start, upto).await,
        drain("slow-on-n3", slow, start, upto).await,
        drain("from-the-past-on-n3", past, start, upto).await,
    ];
    let violations = watch::check(&logs, &committed);
    assert!(violations.is_empty(), "{violations:#?}");
    // The slow watcher really fell behind and was caught up from storage.
    assert!(logs
        .iter()
        .all(|w| w.responses.iter().map(|r| r.events.len()).sum::<usize>() > 1000));
}
