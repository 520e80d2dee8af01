//! The keyring: KEK generations across a rotation and between members,
//! and autolock.

use secretd_crypto::SealedHeader;

use super::{create_request, load_keys, secret, stored, Objects};
use crate::layout::{self, Kind};
use crate::store::ObjectStore;
use crate::Error;

/// A KEK rotation adds generation 2, re-wraps every stored version under
/// it and retires generation 1; every version, old ones included, still
/// opens, and versions sealed after it use generation 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kek_rotation_rewraps_every_version_and_old_ones_still_open() {
    let o = Objects::start(1).await;
    let store = &o.stores[0];
    let a = store
        .create(Kind::Secret, create_request("a", b"a1"))
        .await
        .unwrap();
    store.rotate("a", secret(b"a2")).await.unwrap();
    let b = store
        .create(Kind::Secret, create_request("b", b"b1"))
        .await
        .unwrap();
    assert_eq!(store.keys().status().await.unwrap(), (vec![1], vec![1]));

    let rotated = store.keys().rotate().await.unwrap();
    assert_eq!(rotated.generation, 2);
    assert_eq!(rotated.retired, vec![1]);
    assert_eq!(rotated.rewrapped, 3, "a's two versions and b's one");
    assert_eq!(store.keys().status().await.unwrap(), (vec![2], vec![2]));
    for (id, v) in [(&a, 1), (&a, 2), (&b, 1)] {
        let blob = stored(o.node(0), layout::data_key(id, v)).await.unwrap();
        assert_eq!(SealedHeader::parse(&blob).unwrap().kek_id, 2, "{id} v{v}");
    }
    assert_eq!(
        store.open_secret(&a, 1, false).await.unwrap().expose(),
        b"a1"
    );
    assert_eq!(
        store.open_secret(&a, 2, false).await.unwrap().expose(),
        b"a2"
    );
    assert_eq!(
        store.open_secret(&b, 1, false).await.unwrap().expose(),
        b"b1"
    );

    store.rotate("b", secret(b"b2")).await.unwrap();
    let blob = stored(o.node(0), layout::data_key(&b, 2)).await.unwrap();
    assert_eq!(SealedHeader::parse(&blob).unwrap().kek_id, 2);
    assert_eq!(
        store.open_secret(&b, 2, false).await.unwrap().expose(),
        b"b2"
    );
}

/// A cluster's first burst of creates on one member: one of them creates
/// the KEK, and the rest find the keyring in step once they get its lock
/// instead of each running a full sync after the other (the last of 64
/// waited ~100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_burst_of_creates_syncs_the_keyring_once() {
    let o = Objects::start(3).await;
    let store = &o.stores[0];
    let before = store.keys().syncs_locked();
    let creates =
        (0..32).map(|i| store.create(Kind::Secret, create_request(&format!("burst-{i}"), b"v")));
    for r in futures::future::join_all(creates).await {
        r.expect("every create of the burst succeeds");
    }
    // The create's own sync, and the background loop's (it may run once
    // before the generation is registered, and once as it is); without
    // the second look under the lock, one per create.
    let syncs = store.keys().syncs_locked() - before;
    assert!(
        (1..=3).contains(&syncs),
        "{syncs} full syncs for 32 creates"
    );
}

/// Key material never enters the log: a member that sealed nothing opens
/// another member's secret by fetching the generation from it, checked
/// against the registered verifier, and after a rotation on a third
/// member every member opens everything under the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_fetch_the_generations_they_lack_from_peers() {
    let o = Objects::start(3).await;
    let id = o.stores[0]
        .create(Kind::Secret, create_request("shared", b"s1"))
        .await
        .unwrap();
    assert_eq!(
        o.stores[1]
            .open_secret(&id, 1, false)
            .await
            .unwrap()
            .expose(),
        b"s1"
    );
    let rotated = o.stores[2].keys().rotate().await.unwrap();
    assert_eq!((rotated.generation, rotated.retired), (2, vec![1]));
    for (i, store) in o.stores.iter().enumerate() {
        assert_eq!(
            store.open_secret(&id, 1, false).await.unwrap().expose(),
            b"s1",
            "member {i}"
        );
    }
    o.stores[1].rotate("shared", secret(b"s2")).await.unwrap();
    assert_eq!(
        o.stores[0]
            .open_secret(&id, 2, false)
            .await
            .unwrap()
            .expose(),
        b"s2"
    );
}

