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
. bench/cluster.sh
"$bin/secretd-bench" put --endpoints "$eps" --in-flight "$inflight" --total "$total" --value-bytes "$value" --connections 16
kill -TERM "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
for i in 1 2 3; do
  echo "n$i: $(grep -o 'entries=[0-9]* fsyncs=[0-9]* entries_per_fsync=[0-9.]*' "$dir/n$i.log" | tail -1)"
done
