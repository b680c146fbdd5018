#!/usr/bin/env bash
# An extra Docker engine on this machine, beside the main one, with nothing shared but the kernel.
#
#   scripts/engine.sh start DIR NAME   # prints its DOCKER_HOST (unix://DIR/docker.sock)
#   scripts/engine.sh stop DIR         # stops it and leaves nothing behind (DIR stays, empty)
#
# The engine gets its own data root (an empty image store), exec root, pidfile, socket, containerd
# and bridge cf-NAME on a 172.31.x.0/24 that no interface here uses. The bridge exists only so that
# dockerd starts without touching docker0: an extra engine started with --bridge=none, or on the
# default bridge, deletes or takes over the main engine's docker0 (see the "Several engines" notes).
# Step containers run with --network none anyway, and pulls from a loopback registry are dockerd's.
#
# Refuses, with one line and exit 2: a NAME whose bridge exists already (or too long: bridge names
# have at most 15 characters), a DIR where an engine still runs, anything that would be the main
# engine's (docker0, /var/lib/docker, /var/run/docker.sock).
# Env: ENGINE_READY_TIMEOUT (s, default 30), ENGINE_STOP_TIMEOUT (s before SIGKILL, default 20).
set -euo pipefail

LOCK=/run/clusterflow-engines.lock  # serialises picking subnets and creating bridges
MAIN_ROOT=/var/lib/docker
MAIN_SOCKET=/var/run/docker.sock

die() { printf 'engine.sh: %s\n' "$*" >&2; exit 2; }
log() { printf 'engine.sh: %s\n' "$*" >&2; }
usage() { die "usage: scripts/engine.sh start DIR NAME | stop DIR"; }

alive() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

free_subnet() {
  # The first 172.31.x (x = 10..254) that no address or route on this machine falls in.
  local used x
  used=$( { ip -o -4 addr show; ip -4 route show; } | grep -o '172\.31\.[0-9]*\.' | sort -u || true)
  for x in $(seq 10 254); do
    grep -qx "172\.31\.$x\." <<<"$used" || { echo "172.31.$x"; return 0; }
  done
  return 1
}

mounts_under() {
  # Mount points under $1, deepest first (mountinfo's 5th field; octal escapes are left as is).
  awk -v dir="$1/" 'index($5, dir) == 1 { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-
}

start() {
  local dir=$1 name=$2 bridge="cf-$2" net host waited=0
  [[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "NAME must be lowercase letters, digits and dashes, got '$name'"
  [ ${#bridge} -le 15 ] || die "NAME '$name' is too long: bridge $bridge must have at most 15 characters"
  dir=$(realpath -m "$dir")
  case "$dir" in "$MAIN_ROOT"|"$MAIN_ROOT"/*|/var/run/docker|/run/docker|/var/run/docker/*|/run/docker/*)
    die "DIR $dir belongs to the main engine: pick a directory of its own" ;; esac
  host=unix://$dir/docker.sock
  [ "$dir/docker.sock" != "$MAIN_SOCKET" ] || die "DIR $dir would put the socket on the main engine's"
  [ ${#dir} -le 80 ] || die "DIR $dir is too long for its unix sockets (at most 80 characters)"
  ! alive "$dir" || die "an engine still runs in $dir (pid $(cat "$dir/pid")): scripts/engine.sh stop $dir"
  { [ -w /run ] && command -v dockerd >/dev/null && command -v ip >/dev/null; } \
    || die "needs root, dockerd and ip (scripts/ensure-docker.sh installs docker.io)"

  exec 9>"$LOCK"
  flock 9
  ! ip link show "$bridge" >/dev/null 2>&1 || die "NAME '$name' is in use: bridge $bridge exists"
  mkdir -p "$dir"
  net=$(free_subnet) || die "no free 172.31.x.0/24 left for bridge $bridge"
  ip link add name "$bridge" type bridge
  echo "$bridge" >"$dir/bridge"  # from here on, stop DIR undoes everything
  ip addr add "$net.1/24" dev "$bridge"
  ip link set "$bridge" up
  exec 9>&-

  mkdir -p "$dir/data" "$dir/exec"
  # setsid: the engine outlives this script and never gets the caller's terminal signals.
  setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/pid" -H "$host" \
    --iptables=false --ip-masq=false --bridge="$bridge" --fixed-cidr="$net.0/25" \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  while ! docker -H "$host" version >/dev/null 2>&1; do
    if ! kill -0 $! 2>/dev/null || [ "$waited" -ge "$((${ENGINE_READY_TIMEOUT:-30} * 10))" ]; then
      log "dockerd in $dir did not answer; its log:"
      tail -20 "$dir/dockerd.log" >&2
      stop "$dir" >/dev/null 2>&1 || true
      exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  echo "$host"
}

stop() {
  local dir=$1 pid waited=0 mount
  [ -d "$dir" ] || die "no directory $dir"
  dir=$(cd "$dir" && pwd -P)
  [ -f "$dir/bridge" ] || die "$dir holds no engine of scripts/engine.sh (no $dir/bridge)"
  if alive "$dir"; then
    pid=$(cat "$dir/pid")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$((${ENGINE_STOP_TIMEOUT:-20} * 10))" ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd $pid did not stop in ${ENGINE_STOP_TIMEOUT:-20} s: SIGKILL"
      kill -KILL "$pid"
    fi
  fi
  # Its containerd (and shims) run from the exec root; dockerd normally stops them itself.
  for pid in $(pgrep -f -- "$dir/exec/" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  while read -r mount; do
    [ -n "$mount" ] && { umount "$mount" 2>/dev/null || umount -l "$mount"; }
  done < <(mounts_under "$dir")
  ip link del "$(cat "$dir/bridge")" 2>/dev/null || true
  # --one-file-system: should a mount have survived, never delete through it.
  find "$dir" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
