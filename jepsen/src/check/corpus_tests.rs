//! The checker against real Jepsen histories with known verdicts
//! (`../shared/corpus`), and against 50-client synthetic ones of 4,000
//! operations (`synth`): every verdict must be exact. Times are printed,
//! not asserted; `jepsen synth` and `jepsen check` measure them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::check::{self, model, parse, synth};

fn corpus() -> PathBuf {
    // The runtime variable, not env!(): the build cache lives outside the
    // clone and is shared by clones at different paths.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let p = PathBuf::from(manifest).join("../../shared/corpus");
    assert!(
        p.is_dir(),
        "the Jepsen corpus is missing: expected {} (shared/ beside the repository)",
        p.display()
    );
    p
}

fn verdicts(dir: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("VERDICTS")).expect("VERDICTS file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (f, v) = l.split_once(' ').expect("`<file> <verdict>` lines");
            (f.to_string(), v.trim().to_string())
        })
        .collect()
}

const PER_FILE_BUDGET: Duration = Duration::from_secs(20);

#[test]
fn register_histories_get_their_known_verdicts() {
    let dir = corpus().join("jepsen-etcd-register");
    let expected = verdicts(&dir);
    assert!(expected.len() >= 80, "expected the full register corpus");
    let started = Instant::now();
    let mut wrong = Vec::new();
    for (file, want) in &expected {
        let ops = parse::register_log(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let got = check::check_partitioned::<model::Register>(vec![ops], PER_FILE_BUDGET);
        if got.word() != want {
            wrong.push(format!("{file}: want {want}, got {}", got.word()));
        }
    }
    eprintln!(
        "register corpus: {} files in {:?}",
        expected.len(),
        started.elapsed()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn kv_append_histories_get_their_known_verdicts() {
    let dir = corpus().join("kv-append");
    let started = Instant::now();
    let mut wrong = Vec::new();
    for (file, want) in verdicts(&dir) {
        let by_key = parse::kv_edn(&std::fs::read_to_string(dir.join(&file)).unwrap()).unwrap();
        let got = check::check_partitioned::<model::KvString>(
            by_key.into_values().collect(),
            PER_FILE_BUDGET,
        );
        if got.word() != want {
            wrong.push(format!("{file}: want {want}, got {}", got.word()));
        }
    }
    eprintln!("kv corpus in {:?}", started.elapsed());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Generous: a verdict of `unknown` fails the test, a slow one does not.
const SYNTH_BUDGET: Duration = Duration::from_secs(120);

#[test]
fn fifty_client_histories_are_decided() {
    for seed in [1, 2] {
        for bad in [false, true] {
            let spec = synth::Spec {
                seed,
                clients: 50,
                ops: 4000,
                keys: 10,
                bad,
                timeout_percent: 1,
            };
            let want = if bad {
                "not-linearizable"
            } else {
                "linearizable"
            };
            let started = Instant::now();
            let ops = parse::register_log(&synth::register(spec)).unwrap();
            let got = check::check_partitioned::<model::Register>(vec![ops], SYNTH_BUDGET);
            eprintln!(
                "register seed {seed} bad={bad}: {} in {:?}",
                got.word(),
                started.elapsed()
            );
            assert_eq!(got.word(), want, "register seed {seed}");
            let started = Instant::now();
            let parts = parse::kv_edn(&synth::kv(spec)).unwrap();
            let got = check::check_partitioned::<model::KvString>(
                parts.into_values().collect(),
                SYNTH_BUDGET,
            );
            eprintln!(
                "kv seed {seed} bad={bad}: {} in {:?}",
                got.word(),
                started.elapsed()
            );
            assert_eq!(got.word(), want, "kv seed {seed}");
        }
    }
}
