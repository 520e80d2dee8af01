//! Autolock and KEK rotation on a real 3-member mutual-TLS cluster:
//! a restarted member is locked (exact error), a wrong key does not unlock
//! it, the right one does; the unlock key rotates; autolock switches off on
//! a running cluster. A KEK rotation under load with a member down leaves
//! every secret readable on every member, and the old generation nowhere.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::Cluster;
use secretd_api::pb::secretstore::{
    admin_client::AdminClient, agent_client::AgentClient, secrets_client::SecretsClient,
    CreateRequest, FetchRequest, GetSettingsRequest, RotateRequest,
};

const LOCKED: &str = "member is locked; run secretctl cluster unlock";

fn unlock_key_of(stdout: &str) -> String {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SECRETD-UNLOCK-"))
        .unwrap_or_else(|| panic!("no unlock key in {stdout:?}"))
        .to_string()
}

async fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn keys_dir(c: &Cluster, i: usize) -> std::path::PathBuf {
    c.members[i].data_dir.join("keys")
}

/// Restarts member `i` and waits until it answers (a task listing: a
/// locked member refuses secret listings, as a locked Docker manager).
async fn restart(c: &mut Cluster, i: usize) {
    c.kill9(i);
    c.spawn(i);
    let ep = c.endpoint(i);
    wait_for("the restarted member", crate::common::secs(30), || {
        c.secretctl_at(&ep, &["task", "ls", "-q"], None)
            .status
            .success()
    })
    .await;
}

/// Secret `db_pw`, used by task `web.1` on node n1; returns its ID.
fn db_pw_for_web1(c: &Cluster, data: &[u8]) -> String {
    c.sctl(&["secret", "create", "db_pw", "-"], Some(data));
    c.sctl(
        &[
            "task", "create", "web.1", "--node", "n1", "--secret", "db_pw",
        ],
        None,
    );
    c.sctl(&["secret", "inspect", "-f", "{{.ID}}", "db_pw"], None)
        .trim()
        .to_string()
}

async fn fetch(c: &Cluster, i: usize, id: &str, version: u64) -> Result<Vec<u8>, tonic::Status> {
    AgentClient::new(c.channel_as(i, "node-n1"))
        .fetch(FetchRequest {
            node: "n1".into(),
            task: "web.1".into(),
            secret: true,
            object_id: id.into(),
            version,
        })
        .await
        .map(|r| r.into_inner().data)
}

