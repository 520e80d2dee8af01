//! User and role changes racing writes (issue 28, item 1), as etcd 3.5.1
//! decides them at apply: with auth disabled nothing is checked, so a
//! change to users or roles never fails an unrelated write, nor another
//! change; with auth enabled a write checked before a revoke and applied
//! after it is refused ("revision of auth store is old"), and root's
//! concurrent auth changes do not refuse each other. The changes are made
//! with etcdctl 3.5.1, the writes over gRPC from many tasks at once, so
//! that some are always between their check and their apply.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::secs;

use crate::common::Cluster;
use secretd_client::pb::etcdserverpb as pb;
use tonic::transport::Channel;

/// Writers at once: each keeps one put in flight.
const WRITERS: usize = 8;

/// etcdctl 3.5.1 against every member of `c`, optionally as `user`
/// (`name:password`): (success, stdout and stderr).
fn ctl(c: &Cluster, user: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(crate::common::etcd35_bin("etcdctl"));
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.endpoints()))
        .args(["--command-timeout=10s", "--dial-timeout=5s"]);
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    let out = cmd.args(args).output().expect("run etcdctl 3.5.1");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `args` run `n` times at once, `{i}` replaced by each run's number: the
/// failures' outputs.
fn parallel(c: &Cluster, user: Option<&str>, n: usize, args: &[&str]) -> Vec<String> {
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..n)
            .map(|i| {
                let args: Vec<String> = args
                    .iter()
                    .map(|a| a.replace("{i}", &i.to_string()))
                    .collect();
                s.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    ctl(c, user, &args)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .filter(|(ok, _)| !ok)
            .map(|(_, out)| out)
            .collect()
    })
}

/// Puts from `WRITERS` tasks, each with `token` if given, until `stop`:
/// (acknowledged puts with their header revision, refusals' messages).
struct Writers {
    stop: Arc<AtomicBool>,
    /// Puts answered so far, acknowledged or refused: (acked, refused).
    counts: Arc<(AtomicUsize, AtomicUsize)>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<i64>, Vec<String>)>>,
}

