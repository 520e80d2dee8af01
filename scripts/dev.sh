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
# A development CA, and certificates for the member, an admin and node n1.
certs=dev-data/certs
[ -f "$certs/ca.pem" ] || "$bin/secretd" certs init --dir "$certs" --member dev --node n1 >/dev/null
export SECRETCTL_CACERT="$certs/ca.pem" SECRETCTL_CERT="$certs/admin.pem" SECRETCTL_KEY="$certs/admin-key.pem"
if "$bin/secretctl" --command-timeout 1 cluster status >/dev/null 2>&1; then
  echo "a member already answers on 127.0.0.1:2379; using it"
else
  tls=(--cert-file "$certs/member-dev.pem" --key-file "$certs/member-dev-key.pem" --trusted-ca-file "$certs/ca.pem"
       --peer-cert-file "$certs/member-dev.pem" --peer-key-file "$certs/member-dev-key.pem" --peer-trusted-ca-file "$certs/ca.pem")
  "$bin/secretd" --name dev --data-dir dev-data/dev.etcd "${tls[@]}" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls https://127.0.0.1:2380 --initial-advertise-peer-urls https://127.0.0.1:2380 \
    >>dev-data/secretd.log 2>&1 &
  echo $! > dev-data/secretd.pid
  for _ in $(seq 50); do "$bin/secretctl" --command-timeout 1 cluster status >/dev/null 2>&1 && break; sleep 0.2; done
fi
set -x
"$bin/secretctl" cluster status
"$bin/secretctl" kv put greeting "hello from secretd"
"$bin/secretctl" kv get greeting
{ set +x; } 2>/dev/null
# dev_pw, not the README's db_pw: following both, the README's commands work.
if ! "$bin/secretctl" secret inspect dev_pw >/dev/null 2>&1; then
  set -x
  printf 'correct horse battery staple' | "$bin/secretctl" secret create --label env=dev dev_pw -
  { set +x; } 2>/dev/null
fi
set -x
"$bin/secretctl" secret ls
{ set +x; } 2>/dev/null
echo
echo "secretd is running (pid $(cat dev-data/secretd.pid 2>/dev/null || echo '?'), log: dev-data/secretd.log)."
echo "secretctl needs the admin certificate:"
echo "  export SECRETCTL_CACERT=$certs/ca.pem SECRETCTL_CERT=$certs/admin.pem SECRETCTL_KEY=$certs/admin-key.pem"
echo "Try: $bin/secretctl secret inspect dev_pw"
echo "     etcdctl --endpoints=https://127.0.0.1:2379 --cacert=$certs/ca.pem --cert=$certs/admin.pem --key=$certs/admin-key.pem get greeting"
echo "A node agent for n1 (as root) speaks TLS too, with the node's certificate:"
echo "  $bin/secretd agent --node n1 --mount /run/secretd --endpoints 127.0.0.1:2379 \\"
echo "    --cacert $certs/ca.pem --cert $certs/node-n1.pem --key $certs/node-n1-key.pem"
echo "and scripts/docker-offline.sh runs the README's docker run on its mount, offline."
echo "Stop it with: kill \$(cat dev-data/secretd.pid)"
