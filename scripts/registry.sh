#!/usr/bin/env bash
# A local Docker registry (Debian's docker-registry, CNCF distribution 2.8) for tests and for
# publishing on one machine: the images' blobs go to a filesystem store under DIR, and `stop`
# removes everything `start` made, so a test session leaves nothing behind.
#
#   scripts/registry.sh start DIR [--addr HOST:PORT] [--tls]   # prints HOST:PORT once /v2/ answers
#   scripts/registry.sh stop DIR
#
# Default address: 127.0.0.1 on a free port. Plain HTTP on loopback (Docker, buildah and skopeo
# treat 127.0.0.0/8 as insecure registries by default, buildah/skopeo with --tls-verify=false).
# Any other address needs --tls: a self-signed certificate for that host is made in DIR
# (DIR/ca.crt), and an engine trusts it once it is copied to /etc/docker/certs.d/HOST:PORT/ca.crt.
# DIR must be empty or absent; it then holds config.yml, registry.pid, registry.log, data/ (, tls).
set -euo pipefail

log() { printf 'registry.sh: %s\n' "$*" >&2; }
refuse() { log "$*"; exit 2; }
usage="usage: scripts/registry.sh start DIR [--addr HOST:PORT] [--tls] | stop DIR"

# port_free HOST PORT: nothing listens there (a bind would succeed).
port_free() {
  python3 -c 'import socket,sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind((sys.argv[1], int(sys.argv[2])))
except OSError: sys.exit(1)' "$1" "$2"
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
is_loopback() { case "$1" in 127.*|localhost|::1|\[::1\]) return 0 ;; *) return 1 ;; esac; }
# ours PID: the process is a docker-registry serving this DIR's config (a stale pid file may name
# an unrelated process by now: never signal that one).
ours() {
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF "docker-registry serve $dir/config.yml"
}

start() {
  local addr="" tls=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --addr) [ $# -ge 2 ] || refuse "--addr needs HOST:PORT"; addr=$2; shift 2 ;;
      --tls) tls=1; shift ;;
      *) refuse "unknown argument '$1' ($usage)" ;;
    esac
  done
  if [ -e "$dir" ] && { [ ! -d "$dir" ] || [ -n "$(ls -A "$dir")" ]; }; then
    refuse "$dir is not an empty directory: give a new or empty DIR (stop a registry with: scripts/registry.sh stop $dir)"
  fi
  [ -n "$addr" ] || addr=127.0.0.1:$(free_port)
  local host=${addr%:*} port=${addr##*:}
  [[ "$port" =~ ^[0-9]{1,5}$ && -n "$host" && "$host" != "$addr" ]] || refuse "--addr $addr: give HOST:PORT, e.g. 127.0.0.1:5000"
  host=${host#[}; host=${host%]}
  if ! is_loopback "$host" && [ "$tls" = 0 ]; then
    refuse "$addr is not a loopback address: add --tls (plain HTTP only on 127.0.0.0/8)"
  fi
  port_free "$host" "$port" || refuse "$addr is in use (or not an address of this machine): pick another --addr"
  command -v docker-registry >/dev/null || "$(dirname "${BASH_SOURCE[0]}")/ensure-tools.sh" docker-registry

  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  local scheme=http tls_config="" curl_tls=()
  if [ "$tls" = 1 ]; then
    local san="DNS:$host"; [[ "$host" =~ ^[0-9.]+$|: ]] && san="IP:$host"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=$host" -addext "subjectAltName=$san" \
      -keyout "$dir/tls.key" -out "$dir/ca.crt" 2>/dev/null || refuse "openssl could not make a certificate for $host"
    tls_config=$(printf '  tls:\n    certificate: %s\n    key: %s\n' "$dir/ca.crt" "$dir/tls.key")
    scheme=https curl_tls=(--cacert "$dir/ca.crt")
  fi
  cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
$tls_config
EOF
  setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 < /dev/null &
  echo $! > "$dir/registry.pid"
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "${curl_tls[@]}" "$scheme://$addr/v2/" 2>/dev/null; then
      [ "$tls" = 0 ] || log "self-signed: an engine trusts it with: mkdir -p /etc/docker/certs.d/$addr && cp $dir/ca.crt /etc/docker/certs.d/$addr/ca.crt"
      echo "$addr"
      return 0
    fi
    ours "$(cat "$dir/registry.pid")" || break
    sleep 0.1
  done
  log "the registry did not answer $scheme://$addr/v2/ within 10 s:"; tail -n 5 "$dir/registry.log" >&2
  stop
  exit 1
}

stop() {
  [ -d "$dir" ] || refuse "$dir does not exist: nothing to stop"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/config.yml" ] || [ -z "$(ls -A "$dir")" ] || refuse "$dir holds no registry started by scripts/registry.sh: not touching it"
  if [ -f "$dir/registry.pid" ]; then
    local pid; pid=$(cat "$dir/registry.pid")
    if ours "$pid"; then
      kill "$pid"
      for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
      ! ours "$pid" || kill -9 "$pid"
    fi
  fi
  find "$dir" -mindepth 1 -delete
}

[ $# -ge 2 ] || refuse "$usage"
cmd=$1 dir=$2; shift 2
case "$cmd" in
  start) start "$@" ;;
  stop) [ $# -eq 0 ] || refuse "$usage"; stop ;;
  *) refuse "$usage" ;;
esac
