#!/usr/bin/env bash
# The Rust crate `etcd-client`'s own integration tests and CI examples,
# as published on crates.io, against one secretd member (issue 28, item 5).
#
#   scripts/etcd-client-suite.sh [--server secretd|etcd] [SECRETD_BIN]
#
# The crate's tests and examples connect to etcd's default port,
# localhost:2379, so the member and every test run inside a network
# namespace of their own (`unshare --net`, loopback only): nothing on the
# host's port 2379 is touched or needed. Needs root (unshare).
#
# Version: `etcd-client` 0.19.0, pinned exactly (ETCD_CLIENT_VERSION
# overrides it, e.g. 0.21.1, the tests' own dev-dependency). It is the release the
# issue measured (25 tests, 6 CI examples, on etcd 3.5.1); the tests'
# own dev-dependency is 0.21, whose published tests target etcd 3.6/3.7
# (their Justfile runs 3.5.26, 3.6 and 3.7 and a 3-node cluster).
#
# What runs, as the crate's CI (.github/workflows/ci.yml) runs it against
# a fresh single etcd: `cargo test` (its tests in parallel, doc tests
# included), plus its `#[ignore]`d `test_auth` with the user it expects
# (root / rootpwd holding the root role), then the CI's examples kv,
# lease, lock, maintenance, watch and election. `test_cluster`, also
# ignored, adds two voting members that never start to a one-member
# cluster: etcd itself refuses that ("unhealthy cluster"), so it is not
# run here either.
#
# `--server etcd` runs the same against etcd 3.5.1 (scripts/etcd35.sh),
# for the side-by-side comparison. Results: 0.19.0, 27 tests passed (22+1
# client tests with test_auth, 1 namespace, 1 doc, 2 unit) and 6 of 6
# examples on both; 0.21.1, 31 passed and 6 of 6 on both.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION="${ETCD_CLIENT_VERSION:-0.19.0}"
SERVER=secretd
if [ "${1:-}" = "--server" ]; then
  SERVER=$2
  shift 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
SECRETD="${1:-$CARGO_TARGET_DIR/debug/secretd}"
ETCD35="${SECRETD_ETCD35_DIR:-$HOME/.cache/secretd-etcd-3.5.1}"
[ "$(id -u)" = 0 ] || { echo "etcd-client-suite: needs root (unshare --net)" >&2; exit 1; }
command -v unshare >/dev/null || { echo "etcd-client-suite: needs unshare (util-linux)" >&2; exit 1; }
[ -x "$ETCD35/etcdctl" ] || { echo "etcd-client-suite: $ETCD35/etcdctl is missing: scripts/deps.sh --test" >&2; exit 1; }
if [ "$SERVER" = secretd ] && [ ! -x "$SECRETD" ]; then
  echo "etcd-client-suite: $SECRETD is missing: cargo build -p secretd" >&2
  exit 1
fi

work=$(mktemp -d /tmp/etcd-client-suite.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The crate as published: cargo fetches it for a throwaway crate that
# depends on it, and we unpack the .crate file cargo verified.
mkdir -p "$work/fetch/src"
cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "etcd-client-suite-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
etcd-client = "=$VERSION"
[workspace]
EOF
: >"$work/fetch/src/lib.rs"
cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/etcd-client-$VERSION.crate | head -n1)
# Unpacked afresh each run, always at the same place, so that the
# archive's file times let cargo reuse an earlier build.
unpacked="${SECRETD_ETCD_CLIENT_DIR:-$HOME/.cache/secretd-etcd-client}"
rm -rf "$unpacked/etcd-client-$VERSION"
mkdir -p "$unpacked"
tar -xzf "$crate" -C "$unpacked"
src="$unpacked/etcd-client-$VERSION"

# Build its tests and examples, with the lock file it was published with.
(cd "$src" && cargo test --locked --no-run --quiet && cargo build --locked --examples --quiet)

# The server's flags as the crate's own setup starts etcd: 0.19's CI runs
# etcd's defaults; from 0.20 on, its docker-compose.yml sets a token TTL
# of 2 s, which its token-refresh tests rely on.
SERVER_FLAGS=""
case "$VERSION" in
  0.19.*) ;;
  *) SERVER_FLAGS="--auth-token-ttl 2" ;;
esac

cat >"$work/inside.sh" <<'EOF'
#!/usr/bin/env bash
# Runs inside the network namespace: the server on localhost:2379, then
# the crate's tests and examples. Every process started here is stopped
# by its PID.
set -uo pipefail
ip link set lo up
cd "$SRC"
if [ "$SERVER" = etcd ]; then
  "$ETCD35/etcd" --name e1 --data-dir "$WORK/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster e1=http://127.0.0.1:2380 $SERVER_FLAGS >"$WORK/server.log" 2>&1 &
else
  "$SECRETD" --name n1 --data-dir "$WORK/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster n1=http://127.0.0.1:2380 $SERVER_FLAGS >"$WORK/server.log" 2>&1 &
fi
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
ctl() { ETCDCTL_API=3 "$ETCD35/etcdctl" --endpoints=127.0.0.1:2379 --dial-timeout=2s "$@"; }
for _ in $(seq 600); do
  ctl endpoint health >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if ! ctl endpoint health >/dev/null 2>&1; then
  echo "etcd-client-suite: $SERVER did not start:" >&2
  tail -n 30 "$WORK/server.log" >&2
  exit 1
fi
# The user test_auth expects, as the crate's Justfile makes it.
ctl user add root:rootpwd >/dev/null && ctl user grant-role root root >/dev/null || exit 1
fail=0
echo "== cargo test (in parallel, as its CI runs it)"
cargo test --locked --offline --quiet 2>&1 | tee "$WORK/tests.log" || fail=1
echo "== test_auth (ignored by default; needs root/rootpwd)"
cargo test --locked --offline --quiet --test client -- --ignored --exact test_auth 2>&1 | tee -a "$WORK/tests.log" || fail=1
examples_ok=0
for ex in kv lease lock maintenance watch election; do
  if timeout 120 cargo run --locked --offline --quiet --example "$ex" >"$WORK/example-$ex.log" 2>&1; then
    echo "example $ex: ok"
    examples_ok=$((examples_ok + 1))
  else
    echo "example $ex: FAILED"
    tail -n 20 "$WORK/example-$ex.log"
    fail=1
  fi
done
passed=$(grep -Eo '[0-9]+ passed' "$WORK/tests.log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$WORK/tests.log" | awk '{s += $1} END {print s + 0}')
echo "etcd-client $ETCD_CLIENT_VERSION against $SERVER: tests $passed passed, $failed failed; examples $examples_ok of 6"
if [ "$fail" != 0 ]; then
  echo "--- $SERVER log (tail)"
  tail -n 40 "$WORK/server.log"
fi
exit "$fail"
EOF
chmod +x "$work/inside.sh"
SRC="$src" WORK="$work" SERVER="$SERVER" SERVER_FLAGS="$SERVER_FLAGS" SECRETD="$SECRETD" ETCD35="$ETCD35" \
  ETCD_CLIENT_VERSION="$VERSION" unshare --net "$work/inside.sh"
