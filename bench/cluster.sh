# Sourced by the bench scripts: builds release binaries and starts a fresh
# 3-member secretd cluster on loopback. Sets $bin, $dir, $eps and $pids,
# and kills the members and removes their data on exit.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
# BENCH_BIN=DIR runs the secretd and secretd-bench found there instead
# (no build): how one release is set against another on the same box.
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release -q -p secretd-api -p bench
  bin="$CARGO_TARGET_DIR/release"
fi
dir=$(mktemp -d)
# Below the kernel's ephemeral range (32768 and up here): a port there may
# be held by a client connection of the run before, and a member that
# cannot bind it exits, failing the run.
base=$((20000 + RANDOM % 12000))
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
