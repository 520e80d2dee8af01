//! Lock and Election side by side with etcd 3.5.1, through the JSON
//! gateway: the same answers.

use std::time::Duration;

use secretd_client::pb::v3electionpb::{
    election_client::ElectionClient, LeaderKey, ProclaimRequest, ResignRequest,
};
use secretd_client::pb::v3lockpb::{lock_client::LockClient, UnlockRequest};

use crate::common::{etcd35_bin, secs, Cluster, Etcd};
use crate::etcdctl::{http, masked};

use super::{base64_of, campaign_req, err_of, keys_in_line, leader_req, lock_req};

/// The same requests to etcd 3.5.1 and to secretd, through the JSON
/// gateway (each answer compared as JSON after masking cluster and member
/// IDs and terms) and through gRPC (codes and messages of the errors).
#[tokio::test(flavor = "multi_thread")]
async fn lock_and_election_answer_as_etcd_3_5_does() {
    let etcd = Etcd::start(&etcd35_bin("etcd"));
    let c = Cluster::start(1);
    c.wait_leader(secs(15)).await;
    let b = |s: &str| base64_of(s.as_bytes());
    let leader = |key: &str, rev: i64| {
        format!(
            r#"{{"name":"{}","key":"{}","rev":"{rev}","lease":"4660"}}"#,
            b("el"),
            b(key)
        )
    };
    let lock = |name: &str, lease: &str| format!(r#"{{"name":"{}","lease":"{lease}"}}"#, b(name));
    let named = |name: &str| format!(r#"{{"name":"{}"}}"#, b(name));
    let key = |k: &str| format!(r#"{{"key":"{}"}}"#, b(k));
    let campaign = |value: &str| {
        format!(
            r#"{{"name":"{}","lease":"4660","value":"{}"}}"#,
            b("el"),
            b(value)
        )
    };
    let proclaim = |rev: i64, value: &str| {
        format!(
            r#"{{"leader":{},"value":"{}"}}"#,
            leader("el/1234", rev),
            b(value)
        )
    };
    let resign = |rev: i64| format!(r#"{{"leader":{}}}"#, leader("el/1234", rev));
    let table: Vec<(&str, String)> = vec![
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"4660"}"#.into()),
        ("/v3/lease/grant", r#"{"TTL":"60","ID":"4661"}"#.into()),
        ("/v3/lock/lock", lock("lk", "4660")),
        ("/v3/lock/lock", lock("lk", "4660")),
        ("/v3/lock/lock", lock("lk", "999")),
        ("/v3/lock/unlock", key("lk/1234")),
        ("/v3/lock/unlock", "{}".into()),
        ("/v3beta/lock/unlock", key("nothing")),
        ("/v3/election/leader", named("el")),
        ("/v3/election/campaign", campaign("v1")),
        ("/v3/election/campaign", campaign("v1b")),
        ("/v3/election/campaign", lock("el", "999")),
        ("/v3/election/leader", named("el")),
        ("/v3/election/proclaim", "{}".into()),
        ("/v3/election/proclaim", proclaim(1, "x")),
        ("/v3/election/proclaim", proclaim(4, "v2")),
        ("/v3/election/observe", named("el")),
        ("/v3/election/resign", "{}".into()),
        ("/v3/election/resign", r#"{"leader":{}}"#.into()),
        ("/v3/election/resign", resign(4)),
        ("/v3/election/resign", resign(4)),
        ("/v3/election/leader", named("el")),
        ("/v3/lock/lock", lock("w", "4660")),
    ];
    let sp = c.members[0].client_port;
    for (path, body) in &table {
        // Observe streams: what it says within a second.
        let read_for = if path.ends_with("observe") {
            secs(1)
        } else {
            Duration::ZERO
        };
        let theirs = http(etcd.client_port, "POST", path, body, read_for);
        let ours = http(sp, "POST", path, body, read_for);
        assert_eq!(
            (ours.0, masked(&ours.1)),
            (theirs.0, masked(&theirs.1)),
            "POST {path} {body}\n ours: {}\netcd's: {}",
            ours.1,
            theirs.1
        );
    }
    // A Lock that waits: answered once the holder unlocks, alike.
    let mut waiting = Vec::new();
    for port in [etcd.client_port, sp] {
        let body = format!(r#"{{"name":"{}","lease":"4661"}}"#, b("w"));
        waiting.push(std::thread::spawn(move || {
            http(port, "POST", "/v3/lock/lock", &body, secs(10))
        }));
    }
    for port in [etcd.client_port, sp] {
        let ch = secretd_client::channel(&format!("127.0.0.1:{port}"), None, None).unwrap();
        keys_in_line(&ch, b"w/", 2).await;
        let body = format!(r#"{{"key":"{}"}}"#, b("w/1234"));
        assert_eq!(
            http(port, "POST", "/v3/lock/unlock", &body, Duration::ZERO).0,
            200
        );
    }
    let answers: Vec<_> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        (answers[1].0, masked(&answers[1].1)),
        (answers[0].0, masked(&answers[0].1)),
        "a waiting Lock: ours {}, etcd's {}",
        answers[1].1,
        answers[0].1
    );

    // gRPC: the same errors, with the same codes.
    let mut errors = Vec::new();
    for ep in [etcd.endpoint(), c.endpoint(0)] {
        let ch = secretd_client::channel(&ep, None, Some(secs(5))).unwrap();
        let (mut lock, mut elect) = (LockClient::new(ch.clone()), ElectionClient::new(ch));
        errors.push(vec![
            err_of(lock.lock(lock_req("g", 999)).await),
            err_of(lock.unlock(UnlockRequest::default()).await),
            err_of(elect.leader(leader_req("g")).await),
            err_of(elect.campaign(campaign_req("g", 999, "v")).await),
            err_of(elect.proclaim(ProclaimRequest::default()).await),
            err_of(elect.resign(ResignRequest::default()).await),
            err_of(
                elect
                    .proclaim(ProclaimRequest {
                        leader: Some(LeaderKey {
                            key: b"g/1".to_vec(),
                            rev: 5,
                            lease: 4660,
                            ..Default::default()
                        }),
                        value: vec![],
                    })
                    .await,
            ),
        ]);
    }
    assert_eq!(errors[1], errors[0], "ours, then etcd's");
}
