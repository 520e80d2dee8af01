//! The object store: what a secret is at rest, its versions, and what a
//! task's use of an object protects.

use secretd_crypto::SealedHeader;

use super::{create_request, secret, stored, task, Objects, HISTORY};
use crate::layout::{self, Kind};
use crate::Error;

/// A secret's data is sealed before it is proposed: what the keyspace
/// holds is a blob under KEK generation 1, not the plaintext, and it opens
/// back to the plaintext. A config is stored as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_sealed_at_rest_and_opens_to_its_data() {
    let o = Objects::start(1).await;
    let store = &o.stores[0];
    let plain = b"correct horse battery staple";
    let id = store
        .create(Kind::Secret, create_request("db-password", plain))
        .await
        .unwrap();

    let blob = stored(o.node(0), layout::data_key(&id, 1))
        .await
        .expect("version 1 is stored");
    assert!(
        !blob.windows(plain.len()).any(|w| w == plain),
        "the plaintext is in the stored blob"
    );
    assert_eq!(SealedHeader::parse(&blob).unwrap().kek_id, 1);
    let object = stored(o.node(0), layout::object_key(Kind::Secret, &id))
        .await
        .unwrap();
    assert!(
        !object.windows(plain.len()).any(|w| w == plain),
        "the plaintext is in the object record"
    );
    assert_eq!(
        store.open_secret(&id, 1, false).await.unwrap().expose(),
        plain
    );

    let inspected = store.inspect(Kind::Secret, "db-password").await.unwrap();
    assert_eq!(inspected.id, id);
    assert_eq!(inspected.current_version, 1);
    assert!(inspected.spec.unwrap().data.is_empty(), "no data in a spec");

    let config = store
        .create(Kind::Config, create_request("app.conf", b"port = 80"))
        .await
        .unwrap();
    assert_eq!(
        store.config_data(&config, false).await.unwrap(),
        b"port = 80"
    );
    assert!(
        stored(o.node(0), layout::data_key(&config, 1))
            .await
            .is_none(),
        "a config has no sealed versions"
    );
}

/// A name is taken once per kind, and a sealed blob opens only as the
/// version it was sealed for (the encryption context binds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_and_blobs_are_bound_to_their_version() {
    let o = Objects::start(1).await;
    let store = &o.stores[0];
    let id = store
        .create(Kind::Secret, create_request("token", b"one"))
        .await
        .unwrap();
    match store
        .create(Kind::Secret, create_request("token", b"two"))
        .await
    {
        Err(Error::AlreadyExists(m)) => assert!(m.contains("token"), "{m}"),
        other => panic!("a second secret of the same name: {other:?}"),
    }
    // A config may share a secret's name.
    store
        .create(Kind::Config, create_request("token", b"x"))
        .await
        .unwrap();

    store.rotate(&id, secret(b"two")).await.unwrap();
    let v1 = stored(o.node(0), layout::data_key(&id, 1)).await.unwrap();
    let ctx = crate::aad::secret_version(&id, 2);
    assert!(
        store.keys().open(&ctx, &v1).await.is_err(),
        "version 1's blob opened as version 2"
    );
}

/// Rotating a secret adds a version; the newest `HISTORY` old versions
/// are kept with the current one, older ones are deleted, and each kept
/// version opens to its own data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_kept_up_to_the_history_and_pruned_past_it() {
    let o = Objects::start(1).await;
    let store = &o.stores[0];
    let id = store
        .create(Kind::Secret, create_request("api-key", b"v1"))
        .await
        .unwrap();
    for v in 2..=5u64 {
        let (rotated, version) = store
            .rotate("api-key", secret(format!("v{v}").as_bytes()))
            .await
            .unwrap();
        assert_eq!((rotated.as_str(), version), (id.as_str(), v));
    }
    let object = store.inspect(Kind::Secret, &id).await.unwrap();
    assert_eq!(object.current_version, 5);
    let kept: Vec<u64> = object.versions.iter().map(|v| v.version).collect();
    assert_eq!(
        kept,
        vec![3, 4, 5],
        "{HISTORY} old versions and the current"
    );
    for v in 3..=5u64 {
        assert_eq!(
            store.open_secret(&id, v, false).await.unwrap().expose(),
            format!("v{v}").as_bytes()
        );
    }
    for v in 1..=2u64 {
        assert!(
            matches!(
                store.open_secret(&id, v, false).await,
                Err(Error::Missing(_))
            ),
            "version {v} was pruned"
        );
        assert!(stored(o.node(0), layout::data_key(&id, v)).await.is_none());
    }
}

