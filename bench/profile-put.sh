#!/usr/bin/env bash
# Where a 3-member cluster spends its CPU under put load: a flat `perf`
# profile (self time by symbol) of all three members during one
# `secretd-bench put` run, and each member's CPU seconds. Evidence for the
# benchmark note, not a test.
#   bench/profile-put.sh [IN_FLIGHT] [TOTAL] [VALUE_BYTES]
# PROFILE_OP=get|secret-create profiles that operation instead (gets with
# PROFILE_CONSISTENCY=s|l, default s, over PROFILE_KEYS keys, default 1000).
# PERF_CALLGRAPH=dwarf adds call stacks; PERF_KEEP=FILE keeps perf.data.
# PROFILE_PRELOAD=N first puts N 256-byte values @256 over a 1M key space,
# not profiled (the data `bench compare`'s earlier rows leave behind).
set -euo pipefail
cd "$(dirname "$0")/.."
inflight=${1:-256}
total=${2:-100000}
value=${3:-256}
command -v perf >/dev/null || { echo "profile-put.sh needs perf (apt-get install linux-perf)" >&2; exit 1; }
. bench/cluster.sh
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
op=${PROFILE_OP:-put}
extra=()
# The get load's key space is written first, outside the profiled window.
if [ "$op" = get ]; then
  extra=(--consistency "${PROFILE_CONSISTENCY:-s}" --key-space "${PROFILE_KEYS:-1000}")
  "$bin/secretd-bench" get --endpoints "$eps" --total 1 "${extra[@]}" > /dev/null
  extra+=(--preloaded)
fi
if [ "${PROFILE_PRELOAD:-0}" -gt 0 ]; then
  "$bin/secretd-bench" put --endpoints "$eps" --in-flight 256 --total "$PROFILE_PRELOAD" --key-space 1000000 --connections 16
fi
declare -A before
for p in "${pids[@]}"; do before[$p]=$(cpu "$p"); done
perf record -q -F ${PERF_FREQ:-499} ${PERF_CALLGRAPH:+--call-graph $PERF_CALLGRAPH} -o "$dir/perf.data" -p "$(IFS=,; echo "${pids[*]}")" -- \
  "$bin/secretd-bench" "$op" --endpoints "$eps" --in-flight "$inflight" --total "$total" --value-bytes "$value" --connections 16 "${extra[@]}"
tck=$(getconf CLK_TCK)
for p in "${pids[@]}"; do
  echo "member pid $p: $(( ($(cpu "$p") - ${before[$p]}) * 1000 / tck )) ms CPU"
done
if [ -n "${PERF_KEEP:-}" ]; then cp "$dir/perf.data" "$PERF_KEEP"; fi
perf report -i "$dir/perf.data" --stdio --no-children -g none --sort comm,dso -q 2>/dev/null | head -15 || true
perf report -i "$dir/perf.data" --stdio --no-children -g none --sort sym -q 2>/dev/null | head -45 || true
