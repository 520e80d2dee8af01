#!/usr/bin/env bash
# Secret create (secretstore.v1: seal + name-uniqueness txn) against a plain
# etcd-API put, on one fresh 3-member loopback cluster, alternating for
# ROUNDS rounds. Not a test: it prints numbers.
#   bench/secret-vs-put.sh [IN_FLIGHT] [TOTAL] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
inflight=${1:-64}
total=${2:-10000}
rounds=${3:-2}
. bench/cluster.sh
for r in $(seq "$rounds"); do
  for op in put secret-create; do
    printf 'round %s %-13s ' "$r" "$op"
    "$bin/secretd-bench" $op --endpoints "$eps" --in-flight "$inflight" --total "$total" --value-bytes 256 --connections 16
  done
done
