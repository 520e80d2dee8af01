#!/usr/bin/env bash
# Rolling upgrade and rollback (issue 30 §5), outside CI: it builds two
# versions. Builds the previous release (OLD_REV, d63c56e: a git worktree in
# a temp dir) and this checkout; runs a 3-member cluster of the old release
# on loopback; starts the jepsen `append` and `secrets` workloads against it
# (`jepsen test --endpoints`, no nemesis); upgrades member by member to this
# checkout's secretd (SIGTERM, start the new binary on the same data
# directory, wait until it is caught up and the workloads make progress);
# then rolls back member by member, and checks both workloads' histories
# stay valid. No root needed.
#
# Rolling back one member: d63c56e refuses a data directory this release
# opened (storage format 2: RocksDB's "Column families not opened: format"),
# so the script checks that refusal and then replaces the member the way
# an operator would: `member remove`, a fresh data directory, `member add`
# on a new peer port (same client port), the old binary joining
# (`--initial-cluster-state existing`) from a snapshot. See README,
# "Upgrades".
#
#   scripts/upgrade-test.sh                 # everything, results in $WORK/summary.txt
#   KEEP=1 scripts/upgrade-test.sh          # keep $WORK (logs, data, histories)
#
# Environment: OLD_REV (d63c56e), OLD_TARGET ($HOME/.cache/secretd-target-old,
# built with nice -n 19, release), CARGO_TARGET_DIR (this checkout's build,
# default $HOME/.cache/secretd-target), NEW_PROFILE (release; `dev` reuses a
# test build), BASE_PORT (43000), SETTLE (seconds of workload between steps,
# 15), SKIP_BUILD=1 (use what is built).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
OLD_REV=${OLD_REV:-d63c56e}
OLD_TARGET=${OLD_TARGET:-$HOME/.cache/secretd-target-old}
NEW_TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/secretd-target}
NEW_PROFILE=${NEW_PROFILE:-release}
BASE_PORT=${BASE_PORT:-43000}
SETTLE=${SETTLE:-15}
WORK=$(mktemp -d /tmp/secretd-upgrade.XXXXXX)
export ETCDCTL_API=3
command -v etcdctl >/dev/null || { echo "etcdctl missing: scripts/deps.sh --test" >&2; exit 1; }

say() { echo "upgrade-test: $*" | tee -a "$WORK/summary.txt" >&2; }
pids=()
jepsen_pids=()
cleanup() {
  for p in "${jepsen_pids[@]}" "${pids[@]}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -d "$WORK/old-src" ]; then
    git -C "$root" worktree remove --force "$WORK/old-src" 2>/dev/null || true
  fi
  [ -z "${KEEP:-}" ] && [ -z "${FAILED:-}" ] && rm -rf "$WORK"
  [ -d "$WORK" ] && echo "upgrade-test: kept $WORK" >&2
  return 0
}
trap cleanup EXIT

# --- builds -----------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  say "building $OLD_REV (release, nice 19) into $OLD_TARGET"
  git -C "$root" worktree add --detach "$WORK/old-src" "$OLD_REV" >/dev/null
  (cd "$WORK/old-src" && CARGO_TARGET_DIR=$OLD_TARGET nice -n 19 cargo build --release -p secretd-api --bins)
  say "building this checkout ($NEW_PROFILE) into $NEW_TARGET"
  (cd "$root" && CARGO_TARGET_DIR=$NEW_TARGET cargo build --profile "$NEW_PROFILE" \
    -p secretd-api -p secretctl -p secretd-jepsen --bins)
fi
OLD=$OLD_TARGET/release
case $NEW_PROFILE in dev) NEW=$NEW_TARGET/debug ;; *) NEW=$NEW_TARGET/$NEW_PROFILE ;; esac
for b in "$OLD/secretd" "$NEW/secretd" "$NEW/jepsen"; do
  [ -x "$b" ] || { echo "upgrade-test: $b is missing" >&2; exit 1; }
done
say "old: $("$OLD/secretd" --version 2>/dev/null || echo "$OLD_REV") ($OLD/secretd)"
say "new: $(git -C "$root" rev-parse --short HEAD) ($NEW/secretd)"

