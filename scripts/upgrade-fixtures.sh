#!/usr/bin/env bash
# Writes the upgrade fixture (api/tests/fixtures/d63c56e-1member/): the data
# directory of a 1-member cluster of the previous release, d63c56e (storage
# format 1: the raft log in RocksDB's `raft` column family; keyring format 1),
# holding a few keys (one overwritten, one deleted, one on a lease), two
# secrets, a task that uses them, and a keyring rotated once between them
# (the rotation re-wraps the first secret under generation 2 and destroys
# generation 1; the second is sealed under generation 2). The test
# `upgrade::a_data_directory_of_the_previous_release_opens_and_serves` starts
# HEAD on a copy of it. Run once, by hand (it was, to make the checked-in
# fixture); it needs the old release's binaries:
#
#   scripts/upgrade-fixtures.sh OLD_BIN_DIR   # holds d63c56e's secretd, secretctl
#
# scripts/upgrade-test.sh builds them (into $OLD_TARGET/release).
set -euo pipefail
old=${1:?usage: $0 OLD_BIN_DIR (with the previous release\'s secretd and secretctl)}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/api/tests/fixtures/d63c56e-1member
command -v etcdctl >/dev/null || { echo "etcdctl missing: scripts/deps.sh --test" >&2; exit 1; }
work=$(mktemp -d /tmp/secretd-fixture.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cport=${FIXTURE_CLIENT_PORT:-41379}
pport=${FIXTURE_PEER_PORT:-41380}
ep=127.0.0.1:$cport
"$old/secretd" --name n1 --data-dir "$work/n1.etcd" \
  --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
  --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
  --initial-cluster "n1=http://127.0.0.1:$pport" --initial-cluster-state new \
  2>"$work/n1.log" &
pid=$!
export ETCDCTL_API=3
for _ in $(seq 1 100); do
  etcdctl --endpoints="$ep" put upgrade/probe 1 >/dev/null 2>&1 && break
  sleep 0.2
done
e() { etcdctl --endpoints="$ep" "$@"; }
s() { "$old/secretctl" --endpoints "$ep" "$@"; }
e put upgrade/a 1 >/dev/null
e put upgrade/b old >/dev/null
e put upgrade/b 2 >/dev/null
e put upgrade/gone x >/dev/null
e del upgrade/gone >/dev/null
e del upgrade/probe >/dev/null
lease=$(e lease grant 86400 | awk '{print $2}')
e put upgrade/leased 3 --lease="$lease" >/dev/null
printf 'hunter2' | s secret create db_pw - >/dev/null
s cluster rotate-key
printf 'after-rotation' | s secret create api_key - >/dev/null
s task create web.1 --node n1 --secret db_pw --secret api_key >/dev/null
e get upgrade/ --prefix
s secret ls
kill "$pid"
wait "$pid" || true
pid=""
rm -rf "$out"
mkdir -p "$out"
cp -a "$work/n1.etcd" "$out/n1.etcd"
# RocksDB's info logs are no part of the format, and large.
rm -f "$out"/n1.etcd/db/LOG "$out"/n1.etcd/db/LOG.old.*
echo "lease $lease" >"$out/README"
cat >>"$out/README" <<EOF
Data directory of a 1-member cluster of secretd d63c56e (the previous
release), written by scripts/upgrade-fixtures.sh: storage format 1 (raft
log in RocksDB), keyring format 1. Keys: upgrade/a=1, upgrade/b=2
(overwritten), upgrade/gone (deleted), upgrade/leased=3 (on the lease
above, TTL 1 day). Secrets: db_pw ("hunter2", sealed under KEK generation
1, re-wrapped under generation 2 by one rotate-key, which destroyed
generation 1), api_key ("after-rotation", sealed under generation 2 after
the rotation), both used by task web.1 on node n1. Git does not keep file
modes: the test makes the copy private (0700/0600) before starting.
EOF
du -sh "$out"
