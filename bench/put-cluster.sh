#!/usr/bin/env bash
# Measures put throughput on a fresh 3-member loopback cluster, then stops it
# and prints how many raft entries each fsync carried (from the members'
# shutdown summaries). Not a test: it prints numbers.
#   bench/put-cluster.sh IN_FLIGHT [TOTAL] [VALUE_BYTES]
set -euo pipefail
cd "$(dirname "$0")/.."
inflight=${1:?usage: bench/put-cluster.sh IN_FLIGHT [TOTAL] [VALUE_BYTES]}
total=${2:-20000}
value=${3:-256}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
cargo build --release -q -p secretd-api -p secretd-bench
bin="$CARGO_TARGET_DIR/release"
dir=$(mktemp -d)
base=$((30000 + RANDOM % 20000))
ic=""
for i in 1 2 3; do ic="$ic${ic:+,}n$i=http://127.0.0.1:$((base + 10 + i))"; done
pids=()
cleanup() { kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
eps=""
for i in 1 2 3; do
  c=http://127.0.0.1:$((base + i)); p=http://127.0.0.1:$((base + 10 + i))
  "$bin/secretd" --name n$i --data-dir "$dir/n$i" --listen-client-urls $c --advertise-client-urls $c \
    --listen-peer-urls $p --initial-advertise-peer-urls $p --initial-cluster "$ic" 2>"$dir/n$i.log" &
  pids+=($!)
  eps="$eps${eps:+,}127.0.0.1:$((base + i))"
done
sleep 3
"$bin/secretd-bench" put --endpoints "$eps" --in-flight "$inflight" --total "$total" --value-bytes "$value" --connections 16
kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
for i in 1 2 3; do
  echo "n$i: $(grep -o 'entries=[0-9]* fsyncs=[0-9]* entries_per_fsync=[0-9.]*' "$dir/n$i.log" | tail -1)"
done
