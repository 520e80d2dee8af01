#!/usr/bin/env bash
# Runs the whole test suite: unit, property and integration tests (real
# secretd processes on loopback, driven by Debian's etcdctl; the fault
# suite's smoke run in network namespaces, which needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
# RocksDB is linked from Debian, but tonic/raft/prost still take minutes
# cold: keep the build cache outside the clone so fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
start=$(date +%s)
cargo build --workspace --all-targets
echo "build: $(( $(date +%s) - start ))s"
cargo test --workspace --no-fail-fast
echo "total: $(( $(date +%s) - start ))s"
