#!/usr/bin/env bash
# Make sure a Docker engine answers. Use the one that is there; where none answers and we
# run as root on Debian, install docker.io and start dockerd; otherwise say what to do.
# Prints the path of a docker client that can build images (BuildKit or classic) on stdout.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

client() {
  # /usr/bin/docker (docker.io) builds without buildx; prefer it when present.
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker || true; fi
}

answers() {
  local c; c=$(client)
  [ -n "$c" ] && timeout 10 "$c" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if answers; then client; exit 0; fi

if [ -n "${DOCKER_HOST:-}" ]; then
  log "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST."
  exit 1
fi

if [ "$(id -u)" -ne 0 ] || [ ! -f /etc/debian_version ]; then
  log "no Docker engine answers. Install Docker (https://docs.docker.com/engine/install/),"
  log "start it, and make sure '$(client || echo docker) version' works for this user."
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

log "starting dockerd (log: /var/log/clusterflow-dockerd.log)"
setsid dockerd >/var/log/clusterflow-dockerd.log 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if answers; then log "engine is up"; client; exit 0; fi
  sleep 1
done
log "dockerd did not answer within 60 s; see /var/log/clusterflow-dockerd.log"
exit 1
