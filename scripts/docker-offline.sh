#!/usr/bin/env bash
# The README's `docker run -v /run/secretd/web.1:/run/secrets:ro busybox ...`
# offline: the image is made from Debian's busybox-static (`docker import`,
# nothing pulled), as api/tests/it/docker.rs makes it, and the container
# runs on --network none with the agent's task directory read-only at
# /run/secrets.
#
# If no dockerd answers (DOCKER_HOST, or the default socket), one is started
# for the run in a temporary directory, inside a network namespace of its
# own (unshare --net: loopback only) with --bridge=none --iptables=false
# --ip6tables=false, so the host's network is never touched; it is stopped
# and its directory removed at the end.
#
#   sudo scripts/docker-offline.sh [TASK_DIR] [CMD...]
#   (default: /run/secretd/web.1 cat /run/secrets/password)
#
# Needs root, docker.io (docker, dockerd) and busybox-static
# (scripts/deps.sh --test installs both).
set -euo pipefail

IMAGE=secretd-local/busybox:offline
task_dir=${1:-/run/secretd/web.1}
shift || true
cmd=("$@")
[ ${#cmd[@]} -gt 0 ] || cmd=(cat /run/secrets/password)

die() { echo "docker-offline: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (dockerd and the agent's mount need it)"
for tool in docker dockerd unshare busybox tar; do
  command -v "$tool" >/dev/null || die "needs $tool: scripts/deps.sh --test installs docker.io and busybox-static"
done
[ -d "$task_dir" ] || die "$task_dir is not a directory: is the agent running (see scripts/dev.sh), and the task assigned?"

tmp=$(mktemp -d /tmp/secretd-docker.XXXXXX)
dockerd_pid=
stop() {
  if [ -n "$dockerd_pid" ]; then
    local containerd
    containerd=$(cat "$tmp/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dockerd_pid" 2>/dev/null || true
    if [ -n "$containerd" ]; then
      for _ in $(seq 100); do kill -0 "$containerd" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$containerd" 2>/dev/null || true
    fi
    # The data root's mounts, deepest first.
    awk -v p="$tmp/" 'index($5, p) == 1 { print length($5), $5 }' /proc/self/mountinfo \
      | sort -rn | cut -d' ' -f2- | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  rm -rf "$tmp"
}
trap stop EXIT

if ! docker version >/dev/null 2>&1; then
  echo "docker-offline: no dockerd answers; starting one in its own network namespace ($tmp)" >&2
  # `exec` keeps the PID: the process started is dockerd itself.
  unshare --net sh -c "ip link set lo up && exec dockerd --data-root $tmp/data --exec-root $tmp/exec \
    --pidfile $tmp/dockerd.pid -H unix://$tmp/docker.sock --storage-driver vfs \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false" \
    >/dev/null 2>"$tmp/dockerd.log" &
  dockerd_pid=$!
  export DOCKER_HOST="unix://$tmp/docker.sock" DOCKER_CONFIG="$tmp/client"
  for _ in $(seq 600); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || { cat "$tmp/dockerd.log" >&2; die "dockerd exited"; }
    sleep 0.1
  done
  docker version >/dev/null 2>&1 || { tail -20 "$tmp/dockerd.log" >&2; die "dockerd did not start"; }
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  root="$tmp/rootfs"
  mkdir -p "$root/bin" "$root/run" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/etc"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $(busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  tar -C "$root" -cf "$tmp/rootfs.tar" .
  docker import "$tmp/rootfs.tar" "$IMAGE" >/dev/null
fi

docker run --rm --network none -v "$task_dir:/run/secrets:ro" "$IMAGE" "${cmd[@]}"