/// A version a task pins outlives the history; an object a task uses
/// cannot be removed, and can once the task is gone, taking every
/// version with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_in_use_are_kept_and_pinned_versions_outlive_the_history() {
    let o = Objects::start(1).await;
    let store = &o.stores[0];
    let id = store
        .create(Kind::Secret, create_request("cert", b"v1"))
        .await
        .unwrap();
    let t = store
        .task_create(task("web-1", &[("cert", 1)]))
        .await
        .unwrap();
    assert_eq!(t.secrets[0].source_id, id);
    for v in 2..=5u64 {
        store
            .rotate("cert", secret(format!("v{v}").as_bytes()))
            .await
            .unwrap();
    }
    let kept: Vec<u64> = store
        .inspect(Kind::Secret, &id)
        .await
        .unwrap()
        .versions
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(kept, vec![1, 4, 5], "the pinned version and the history");
    assert_eq!(
        store.open_secret(&id, 1, false).await.unwrap().expose(),
        b"v1"
    );

    match store.remove(Kind::Secret, "cert").await {
        Err(Error::Invalid(m)) => assert!(m.contains("in use") && m.contains("web-1"), "{m}"),
        other => panic!("removed a secret in use: {other:?}"),
    }
    assert_eq!(
        store.open_secret(&id, 5, false).await.unwrap().expose(),
        b"v5"
    );

    // A task cannot pin a version that is gone.
    match store.task_create(task("web-2", &[("cert", 2)])).await {
        Err(Error::Invalid(m)) => assert!(m.contains("no version 2"), "{m}"),
        other => panic!("a task pinned a pruned version: {other:?}"),
    }

    store.task_remove("web-1").await.unwrap();
    assert_eq!(store.remove(Kind::Secret, "cert").await.unwrap(), id);
    assert!(matches!(
        store.inspect(Kind::Secret, &id).await,
        Err(Error::NotFound { .. })
    ));
    for v in [1, 4, 5] {
        assert!(stored(o.node(0), layout::data_key(&id, v)).await.is_none());
    }
}