# --- the cluster --------------------------------------------------------------
cport() { echo $((BASE_PORT + $1 * 10)); }
pport=(0 $((BASE_PORT + 11)) $((BASE_PORT + 21)) $((BASE_PORT + 31)))
ep() { echo "127.0.0.1:$(cport "$1")"; }
all_eps="$(ep 1),$(ep 2),$(ep 3)"
member_pid=(0 0 0 0)

# start BIN I [extra flags...]
start() {
  local bin=$1 i=$2
  shift 2
  local c="http://$(ep "$i")" p="http://127.0.0.1:${pport[$i]}"
  "$bin" --name "n$i" --data-dir "$WORK/n$i.etcd" \
    --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" "$@" \
    2>>"$WORK/n$i.log" &
  member_pid[$i]=$!
  pids+=($!)
}

# stop I: SIGTERM, wait for the exit.
stop() {
  local i=$1
  kill "${member_pid[$i]}"
  wait "${member_pid[$i]}" 2>/dev/null || true
  member_pid[$i]=0
}

# healthy I [SECONDS]: the member answers, knows a leader, and a write
# through it is acknowledged.
healthy() {
  local i=$1 deadline=$((SECONDS + ${2:-60}))
  while [ $SECONDS -lt $deadline ]; do
    local st
    if st=$(etcdctl --endpoints="$(ep "$i")" --command-timeout=2s endpoint status -w json 2>/dev/null); then
      local leader
      leader=$(echo "$st" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["leader"])' 2>/dev/null || echo 0)
      if [ "$leader" != "0" ] && etcdctl --endpoints="$(ep "$i")" --command-timeout=3s put "upgrade/probe/n$i" "$SECONDS" >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 0.5
  done
  return 1
}

# retry CMD...: a membership call right after a member stopped may meet an
# election; try again for up to 30 s.
retry() {
  local deadline=$((SECONDS + 30))
  until "$@" 2>>"$WORK/steps.log"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}

# until_listed yes|no EPS PEER_URL remove|add [NAME]: one step towards the
# member list naming PEER_URL (yes) or not (no); true once it does.
until_listed() {
  local want=$1 eps=$2 url=$3 op=$4 name=${5:-} list id
  list=$(etcdctl --endpoints="$eps" --command-timeout=5s member list) || return 1
  if grep -q "$url" <<<"$list"; then [ "$want" = yes ] && return 0; else [ "$want" = no ] && return 0; fi
  case $op in
    remove) id=$(grep "$url" <<<"$list" | awk -F', ' '{print $1}')
            etcdctl --endpoints="$eps" --command-timeout=5s member remove "$id" >>"$WORK/steps.log" ;;
    add) etcdctl --endpoints="$eps" --command-timeout=5s member add "$name" --peer-urls="$url" >>"$WORK/steps.log" ;;
  esac
  return 1
}

ic="n1=http://127.0.0.1:${pport[1]},n2=http://127.0.0.1:${pport[2]},n3=http://127.0.0.1:${pport[3]}"
say "starting 3 members of $OLD_REV"
for i in 1 2 3; do
  start "$OLD/secretd" "$i" --initial-cluster "$ic" --initial-cluster-state new
done
for i in 1 2 3; do healthy "$i" 60 || { FAILED=1; say "FAIL: old member n$i never became healthy"; exit 1; }; done
"$OLD/secretctl" --endpoints "$(ep 1)" cluster rotate-key >>"$WORK/steps.log" 2>&1 || true

# --- the workloads --------------------------------------------------------------
runs=$WORK/runs
mkdir -p "$runs"
for w in append secrets; do
  "$NEW/jepsen" test --endpoints "http://$(ep 1),http://$(ep 2),http://$(ep 3)" --nemesis none \
    --workload "$w" --time-limit 3600 --until-file "$WORK/stop" --concurrency 4 \
    --out "$runs/$w" --seed 1 >"$WORK/jepsen-$w.out" 2>&1 &
  jepsen_pids+=($!)
done

# progress: the workloads' "ok" count grows within SETTLE seconds.
ok_count() {
  local f n s=0
  for f in "$WORK"/jepsen-*.out; do
    n=$(grep -o 'ok [0-9]*' "$f" 2>/dev/null | tail -1 | awk '{print $2}')
    s=$((s + ${n:-0}))
  done
  echo "$s"
}
settle() {
  local before
  before=$(ok_count)
  sleep "$SETTLE"
  for i in 1 2 3; do healthy "$i" 60 || { FAILED=1; say "FAIL: n$i unhealthy after $1"; exit 1; }; done
  say "after $1: every member healthy; workload ok count $before -> $(ok_count)"
}
settle "the start"

