//! The plaintext canary: secrets carry unique random canary strings; after
//! rotations, raft snapshots, a RocksDB flush and compaction, and a member
//! restart, no byte of any file under any member's data directory holds
//! any canary. A config's canary (configs are stored plain) must be found
//! by the same scan, so the scan is shown to work.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use common::Cluster;
use rand::RngCore;
use secretd_api::pb::secretstore::{
    configs_client::ConfigsClient, secrets_client::SecretsClient, CreateRequest, RotateRequest,
};

const SECRETS: usize = 200;
const ROTATED: usize = 60;

fn canary() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    // Random hex, unique per secret: compression cannot turn a repeated
    // prefix into a back-reference and hide it.
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Which patterns occur anywhere under `dir`: (pattern index, file).
fn scan(dir: &Path, ac: &AhoCorasick) -> (Vec<(usize, String)>, usize, u64) {
    let mut list = Vec::new();
    files(dir, &mut list);
    let mut hits = Vec::new();
    let mut bytes = 0;
    for f in &list {
        let data = std::fs::read(f).unwrap_or_default();
        bytes += data.len() as u64;
        for m in ac.find_overlapping_iter(&data) {
            hits.push((m.pattern().as_usize(), f.display().to_string()));
        }
    }
    (hits, list.len(), bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_plaintext_reaches_any_file() {
    let mut c = Cluster::start_with(
        3,
        &[
            "--snapshot-count",
            "60",
            "--experimental-snapshot-catchup-entries",
            "10",
        ],
    );
    let leader = c.wait_leader(Duration::from_secs(15)).await;
    let follower = (leader + 1) % 3;
    // A member that misses everything and must catch up by raft snapshot
    // (--snapshot-count 60 truncates the log long before it returns).
    let lagger = (leader + 2) % 3;
    c.kill9(lagger);

    // 200 secrets through a follower (forwarded proposals), 8 at a time.
    let mut canaries: Vec<String> = (0..SECRETS).map(|_| canary()).collect();
    let secrets = SecretsClient::new(c.channel(follower).await);
    let mut ids = Vec::new();
    for chunk in canaries.chunks(8).enumerate() {
        let mut calls = Vec::new();
        for (j, can) in chunk.1.iter().enumerate() {
            let mut s = secrets.clone();
            let name = format!("canary{}", chunk.0 * 8 + j);
            let data = format!("password={can};\n").into_bytes();
            calls.push(tokio::spawn(async move {
                s.create(CreateRequest {
                    name,
                    labels: Default::default(),
                    data,
                })
                .await
            }));
        }
        for call in calls {
            ids.push(call.await.unwrap().expect("create secret").into_inner().id);
        }
    }
    // Rotate some: the new versions carry new canaries.
    let mut s = SecretsClient::new(c.channel(leader).await);
    for id in ids.iter().take(ROTATED) {
        let can = canary();
        s.rotate(RotateRequest {
            name_or_id: id.clone(),
            data: format!("rotated={can}").into_bytes(),
        })
        .await
        .expect("rotate");
        canaries.push(can);
    }
    // The positive control: a config, stored plain.
    let config_canary = canary();
    ConfigsClient::new(c.channel(leader).await)
        .create(CreateRequest {
            name: "control".into(),
            labels: Default::default(),
            data: format!("setting={config_canary}").into_bytes(),
        })
        .await
        .expect("create config");

    // RocksDB flush and compaction on the running members.
    let running = format!("{},{}", c.endpoint(leader), c.endpoint(follower));
    let out = c.etcdctl_at(&running, &["defrag"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Restart the lagging member: it receives a raft snapshot, then the
    // KEK from a peer, and serves every secret.
    c.spawn(lagger);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = c.secretctl_at(&c.endpoint(lagger), &["secret", "ls", "-q"], None);
        let listed = out
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        if out.status.success() && listed == SECRETS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member does not list the secrets: {}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(&c.members[lagger].log).unwrap();
    assert!(
        log.contains("installed snapshot"),
        "the lagging member caught up without a raft snapshot"
    );
    // Every member holds the cluster's KEK, received from the one that
    // created it and checked against its verifier.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        loop {
            let out = c.secretctl_at(&c.endpoint(i), &["cluster", "settings"], None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("held by this member:   1\n") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} never received the KEK: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // (Not `defrag --cluster`: etcdctl 3.4 then sends a URL as the HTTP/2
    // :authority, which the h2 crate refuses; see ARCHITECTURE.md.)
    c.ok(&["defrag"]);

    // Scan every byte of every file of every member.
    let mut patterns = canaries.clone();
    patterns.push(config_canary.clone());
    let control = patterns.len() - 1;
    let ac = AhoCorasick::new(&patterns).unwrap();
    let mut total_files = 0;
    let mut total_bytes = 0;
    for m in &c.members {
        let (hits, n, bytes) = scan(&m.data_dir, &ac);
        total_files += n;
        total_bytes += bytes;
        let leaks: Vec<_> = hits.iter().filter(|(p, _)| *p != control).collect();
        assert!(leaks.is_empty(), "secret plaintext on disk: {leaks:?}");
        assert!(
            hits.iter().any(|(p, _)| *p == control),
            "{}: the scan did not find the config's canary, so it proves nothing",
            m.name
        );
    }
    eprintln!(
        "scanned {total_files} files, {total_bytes} bytes, for {} canaries: none found; the config's canary found on every member",
        canaries.len()
    );
}
