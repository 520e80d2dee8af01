#!/usr/bin/env bash
# Starts a single-member secretd with embedded defaults (data in ./dev-data),
# then shows secretctl talking to it. secretd keeps running in the background.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}"
cargo build --bins
bin="$CARGO_TARGET_DIR/debug"
mkdir -p dev-data
if "$bin/secretctl" --command-timeout 1 cluster status >/dev/null 2>&1; then
  echo "a member already answers on 127.0.0.1:2379; using it"
else
  "$bin/secretd" --name dev --data-dir dev-data/dev.etcd \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    >>dev-data/secretd.log 2>&1 &
  echo $! > dev-data/secretd.pid
  for _ in $(seq 50); do "$bin/secretctl" --command-timeout 1 cluster status >/dev/null 2>&1 && break; sleep 0.2; done
fi
set -x
"$bin/secretctl" cluster status
"$bin/secretctl" kv put greeting "hello from secretd"
"$bin/secretctl" kv get greeting
{ set +x; } 2>/dev/null
if ! "$bin/secretctl" secret inspect db_pw >/dev/null 2>&1; then
  set -x
  printf 'correct horse battery staple' | "$bin/secretctl" secret create --label env=dev db_pw -
  { set +x; } 2>/dev/null
fi
set -x
"$bin/secretctl" secret ls
{ set +x; } 2>/dev/null
echo
echo "secretd is running (pid $(cat dev-data/secretd.pid 2>/dev/null || echo '?'), log: dev-data/secretd.log)."
echo "Try: $bin/secretctl secret inspect db_pw    $bin/secretctl kv get --prefix ''    etcdctl --endpoints=127.0.0.1:2379 get greeting"
echo "Stop it with: kill \$(cat dev-data/secretd.pid)"