/// A list comes in pages by ID, each bounded in objects and bytes, and the
/// pages together hold every object once. A list asked for in one answer
/// that does not fit one page is refused, naming paging, never cut short;
/// a token that is not one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_comes_in_pages_and_one_too_large_for_an_answer_is_refused() {
    use crate::pb::secretstore::ListRequest;
    use crate::store::LIST_PAGE_BYTES_MAX;

    let o = Objects::start(1).await;
    let store = &o.stores[0];
    for i in 0..25 {
        store
            .create(Kind::Config, create_request(&format!("small-{i:02}"), b"x"))
            .await
            .unwrap();
    }
    let mut req = ListRequest {
        page_size: 10,
        ..Default::default()
    };
    let (mut sizes, mut names) = (Vec::new(), std::collections::BTreeSet::new());
    loop {
        let page = store.list(Kind::Config, &req).await.unwrap();
        sizes.push(page.objects.len());
        names.extend(page.objects.iter().map(|o| o.spec.clone().unwrap().name));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(names.len(), 25, "each object once");
    let all = store.list(Kind::Config, &ListRequest::default()).await;
    assert_eq!(all.unwrap().objects.len(), 25, "25 fit one answer");

    // Pages that end inside, and exactly at, the member's read chunks.
    for i in 25..300 {
        store
            .create(Kind::Config, create_request(&format!("small-{i:03}"), b"x"))
            .await
            .unwrap();
    }
    for (page_size, want) in [(200, vec![200, 100]), (128, vec![128, 128, 44])] {
        let mut req = ListRequest {
            page_size,
            ..Default::default()
        };
        let (mut sizes, mut ids) = (Vec::new(), std::collections::BTreeSet::new());
        loop {
            let page = store.list(Kind::Config, &req).await.unwrap();
            sizes.push(page.objects.len());
            ids.extend(page.objects.into_iter().map(|o| o.id));
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
        }
        assert_eq!(sizes, want, "page size {page_size}");
        assert_eq!(ids.len(), 300, "each object once");
    }

    // 13 objects of 64 labels of 4 KiB: more bytes than one answer holds.
    let label = "v".repeat(4096);
    for i in 0..13 {
        let mut r = create_request(&format!("big-{i:02}"), b"x");
        r.labels = (0..64)
            .map(|l| (format!("l{l:02}"), label.clone()))
            .collect();
        store.create(Kind::Secret, r).await.unwrap();
    }
    let refused = store.list(Kind::Secret, &ListRequest::default()).await;
    match refused {
        Err(Error::Precondition(m)) => assert!(m.contains("list them in pages"), "{m}"),
        other => panic!("an unpaged list past {LIST_PAGE_BYTES_MAX} bytes: {other:?}"),
    }
    let mut req = ListRequest {
        page_size: 100,
        ..Default::default()
    };
    let mut got = 0;
    loop {
        let page = store.list(Kind::Secret, &req).await.unwrap();
        let bytes: usize = page.objects.iter().map(prost::Message::encoded_len).sum();
        assert!(bytes <= LIST_PAGE_BYTES_MAX, "a page of {bytes} bytes");
        assert!(!page.objects.is_empty());
        got += page.objects.len();
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(got, 13);

    for bad in [
        ListRequest {
            page_token: "abc".into(),
            ..Default::default()
        },
        ListRequest {
            page_size: 5,
            page_token: "../obj".into(),
            ..Default::default()
        },
    ] {
        let e = store.list(Kind::Secret, &bad).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    }
}

/// Tasks list in pages as objects do (`listing`): each page within its
/// bytes, every task once, the node filter within the pages; the whole
/// list in one answer only while it fits one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_list_comes_in_pages_and_one_too_large_for_an_answer_is_refused() {
    use crate::pb::secretstore::ListTasksRequest;
    use crate::store::LIST_PAGE_BYTES_MAX;

    let o = Objects::start(1).await;
    let store = &o.stores[0];
    store
        .create(Kind::Secret, create_request("cert", b"x"))
        .await
        .unwrap();
    // 60 tasks of 60 KiB of environment each, on n1 and n2 in turn.
    for i in 0..60 {
        let mut t = task(&format!("t{i:02}"), &[("cert", 0)]);
        t.node = if i % 2 == 0 { "n1" } else { "n2" }.into();
        t.env = [("BIG".to_string(), "e".repeat(60 << 10))].into();
        store.task_create(t).await.unwrap();
    }
    match store.task_page(&ListTasksRequest::default()).await {
        Err(Error::Precondition(m)) => assert!(m.contains("list them in pages"), "{m}"),
        other => panic!("an unpaged task list past {LIST_PAGE_BYTES_MAX} bytes: {other:?}"),
    }
    for (node, page_size, want) in [("", 7, 60), ("", 100, 60), ("n1", 9, 30)] {
        let mut req = ListTasksRequest {
            node: node.into(),
            page_size,
            ..Default::default()
        };
        let (mut ids, mut pages) = (std::collections::BTreeSet::new(), 0);
        loop {
            let page = store.task_page(&req).await.unwrap();
            let bytes: usize = page.tasks.iter().map(prost::Message::encoded_len).sum();
            assert!(bytes <= LIST_PAGE_BYTES_MAX, "a page of {bytes} bytes");
            assert!(page.tasks.len() <= page_size as usize);
            assert!(node.is_empty() || page.tasks.iter().all(|t| t.node == node));
            for t in page.tasks {
                assert!(ids.insert(t.id.clone()), "{} twice", t.id);
            }
            pages += 1;
            if page.next_page_token.is_empty() {
                break;
            }
            req.page_token = page.next_page_token;
        }
        assert_eq!(ids.len(), want, "node {node:?}, pages of {page_size}");
        assert!(pages > 1, "60 tasks of 60 KiB in one page");
    }
    // The filter applies within a page: six scanned, three on n1.
    let few = ListTasksRequest {
        node: "n1".into(),
        page_size: 6,
        page_token: "t50".into(),
    };
    let tail = store.task_page(&few).await.unwrap();
    let ids: Vec<_> = tail.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["t52", "t54", "t56"]);
    for bad in [
        ListTasksRequest {
            page_token: "t01".into(),
            ..Default::default()
        },
        ListTasksRequest {
            page_size: 5,
            page_token: "../obj".into(),
            ..Default::default()
        },
        ListTasksRequest {
            node: "no/such".into(),
            ..Default::default()
        },
    ] {
        let e = store.task_page(&bad).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    }
}
