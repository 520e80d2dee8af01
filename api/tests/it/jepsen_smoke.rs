//! The fault suite's CI smoke run: two 30-second runs on 3 real members
//! (this build's `secretd`) in network namespaces, with partitions and
//! `kill -9`, one with the register workload and one with the append
//! workload. Each must be valid, recover after the final heal, and leave
//! no namespace behind. The long campaign is a documented command
//! (README, "Fault suite"), not CI.

use std::time::Duration;

use secretd_jepsen::harness::{self, nemesis::Kind, Config, Workload};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the fault suite needs root (network namespaces, iptables, mounts): run the test suite as root"
    );
}

fn namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list (apt-get install iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("sdj{}-", std::process::id())))
        .map(str::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn two_short_runs_with_partitions_and_kills_are_valid() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    for (seed, workload) in [(101, Workload::Register), (102, Workload::Append)] {
        let cfg = Config {
            nodes: 3,
            time_limit_ms: 30_000,
            nemesis: vec![Kind::Partition, Kind::Kill],
            workload,
            seed,
            concurrency: 8,
            out: dir.path().join(format!("run-{seed}")),
            secretd: env!("CARGO_BIN_EXE_secretd").into(),
            check_budget_ms: 60_000,
            recovery_bound_ms: 30_000,
            quiet: true,
        };
        let r = harness::run_on_thread(cfg).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
        assert_eq!(
            r.valid(),
            Some(true),
            "seed {seed} {}: {:#?}",
            workload.name(),
            r
        );
        assert!(
            r.ok > 100,
            "seed {seed}: only {} operations succeeded",
            r.ok
        );
        assert!(r.recovery_ms.unwrap() < Duration::from_secs(30).as_millis() as u64);
        let report = std::fs::read_to_string(r.dir.join("report.html")).unwrap();
        assert!(report.contains("<svg") && report.contains("class=\"fault\""));
        let history = std::fs::read_to_string(r.dir.join("history.jsonl")).unwrap();
        assert!(history.contains("\"start-fault\""));
        assert!(namespaces().is_empty(), "namespaces left: {}", namespaces());
    }
}