/// A member seals under the generation it last checked without reading
/// the registry again; a rotation on another member makes that seal's
/// guard fail, and the create and the rotate that follow land under the
/// new generation on their own, never under a retired one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seal_from_a_stale_generation_is_refused_and_done_again() {
    let o = Objects::start(3).await;
    let first = o.stores[0]
        .create(Kind::Secret, create_request("before", b"b1"))
        .await
        .unwrap();
    let blob = stored(o.node(0), layout::data_key(&first, 1))
        .await
        .unwrap();
    assert_eq!(SealedHeader::parse(&blob).unwrap().kek_id, 1);

    let rotated = o.stores[2].keys().rotate().await.unwrap();
    assert_eq!((rotated.generation, rotated.retired), (2, vec![1]));

    let after = o.stores[0]
        .create(Kind::Secret, create_request("after", b"a1"))
        .await
        .unwrap();
    o.stores[0].rotate("before", secret(b"b2")).await.unwrap();
    for (id, v) in [(&after, 1), (&first, 2), (&first, 1)] {
        let blob = stored(o.node(0), layout::data_key(id, v)).await.unwrap();
        assert_eq!(SealedHeader::parse(&blob).unwrap().kek_id, 2, "{id} v{v}");
    }
    for (i, store) in o.stores.iter().enumerate() {
        let got = store.open_secret(&after, 1, false).await.unwrap();
        assert_eq!(got.expose(), b"a1", "member {i}");
    }
}

/// Under autolock a restarted member is locked: it opens nothing, a
/// wrong unlock key leaves it locked, and the cluster's key unlocks it,
/// after which every version opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_member_opens_nothing_until_unlocked() {
    let o = Objects::start(1).await;
    let id = o.stores[0]
        .create(Kind::Secret, create_request("vault", b"v1"))
        .await
        .unwrap();
    let unlock_key = o.stores[0]
        .keys()
        .set_autolock(true)
        .await
        .unwrap()
        .expect("an unlock key");
    assert_eq!(
        o.stores[0]
            .open_secret(&id, 1, false)
            .await
            .unwrap()
            .expose(),
        b"v1",
        "switching autolock on does not lock a running member"
    );

    // A restart: the keyring is loaded again from the data directory.
    let node = o.node(0);
    let keys = load_keys(node, &o.peers);
    let store = ObjectStore::new(node.clone(), keys.clone(), super::HISTORY);
    assert!(keys.is_locked());
    assert!(matches!(
        store.open_secret(&id, 1, false).await,
        Err(Error::Locked)
    ));

    let other = o.stores[0].keys().unlock_key(false).await.unwrap();
    assert_eq!(other, unlock_key, "the running member tells the same key");
    let mut wrong = unlock_key.clone().into_bytes();
    let last = wrong.len() - 1;
    wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
    assert!(keys
        .unlock(String::from_utf8(wrong).unwrap())
        .await
        .is_err());
    assert!(keys.is_locked(), "a wrong key changes nothing");

    keys.unlock(unlock_key).await.unwrap();
    assert!(!keys.is_locked());
    assert_eq!(
        store.open_secret(&id, 1, false).await.unwrap().expose(),
        b"v1"
    );
    assert!(matches!(
        keys.unlock(String::new()).await,
        Err(Error::Invalid(_)) | Err(Error::NotLocked)
    ));
}
