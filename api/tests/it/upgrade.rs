//! Upgrades (issue 30 §5): a data directory written by the previous
//! release (d63c56e: storage format 1, the raft log in RocksDB; keyring
//! format 1), checked in under `api/tests/fixtures/d63c56e-1member/` by
//! `scripts/upgrade-fixtures.sh`, opens on this build and serves: its keys,
//! its lease, and both secrets, one sealed before and one after a KEK
//! rotation. The rolling upgrade between releases is
//! `scripts/upgrade-test.sh` (it builds two versions, so it runs outside
//! CI).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use secretd_api::pb::secretstore::{agent_client::AgentClient, FetchRequest};
use secretd_store::db::Db;

use crate::common::{secs, Cluster};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/d63c56e-1member/n1.etcd"
);

/// Copies the fixture, private as a member's data directory is (git keeps
/// no modes): directories 0700, files 0600.
fn copy_private(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_private(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

async fn fetch(c: &Cluster, object: &str) -> Result<Vec<u8>, tonic::Status> {
    let id = c
        .sctl(&["secret", "inspect", "-f", "{{.ID}}", object], None)
        .trim()
        .to_string();
    AgentClient::new(c.channel(0).await)
        .fetch(FetchRequest {
            node: "n1".into(),
            task: "web.1".into(),
            secret: true,
            object_id: id,
            version: 1,
        })
        .await
        .map(|r| r.into_inner().data)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_directory_of_the_previous_release_opens_and_serves() {
    let mut c = Cluster::prepare(1, &[]);
    let dir = c.members[0].data_dir.clone();
    copy_private(Path::new(FIXTURE), &dir);
    assert_eq!(
        Db::format_version(&dir).unwrap(),
        None,
        "the fixture is format 1 (no record)"
    );
    assert!(!dir.join("raftlog").exists());
    c.spawn(0);
    c.wait_leader(secs(30)).await;

    assert_eq!(c.ok(&["get", "upgrade/a", "--print-value-only"]), "1\n");
    assert_eq!(c.ok(&["get", "upgrade/b", "--print-value-only"]), "2\n");
    assert_eq!(c.ok(&["get", "upgrade/gone", "--print-value-only"]), "");
    assert_eq!(
        c.ok(&["get", "upgrade/leased", "--print-value-only"]),
        "3\n"
    );
    let leases = c.ok(&["lease", "list"]);
    assert!(leases.contains("found 1 leases"), "{leases}");

    // Both secrets decrypt: db_pw under the first KEK generation, api_key
    // under the one the rotation added. A member whose keyring has not
    // loaded yet answers Unavailable; anything else fails now.
    let deadline = Instant::now() + secs(20);
    loop {
        match (fetch(&c, "db_pw").await, fetch(&c, "api_key").await) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b"hunter2");
                assert_eq!(b, b"after-rotation");
                break;
            }
            (a, b) => {
                let e = a.err().or(b.err()).unwrap();
                assert!(
                    e.code() == tonic::Code::Unavailable && Instant::now() < deadline,
                    "{e:?}\n{}",
                    c.logs_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    // It writes as usual, and a restart finds the migrated log.
    c.ok(&["put", "upgrade/new", "4"]);
    c.kill9(0);
    assert!(dir.join("raftlog").is_dir(), "the log moved into segments");
    assert_eq!(
        Db::format_version(&dir).unwrap(),
        Some(secretd_store::schema::STORAGE_FORMAT)
    );
    c.spawn(0);
    c.wait_leader(secs(30)).await;
    assert_eq!(c.ok(&["get", "upgrade/new", "--print-value-only"]), "4\n");
    assert_eq!(c.ok(&["get", "upgrade/b", "--print-value-only"]), "2\n");
}
