//! The plaintext canary: secrets carry unique random canary strings; after
//! rotations, raft snapshots, a RocksDB flush and compaction, and a member
//! restart, no byte of any file under any member's data directory holds
//! any canary, nor any KEK, DEK or unlock key (taken from the members'
//! test-build debug hook, `SECRETD_TEST_KEY_DUMP`). The scan runs again
//! after autolock is switched on and after a KEK rotation. A config's
//! canary (configs are stored plain) must be found by the same scan, so
//! the scan is shown to work.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use aho_corasick::AhoCorasick;
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

/// The positive control's marker: random bytes, not hex. RocksDB compresses
/// SST blocks (Snappy), and a block full of hex text (IDs, other configs)
/// holds some 4-byte run of a hex marker often enough that the compressor
/// turns part of it into a back-reference; the scan then cannot find it and
/// the control fails though nothing is wrong. A 4-byte run of random bytes
/// matches elsewhere with odds of about 2^-32 per position.
fn control_marker() -> Vec<u8> {
    let mut b = vec![0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
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
    let dump = tempfile::tempdir().unwrap();
    let mut c = Cluster::prepare(
        3,
        &[
            "--snapshot-count",
            "60",
            "--experimental-snapshot-catchup-entries",
            "10",
        ],
    );
    c.envs.push((
        "SECRETD_TEST_KEY_DUMP".into(),
        dump.path().display().to_string(),
    ));
    for i in 0..3 {
        c.spawn(i);
    }
    let leader = c.wait_leader(crate::common::secs(15)).await;
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
                    ..Default::default()
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
    let config_canary = control_marker();
    ConfigsClient::new(c.channel(leader).await)
        .create(CreateRequest {
            name: "control".into(),
            labels: Default::default(),
            data: [b"setting=".as_slice(), &config_canary].concat(),
            ..Default::default()
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
    let deadline = Instant::now() + crate::common::secs(30);
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
    let deadline = Instant::now() + crate::common::secs(20);
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

    assert_nothing_leaks(&c, &canaries, &config_canary, dump.path(), "after restart");

    // Autolock: every keyring re-sealed under the unlock key; a restarted
    // member unlocked; more secrets.
    let unlock_key = c.autolock_on().await;
    for m in &c.members {
        let d = m.data_dir.join("keys");
        let deadline = Instant::now() + crate::common::secs(20);
        while !d.join("keyring.locked").exists() || d.join("wrap.key").exists() {
            assert!(
                Instant::now() < deadline,
                "{} did not switch to autolock",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    c.kill9(lagger);
    c.spawn(lagger);
    let deadline = Instant::now() + crate::common::secs(30);
    loop {
        let out = c.secretctl_at(
            &c.endpoint(lagger),
            &["cluster", "unlock"],
            Some(unlock_key.as_bytes()),
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let more = create_secrets(&c, lagger, "locked", 20).await;
    canaries.extend(more);
    c.ok(&["defrag"]);
    assert_nothing_leaks(&c, &canaries, &config_canary, dump.path(), "after autolock");

    // KEK rotation: every DEK re-wrapped under generation 2, generation 1
    // destroyed; more secrets under generation 2.
    let out = c.sctl(&["cluster", "rotate-key"], None);
    assert!(out.contains("rotated to generation 2"), "{out}");
    for i in 0..3 {
        let deadline = Instant::now() + crate::common::secs(20);
        loop {
            let out = c.secretctl_at(&c.endpoint(i), &["cluster", "settings"], None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("held by this member:   2\n") {
                break;
            }
            assert!(Instant::now() < deadline, "member {i}: {text}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let more = create_secrets(&c, leader, "rotated", 20).await;
    canaries.extend(more);
    c.ok(&["defrag"]);
    assert_nothing_leaks(
        &c,
        &canaries,
        &config_canary,
        dump.path(),
        "after KEK rotation",
    );
}

/// Creates `n` secrets with fresh canaries through member `i`.
async fn create_secrets(c: &Cluster, i: usize, prefix: &str, n: usize) -> Vec<String> {
    let mut s = SecretsClient::new(c.channel(i).await);
    let mut out = Vec::new();
    for j in 0..n {
        let can = canary();
        s.create(CreateRequest {
            name: format!("{prefix}{j}"),
            labels: Default::default(),
            data: format!("password={can};\n").into_bytes(),
            ..Default::default()
        })
        .await
        .expect("create secret");
        out.push(can);
    }
    out
}

/// Key material the members wrote through the debug hook: one hex key per
/// line in each file.
fn dumped_keys(dump: &Path) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for e in std::fs::read_dir(dump).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for line in text.lines().filter(|l| l.len() == 64) {
            keys.push(
                (0..32)
                    .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).unwrap())
                    .collect(),
            );
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Scans every byte of every file of every member for the canaries and
/// the dumped keys; the config's canary must be found on every member.
fn assert_nothing_leaks(
    c: &Cluster,
    canaries: &[String],
    config_canary: &[u8],
    dump: &Path,
    phase: &str,
) {
    let keys = dumped_keys(dump);
    let kek_files = std::fs::read_dir(dump)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kek-"))
        .count();
    assert!(
        kek_files > 0,
        "the debug hook wrote no KEK: the key scan would prove nothing"
    );
    assert!(
        keys.len() > canaries.len(),
        "{phase}: too few DEKs dumped ({})",
        keys.len()
    );
    let mut patterns: Vec<Vec<u8>> = canaries.iter().map(|c| c.as_bytes().to_vec()).collect();
    patterns.extend(keys.iter().cloned());
    patterns.push(config_canary.to_vec());
    let control = patterns.len() - 1;
    let ac = AhoCorasick::new(&patterns).unwrap();
    let mut total_files = 0;
    let mut total_bytes = 0;
    for m in &c.members {
        let (hits, n, bytes) = scan(&m.data_dir, &ac);
        total_files += n;
        total_bytes += bytes;
        let leaks: Vec<_> = hits.iter().filter(|(p, _)| *p != control).collect();
        assert!(
            leaks.is_empty(),
            "{phase}: secret plaintext or key material on disk: {leaks:?}"
        );
        assert!(
            hits.iter().any(|(p, _)| *p == control),
            "{phase}: {}: the scan did not find the config's canary, so it proves nothing",
            m.name
        );
    }
    eprintln!(
        "{phase}: scanned {total_files} files, {total_bytes} bytes, for {} canaries and {} keys: none found; the config's canary found on every member",
        canaries.len(),
        keys.len()
    );
}