impl Writers {
    fn start(channels: Vec<Channel>, key_prefix: &str, token: Option<String>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (stop, counts, ch, token) = (
                    stop.clone(),
                    counts.clone(),
                    channels[w % channels.len()].clone(),
                    token.clone(),
                );
                let key = format!("{key_prefix}{w}");
                tokio::spawn(async move {
                    let mut kv = pb::kv_client::KvClient::new(ch);
                    let (mut acked, mut refused) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let put = pb::PutRequest {
                            key: key.clone().into_bytes(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        };
                        let req = match &token {
                            Some(t) => with_token(t, put),
                            None => tonic::Request::new(put),
                        };
                        match kv.put(req).await {
                            Ok(r) => {
                                acked.push(r.into_inner().header.unwrap().revision);
                                counts.0.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                refused.push(e.message().to_string());
                                counts.1.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    (acked, refused)
                })
            })
            .collect();
        Writers {
            stop,
            counts,
            tasks,
        }
    }

    /// Waits (bounded) until `done(acked, refused)` holds for the counts
    /// of answered puts.
    async fn wait_for(&self, what: &str, done: impl Fn(usize, usize) -> bool) {
        let deadline = Instant::now() + secs(30);
        while !done(
            self.counts.0.load(Ordering::Relaxed),
            self.counts.1.load(Ordering::Relaxed),
        ) {
            assert!(Instant::now() < deadline, "writers: no {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn stop(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut acked, mut refused) = (Vec::new(), Vec::new());
        for t in self.tasks {
            let (a, r) = t.await.unwrap();
            acked.extend(a);
            refused.extend(r);
        }
        (acked, refused)
    }
}

fn with_token<T>(token: &str, r: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(r);
    req.metadata_mut().insert("token", token.parse().unwrap());
    req
}

async fn channels(c: &Cluster) -> Vec<Channel> {
    let mut v = Vec::new();
    for i in 0..c.members.len() {
        v.push(c.channel(i).await);
    }
    v
}

/// With auth disabled, etcd checks nothing at apply: etcdctl's user and
/// role changes, eight at once and under a stream of puts, fail nothing.
/// (Before: "etcdserver: revision of auth store is old" for writes and
/// changes that overlapped a change.)
#[tokio::test(flavor = "multi_thread")]
async fn user_and_role_changes_fail_no_write_with_auth_disabled() {
    let c = Cluster::start(3);
    c.wait_leader(secs(20)).await;
    let writers = Writers::start(channels(&c).await, "/w/", None);
    let mut failed = Vec::new();
    for round in 0..3 {
        let u = format!("u{round}-{{i}}");
        let r = format!("r{round}-{{i}}");
        failed.extend(parallel(
            &c,
            None,
            WRITERS,
            &["user", "add", &u, "--no-password"],
        ));
        failed.extend(parallel(&c, None, WRITERS, &["role", "add", &r]));
        failed.extend(parallel(&c, None, WRITERS, &["user", "grant-role", &u, &r]));
        failed.extend(parallel(&c, None, WRITERS, &["put", "/ctl/{i}", "v"]));
        failed.extend(parallel(&c, None, WRITERS, &["role", "delete", &r]));
        failed.extend(parallel(&c, None, WRITERS, &["user", "delete", &u]));
    }
    let (acked, refused) = writers.stop().await;
    assert!(failed.is_empty(), "etcdctl 3.5.1 calls failed: {failed:#?}");
    assert!(
        refused.is_empty(),
        "{} of {} puts refused, e.g. {:?}",
        refused.len(),
        refused.len() + acked.len(),
        refused.first()
    );
    assert!(
        acked.len() > 100,
        "too few puts to race anything: {}",
        acked.len()
    );
}

/// With auth enabled: alice's puts race the revoke of her permission. A
/// put checked before the revoke and applied after it is refused, so no
/// acknowledged put of hers is ordered after the revoke; some are refused
/// for exactly that reason. Root's changes, eight at once, still all
/// succeed (etcd checks them at apply by root's role, not by revision).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_checked_before_a_revoke_is_refused_after_it() {
    let c = Cluster::start_with(3, &["--bcrypt-cost", "4"]);
    c.wait_leader(secs(20)).await;
    let root = Some("root:rootpw");
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &["user", "add", "alice:apw"],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        let (ok, out) = ctl(&c, None, args);
        assert!(ok, "{args:?}: {out}");
    }
    let failed = parallel(&c, root, WRITERS, &["user", "add", "x{i}", "--no-password"]);
    assert!(
        failed.is_empty(),
        "root's concurrent user adds: {failed:#?}"
    );
    let failed = parallel(&c, root, WRITERS, &["role", "add", "r{i}"]);
    assert!(
        failed.is_empty(),
        "root's concurrent role adds: {failed:#?}"
    );

    let chans = channels(&c).await;
    let login = |user: &'static str, password: &'static str| {
        let ch = chans[0].clone();
        async move {
            pb::auth_client::AuthClient::new(ch)
                .authenticate(pb::AuthenticateRequest {
                    name: user.into(),
                    password: password.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .token
        }
    };
    let root_token = login("root", "rootpw").await;
    let mut auth = pb::auth_client::AuthClient::new(chans[0].clone());
    let perm = || secretd_client::pb::authpb::Permission {
        perm_type: 2, // READWRITE
        key: b"/app/".to_vec(),
        range_end: b"/app0".to_vec(),
    };
    let mut caught = 0;
    let deadline = Instant::now() + secs(60);
    for round in 0.. {
        auth.role_grant_permission(with_token(
            &root_token,
            pb::AuthRoleGrantPermissionRequest {
                name: "app".into(),
                perm: Some(perm()),
            },
        ))
        .await
        .unwrap();
        let writers = Writers::start(chans.clone(), "/app/", Some(login("alice", "apw").await));
        // Every writer has had a put acknowledged: puts are in flight.
        writers
            .wait_for("puts acknowledged before the revoke", |a, _| a >= WRITERS)
            .await;
        let revoked = auth
            .role_revoke_permission(with_token(
                &root_token,
                pb::AuthRoleRevokePermissionRequest {
                    role: "app".into(),
                    key: b"/app/".to_vec(),
                    range_end: b"/app0".to_vec(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
        // Puts checked after the revoke are refused; one per writer means
        // each has seen it.
        let seen = writers.counts.1.load(Ordering::Relaxed);
        writers
            .wait_for("puts refused after the revoke", |_, r| r >= seen + WRITERS)
            .await;
        let (acked, refused) = writers.stop().await;
        assert!(
            !acked.is_empty(),
            "round {round}: no put of alice's before the revoke"
        );
        // Every write applied after the revoke has a higher revision.
        let late: Vec<_> = acked.iter().filter(|r| **r > revoked).collect();
        assert!(
            late.is_empty(),
            "round {round}: puts acknowledged after the revoke (at revision {revoked}): {late:?}"
        );
        for why in &refused {
            assert!(
                why.contains("etcdserver: permission denied")
                    || why.contains("etcdserver: revision of auth store is old"),
                "round {round}: {why}"
            );
        }
        caught += refused
            .iter()
            .filter(|w| w.contains("revision of auth store is old"))
            .count();
        if caught > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no put was caught between its check and the revoke in {round} rounds"
        );
    }
}
