#!/usr/bin/env bash
# Measures the linearizability checker on 50-client, 4,000-operation
# synthetic histories: for each seed, a register and a key-value history,
# linearizable and with one planted stale read. One line per history:
# model, seed, kind, verdict, wall time. Usage:
#   scripts/checker-sweep.sh [SEED...]      (default: seeds 1 to 30)
# Uses the release jepsen binary, building it if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
J="$CARGO_TARGET_DIR/release/jepsen"
[ -x "$J" ] || cargo build --release -p secretd-jepsen >&2
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=($(seq 1 30))
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for s in "${seeds[@]}"; do
  for m in kv register; do
    for bad in "" "--bad"; do
      f="$dir/$m-$s${bad:+-bad}"
      "$J" synth --model "$m" --clients 50 --ops 4000 --keys 10 --seed "$s" $bad > "$f"
      start=$(date +%s%N)
      v=$("$J" check --model "$m" --time-limit 60 "$f" 2>/dev/null | head -1 | awk '{print $2}' || true)
      ms=$(( ($(date +%s%N) - start) / 1000000 ))
      kind=ok; [ -z "$bad" ] || kind=bad
      printf "%-9s seed %3s %-4s %-17s %6d ms\n" "$m" "$s" "$kind" "$v" "$ms"
    done
  done
done
