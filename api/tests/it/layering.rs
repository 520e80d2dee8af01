//! The crate graph, from `cargo metadata`: what each crate must never
//! depend on, directly or through another crate (ARCHITECTURE.md's code
//! map says why for each).

use std::collections::{BTreeSet, HashMap};

/// (crate, what it must never reach, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "secretd-store",
        &[
            "secretd-api",
            "secretd-client",
            "secretctl",
            "secretd-fuse",
            "tonic",
            "rustls",
        ],
        "consensus and storage know nothing of the wire or of clients",
    ),
    (
        "secretd-crypto",
        &["secretd-store", "secretd-api", "rocksdb", "tonic"],
        "sealing is pure: no storage, no network",
    ),
    (
        "secretd-secrets",
        &[
            "secretd-api",
            "secretd-client",
            "secretd-fuse",
            "tonic",
            "rustls",
        ],
        "the secrets domain knows no wire: its errors are its own, the API maps them",
    ),
    (
        "secretd-client",
        &["secretd-store", "secretd-api", "secretd-fuse", "rocksdb"],
        "every client links it; none may pull the server in",
    ),
    (
        "secretctl",
        &[
            "secretd-store",
            "secretd-api",
            "secretd-fuse",
            "rocksdb",
            "librocksdb-sys",
        ],
        "the CLI is a client: no server code, no RocksDB",
    ),
    (
        "secretd-fuse",
        &["secretd-store", "secretd-api", "rocksdb", "librocksdb-sys"],
        "the node agent holds no cluster state",
    ),
    (
        "secretd-swarm",
        &[
            "secretd-store",
            "secretd-api",
            "secretd-secrets",
            "secretd-crypto",
            "secretd-fuse",
            "rocksdb",
            "librocksdb-sys",
        ],
        "the Swarm plugin is a client holding no keys and no state: a value passes through it",
    ),
    (
        "secretd-jepsen",
        &["secretd-store", "secretd-api", "secretd-fuse"],
        "the fault suite drives secretd from outside, as any client",
    ),
    (
        "secretd-api",
        &["secretd-jepsen", "secretctl", "bench", "secretd-sim"],
        "the server does not depend on its tools",
    ),
    (
        "secretd-vocab",
        &[
            "secretd-store",
            "secretd-client",
            "tonic",
            "rocksdb",
            "serde",
        ],
        "the shared words sit below server and clients alike: no dependencies",
    ),
    (
        "bench",
        &["secretd-api", "secretd-store", "secretd-fuse"],
        "the bench measures secretd from outside, as any client does",
    ),
    (
        "secretd-sim",
        &["secretd-api", "secretd-fuse", "secretctl"],
        "the simulation runs the store itself, in one thread: no server",
    ),
];

#[test]
fn no_crate_depends_on_what_it_must_not() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        // This machine's platform only: the others' crates are not
        // downloaded, and do not matter here.
        .args(["--filter-platform", &host_triple()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Normal (not dev, not build) dependencies of each package.
    let mut deps: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let me = names[node["id"].as_str().unwrap()];
        for d in node["deps"].as_array().unwrap() {
            let normal = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.entry(me)
                    .or_default()
                    .push(names[d["pkg"].as_str().unwrap()]);
            }
        }
    }
    for (krate, never, why) in RULES {
        assert!(names.values().any(|n| n == krate), "no crate named {krate}");
        let mut reach = BTreeSet::new();
        let mut todo = vec![*krate];
        while let Some(k) = todo.pop() {
            for d in deps.get(k).into_iter().flatten() {
                if reach.insert(*d) {
                    todo.push(d);
                }
            }
        }
        for n in *never {
            assert!(
                !reach.contains(n),
                "{krate} depends on {n}, which it must never do: {why}"
            );
        }
    }
}

fn host_triple() -> String {
    assert_eq!(std::env::consts::OS, "linux", "secretd builds on Linux");
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}