# --- rolling upgrade ------------------------------------------------------------
for i in 1 2 3; do
  say "upgrading n$i to HEAD"
  stop "$i"
  start "$NEW/secretd" "$i" --initial-cluster "$ic"
  healthy "$i" 60 || { FAILED=1; say "FAIL: n$i on HEAD never became healthy (see $WORK/n$i.log)"; exit 1; }
  grep -q "older release" "$WORK/n$i.log" && say "n$i (HEAD) logged: $(grep -m1 -o 'the peer runs an older release[^"]*' "$WORK/n$i.log" | head -1)"
  settle "upgrading n$i"
done
say "all three members on HEAD"

# --- rolling back -----------------------------------------------------------------
next_peer=$((BASE_PORT + 50))
for i in 3 2 1; do
  say "rolling n$i back to $OLD_REV"
  stop "$i"
  if timeout 20 "$OLD/secretd" --name "n$i" --data-dir "$WORK/n$i.etcd" \
      --listen-client-urls "http://$(ep "$i")" --advertise-client-urls "http://$(ep "$i")" \
      --listen-peer-urls "http://127.0.0.1:${pport[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pport[$i]}" >>"$WORK/n$i.log" 2>&1; then
    FAILED=1; say "FAIL: $OLD_REV started on a data directory HEAD had opened"; exit 1
  fi
  say "n$i: $OLD_REV refuses HEAD's data directory: $(grep -o 'Column families not opened[^"]*' "$WORK/n$i.log" | tail -1)"
  via=""
  for j in 1 2 3; do [ "$j" != "$i" ] && via+="${via:+,}$(ep "$j")"; done
  old_peer="http://127.0.0.1:${pport[$i]}"
  # Until the member list no longer names the old peer URL (a remove that
  # timed out may still have committed).
  retry until_listed no "$via" "$old_peer" remove
  rm -rf "$WORK/n$i.etcd"
  pport[$i]=$next_peer
  next_peer=$((next_peer + 10))
  retry until_listed yes "$via" "http://127.0.0.1:${pport[$i]}" add "n$i"
  ic_now=""
  for j in 1 2 3; do ic_now+="${ic_now:+,}n$j=http://127.0.0.1:${pport[$j]}"; done
  start "$OLD/secretd" "$i" --initial-cluster "$ic_now" --initial-cluster-state existing
  healthy "$i" 90 || { FAILED=1; say "FAIL: n$i on $OLD_REV never became healthy (see $WORK/n$i.log)"; exit 1; }
  settle "rolling back n$i"
done
say "all three members on $OLD_REV again"

# --- the verdicts ---------------------------------------------------------------
touch "$WORK/stop"
status=0
for k in 0 1; do
  w=$([ $k = 0 ] && echo append || echo secrets)
  code=0
  wait "${jepsen_pids[$k]}" || code=$?
  verdict=$(grep -E "^seed [0-9]+ $w" "$WORK/jepsen-$w.out" || echo "no verdict")
  detail=$(grep -E '^  ' "$WORK/jepsen-$w.out" | tr -s ' ' | tr '\n' ';')
  if [ $code = 0 ] && grep -q ': valid$' <<<"$verdict" && ! grep -q panicked "$WORK/jepsen-$w.out"; then
    say "jepsen $w: $verdict ($detail)"
  else
    status=1
    FAILED=1
    say "jepsen $w: exit $code (1 anomaly, 2 unknown): $verdict ($detail) $(grep -m1 panicked "$WORK/jepsen-$w.out" || true)"
  fi
done
jepsen_pids=()
for i in 1 2 3; do
  grep -q 'panicked' "$WORK/n$i.log" && { status=1; FAILED=1; say "n$i panicked: $(grep -m1 panicked "$WORK/n$i.log")"; }
done
[ $status = 0 ] && say "PASS" || say "FAIL"
cp "$WORK/summary.txt" "${SUMMARY_OUT:-/dev/null}" 2>/dev/null || true
exit $status
