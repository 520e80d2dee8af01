#!/usr/bin/env bash
# A new member's catch-up by snapshot, timed and split by its own log:
# fills a fresh 3-member cluster (bench/cluster.sh) with TOTAL puts of
# 256 B over KEYS keys, adds a member and times it from process start to
# its first linearizable read (as `bench scale`'s catch-up row), then
# prints when the snapshot arrived and the install's parts (install
# written_ms and reloaded_ms, the index's indexed_ms). Nothing asserts.
#   TOTAL=700000 KEYS=1000000 bench/catchup.sh
# BENCH_BIN=DIR runs another release's binaries (see bench/cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${TOTAL:-700000}
KEYS=${KEYS:-1000000}
source bench/cluster.sh
etcdctl="${ETCDCTL:-$HOME/.cache/secretd-etcd-3.5.1/etcdctl}"
[ -x "$etcdctl" ] || { echo "needs etcdctl 3.5.1 at $etcdctl (scripts/deps.sh --test puts it there; or set ETCDCTL)" >&2; exit 1; }
"$bin/secretd-bench" put --endpoints "$eps" --connections 16 --in-flight 64 \
  --total "$TOTAL" --seconds 600 --key-space "$KEYS" --value-bytes 256 | tail -1
jc=http://127.0.0.1:$((base + 7)); jp=http://127.0.0.1:$((base + 17))
"$etcdctl" --endpoints "$eps" member add j1 --peer-urls="$jp" >/dev/null
started=$(date +%s.%N)
SECRETD_LOG=secretd_store=debug,info "$bin/secretd" --name j1 --data-dir "$dir/j1" \
  --listen-client-urls "$jc" --advertise-client-urls "$jc" --listen-peer-urls "$jp" \
  --initial-advertise-peer-urls "$jp" --initial-cluster "$ic,j1=$jp" \
  --initial-cluster-state existing 2>"$dir/j1.log" &
pids+=($!)
until "$etcdctl" --endpoints "${jc#http://}" --command-timeout=2s get k --consistency=l >/dev/null 2>&1; do
  sleep 0.02
done
printf 'catch-up %.3f s, from %s\n' "$(echo "$(date +%s.%N) - $started" | bc)" "$(date -d "@$started" +%T.%N)"
grep -E "received snapshot|installed snapshot|loaded the key index records=[1-9]" "$dir/j1.log" | cut -c1-200
