//! etcd auth tokens across members: a token names the raft index that
//! issued it, and a member that has not applied that index yet waits for
//! it, but only for what the cluster has committed. A real token just
//! issued by another member works at once on every member; a forged one
//! naming an index nobody committed is refused at once, not after the
//! request timeout.

use std::time::{Duration, Instant};

use crate::common::Cluster;
use secretd_client::pb::etcdserverpb as pb;
use tonic::transport::Channel;

const ROOT_PASSWORD: &str = "root-pw";

/// A range of `k` through member `i`'s channel with `token`, and how long
/// the answer took.
async fn range_with(ch: Channel, token: &str) -> (Result<(), tonic::Status>, Duration) {
    let mut req = tonic::Request::new(pb::RangeRequest {
        key: "k".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("token", token.parse().expect("a token is ASCII"));
    let t = Instant::now();
    let r = pb::kv_client::KvClient::new(ch).range(req).await.map(drop);
    (r, t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_wait_only_for_committed_entries() {
    let c = Cluster::start_with(3, &["--bcrypt-cost", "4"]);
    c.wait_leader(crate::common::secs(20)).await;
    let mut auth = pb::auth_client::AuthClient::new(c.channel(0).await);
    auth.user_add(pb::AuthUserAddRequest {
        name: "root".into(),
        password: ROOT_PASSWORD.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    auth.user_grant_role(pb::AuthUserGrantRoleRequest {
        user: "root".into(),
        role: "root".into(),
    })
    .await
    .unwrap();
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();

    // Issued by member 0, used at once on the others: each waits (briefly)
    // for the entry that issued it, and takes it.
    for other in [1, 2] {
        let token = auth
            .authenticate(pb::AuthenticateRequest {
                name: "root".into(),
                password: ROOT_PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let (r, took) = range_with(c.channel(other).await, &token).await;
        assert!(r.is_ok(), "member {other} refused a real token: {r:?}");
        eprintln!("a fresh token on member {other}: answered in {took:?}");
    }

    // A forged token naming an index far past anything committed: refused
    // as invalid, at once, on every member.
    for i in 0..3 {
        let forged = format!("{}.{}", "A".repeat(32), u64::MAX / 2);
        let (r, took) = range_with(c.channel(i).await, &forged).await;
        let e = r.expect_err("a forged token was accepted");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("invalid auth token"), "{e:?}");
        assert!(
            took < crate::common::secs(2),
            "member {i} took {took:?} to refuse a forged token"
        );
    }
}
