#!/usr/bin/env bash
# Runs the whole test suite: unit, property and integration tests (real
# secretd processes on loopback, driven by Debian's etcdctl; the fault
# suite's smoke run in network namespaces, which needs root), then the
# `etcd-client` crate's own tests and examples against a member.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
# RocksDB is linked from Debian, but tonic/raft/prost still take minutes
# cold: keep the build cache outside the clone so fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
start=$(date +%s)
cargo build --workspace --all-targets
echo "build: $(( $(date +%s) - start ))s"
# scripts/dev.sh builds the binaries alone. Right after this build that
# must cost nothing: if the two builds resolve features differently (a
# dev-dependency turning on a feature the binaries' build does not), every
# crate above the difference rebuilds, 8 minutes here. testkit/Cargo.toml
# pins the features; this says which crate drifted if one does.
rebuilt=$(cargo build --workspace --bins 2>&1 | sed -n 's/^ *Compiling //p')
if [ -n "$rebuilt" ]; then
  echo "the binaries' build resolved different features from the test build and rebuilt:" >&2
  echo "$rebuilt" >&2
  echo "pin the features those crates' dependencies differ in (testkit/Cargo.toml)" >&2
  exit 1
fi
# The code's form: formatted, and no clippy warning anywhere.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
echo "build and lint: $(( $(date +%s) - start ))s"
cargo test --workspace --no-fail-fast
# An independent client's own test suite and CI examples against a member
# (the crate etcd-client, pinned; in a network namespace of its own).
# 0.19.0 is the release issue 28 measured; 0.21.1 is the tests' own
# dev-dependency, whose suite also reads /metrics.
scripts/etcd-client-suite.sh "$CARGO_TARGET_DIR/debug/secretd"
ETCD_CLIENT_VERSION=0.21.1 scripts/etcd-client-suite.sh "$CARGO_TARGET_DIR/debug/secretd"
echo "total: $(( $(date +%s) - start ))s"