#[tokio::test(flavor = "multi_thread")]
async fn autolock_locks_restarted_members_until_unlocked() {
    let mut c = Cluster::start_tls(3, &[]);
    c.wait_leader(crate::common::secs(20)).await;
    let id = db_pw_for_web1(&c, b"hunter2");

    // On: refused until every member holds the KEK (a member without it
    // could only get it with the unlock key); then the key is shown once
    // and every member re-seals its keyring.
    let deadline = Instant::now() + crate::common::secs(20);
    let key = loop {
        let out = c.secretctl(&["cluster", "settings", "--autolock=true"], None);
        if out.status.success() {
            break unlock_key_of(&String::from_utf8_lossy(&out.stdout));
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cannot switch autolock on yet"), "{err}");
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (_, err) = c.sctl_err(&["cluster", "settings", "--autolock=true"], None);
    assert!(err.contains("autolock is already on"), "{err}");
    for i in 0..3 {
        let d = keys_dir(&c, i);
        wait_for(
            "every member to switch to autolock",
            crate::common::secs(15),
            || {
                d.join("keyring.locked").exists()
                    && !d.join("keyring").exists()
                    && !d.join("wrap.key").exists()
            },
        )
        .await;
    }
    assert_eq!(
        unlock_key_of(&c.sctl(&["cluster", "unlock-key"], None)),
        key
    );

    // A restarted member is locked: non-secret work goes on; every secret
    // and config command fails as Docker's do on a locked manager (Docker
    // 28.2.2: exit 1, this line, `inspect` printing `[]` first), listings
    // included; an agent's fetch gets the exact sentence.
    restart(&mut c, 2).await;
    let m2 = c.endpoint(2);
    let docker_locked = "Error response from daemon: Swarm is encrypted and needs to be unlocked \
         before it can be used. Please use \"secretctl cluster unlock\" to unlock it.\n";
    for (args, stdin, stdout) in [
        (&["secret", "create", "other", "-"][..], Some(&b"x"[..]), ""),
        (&["secret", "ls"][..], None, ""),
        (&["config", "ls"][..], None, ""),
        (&["secret", "inspect", "db_pw"][..], None, "[]\n"),
        (&["config", "create", "c", "-"][..], Some(&b"x"[..]), ""),
        (&["secret", "rm", "db_pw"][..], None, ""),
    ] {
        let out = c.secretctl_at(&m2, args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            docker_locked,
            "{args:?}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{args:?}");
    }
    let e = fetch(&c, 2, &id, 1).await.unwrap_err();
    assert_eq!(e.message(), LOCKED);
    let settings = AdminClient::new(c.channel_as(2, "admin"))
        .get_settings(GetSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(settings.autolock && settings.locked);
    // It still replicates and serves plain keys.
    c.ok(&["put", "plain", "v"]);
    let got = c.etcdctl_at(&m2, &["get", "plain", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v");

    // Wrong keys: clear errors, and the member stays locked.
    let other = secretd_crypto::format_unlock_key(&secretd_crypto::Key::generate());
    for (bad, want) in [
        (
            other.as_str(),
            "invalid unlock key; the member stays locked",
        ),
        (
            "SWMKEY-1-abc",
            "invalid unlock key: it must start with SECRETD-UNLOCK-",
        ),
        ("", "the unlock key is empty"),
    ] {
        let out = c.secretctl_at(&m2, &["cluster", "unlock"], Some(bad.as_bytes()));
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{bad:?}: {err}");
    }
    assert_eq!(fetch(&c, 2, &id, 1).await.unwrap_err().message(), LOCKED);

    // The right key unlocks it.
    let out = c.secretctl_at(&m2, &["cluster", "unlock"], Some(key.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "silent, as docker swarm unlock"
    );
    assert_eq!(fetch(&c, 2, &id, 1).await.unwrap(), b"hunter2");
    // Unlocked already: Docker's failure ("swarm is not locked"), in
    // secretd's words, before any key is asked for.
    let out = c.secretctl_at(&m2, &["cluster", "unlock"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: this member is not locked\n"
    );
    let out = c.secretctl(&["cluster", "unlock"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: no member is locked\n"
    );

    // A new unlock key: the old one no longer unlocks a restarted member.
    let new_key = unlock_key_of(&c.sctl(&["cluster", "unlock-key", "--rotate"], None));
    assert_ne!(new_key, key);
    let d2 = keys_dir(&c, 2);
    let before = std::fs::read(d2.join("keyring.locked")).unwrap();
    wait_for(
        "member 3 to re-seal under the new key",
        crate::common::secs(15),
        || std::fs::read(d2.join("keyring.locked")).unwrap() != before,
    )
    .await;
    restart(&mut c, 2).await;
    let out = c.secretctl_at(&m2, &["cluster", "unlock"], Some(key.as_bytes()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid unlock key"));
    let out = c.secretctl_at(&m2, &["cluster", "unlock"], Some(new_key.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetch(&c, 2, &id, 1).await.unwrap(), b"hunter2");

    // Off, on a running cluster, with a locked member: it gets the keys
    // from its peers in the clear (mutual TLS) and unlocks by itself.
    restart(&mut c, 1).await;
    assert_eq!(fetch(&c, 1, &id, 1).await.unwrap_err().message(), LOCKED);
    let out = c.sctl(
        &[
            "--endpoints",
            &c.endpoint(0),
            "cluster",
            "settings",
            "--autolock=false",
        ],
        None,
    );
    assert_eq!(out.trim(), "autolock is off");
    for i in 0..3 {
        let d = keys_dir(&c, i);
        wait_for(
            "every member to leave autolock",
            crate::common::secs(15),
            || {
                !d.join("keyring.locked").exists()
                    && d.join("keyring").exists()
                    && d.join("wrap.key").exists()
            },
        )
        .await;
    }
    assert_eq!(fetch(&c, 1, &id, 1).await.unwrap(), b"hunter2");
    restart(&mut c, 2).await;
    assert_eq!(fetch(&c, 2, &id, 1).await.unwrap(), b"hunter2");
    // Docker's words for the unlock key of a swarm without autolock, which
    // its CLI says itself, without the daemon's prefix (docker/cli
    // runUnlockKey; Docker 28.2.2 prints exactly these lines).
    let (_, e) = c.sctl_err(&["cluster", "unlock-key"], None);
    assert_eq!(e, "no unlock key is set\n");
    let (_, e) = c.sctl_err(&["cluster", "unlock-key", "--rotate"], None);
    assert_eq!(e, "cannot rotate because autolock is not turned on\n");
}

/// The keyring on disk of member `i`, opened the way the member opens it.
fn keyring_on_disk(c: &Cluster, i: usize) -> secretd_crypto::Keyring {
    let d = keys_dir(c, i);
    let wrap = secretd_crypto::load_or_create_key_file(&d.join("wrap.key")).unwrap();
    secretd_crypto::Keyring::import(&wrap, &std::fs::read(d.join("keyring")).unwrap()).unwrap()
}

fn file_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread")]
async fn kek_rotation_under_load_with_a_member_down() {
    let mut c = Cluster::start_tls(3, &[]);
    let leader = c.wait_leader(crate::common::secs(20)).await;
    let down = (leader + 1) % 3;
    let up = (leader + 2) % 3;
    let secrets = SecretsClient::new(c.channel_as(leader, "admin"));
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = secrets
            .clone()
            .create(CreateRequest {
                name: format!("s{i}"),
                labels: Default::default(),
                data: format!("value-{i}-v1").into_bytes(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        ids.push(id);
    }
    let gen1 = keyring_on_disk(&c, leader);
    assert_eq!(gen1.generations(), vec![1]);
    let gen1_key = gen1.key(1).unwrap().expose().to_vec();
    c.kill9(down);

    // Load: rotations of every secret and new secrets, through the other
    // up member, while the KEK rotates.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let s = SecretsClient::new(c.channel_as(up, "admin"));
        let ids = ids.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = (n as usize) % ids.len();
                let r = s
                    .clone()
                    .rotate(RotateRequest {
                        name_or_id: ids[i].clone(),
                        data: format!("value-{i}-r{n}").into_bytes(),
                    })
                    .await;
                if let Ok(r) = r {
                    done.push((i, r.into_inner().version, format!("value-{i}-r{n}")));
                }
                n += 1;
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = c.sctl(
        &["--endpoints", &c.endpoint(leader), "cluster", "rotate-key"],
        None,
    );
    assert!(out.contains("rotated to generation 2"), "{out}");
    assert!(out.contains("destroyed generation 1"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rotated = load.await.unwrap();
    assert!(
        !rotated.is_empty(),
        "the load made no progress during the rotation"
    );

    // The member that was down catches up, fetches generation 2 and
    // destroys generation 1.
    c.spawn(down);
    for i in 0..3 {
        let ch = c.channel_as(i, "admin");
        let deadline = Instant::now() + crate::common::secs(30);
        loop {
            let k = AdminClient::new(ch.clone())
                .get_settings(GetSettingsRequest {})
                .await
                .map(|r| r.into_inner().keys.unwrap_or_default());
            if let Ok(k) = &k {
                if k.registered == vec![2] && k.held == vec![2] {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "member {i} keys: {k:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // Every secret's current version decrypts on every member.
    let mut current = std::collections::BTreeMap::new();
    for (i, v, data) in &rotated {
        current.insert(*i, (*v, data.clone()));
    }
    let mut create_task = vec!["task", "create", "web.1", "--node", "n1"];
    let names: Vec<String> = (0..ids.len())
        .map(|i| format!("source=s{i},target=s{i}"))
        .collect();
    for n in &names {
        create_task.extend(["--secret", n.as_str()]);
    }
    c.sctl(&create_task, None);
    for m in 0..3 {
        for (i, id) in ids.iter().enumerate() {
            let (v, want) = current
                .get(&i)
                .cloned()
                .unwrap_or((1, format!("value-{i}-v1")));
            let deadline = Instant::now() + crate::common::secs(20);
            let got = loop {
                match fetch(&c, m, id, v).await {
                    Ok(d) => break d,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) => panic!("member {m}: secret s{i} v{v}: {e}"),
                }
            };
            assert_eq!(String::from_utf8_lossy(&got), want, "member {m} s{i}");
        }
    }

    // The old KEK is destroyed: no member's keyring holds it, and its
    // bytes are in no file of any member.
    for i in 0..3 {
        assert_eq!(keyring_on_disk(&c, i).generations(), vec![2], "member {i}");
        let hits = file_contains(&c.members[i].data_dir, &gen1_key);
        assert!(hits.is_empty(), "generation 1's key found in {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn autolock_flag_prints_the_key_once_and_a_lone_member_unlocks_from_its_file() {
    let mut c = Cluster::start_tls(1, &["--autolock"]);
    c.wait_leader(crate::common::secs(20)).await;
    let log = c.members[0].log.clone();
    let mut key = String::new();
    wait_for("the unlock key on stderr", crate::common::secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SECRETD-UNLOCK-"))
        {
            Some(k) => {
                key = k.to_string();
                true
            }
            None => false,
        }
    })
    .await;
    let id = db_pw_for_web1(&c, b"pw");
    restart(&mut c, 0).await;
    assert_eq!(fetch(&c, 0, &id, 1).await.unwrap_err().message(), LOCKED);
    // The flag does not switch autolock on again, nor print another key.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("SECRETD-UNLOCK-").count(), 1);
    let out = c.secretctl(&["cluster", "unlock"], Some(key.as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fetch(&c, 0, &id, 1).await.unwrap(), b"pw");
}
