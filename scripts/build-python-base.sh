#!/usr/bin/env bash
# Print (stdout) the name of the Python base image that images/base/Dockerfile builds FROM.
#
#   scripts/build-python-base.sh            # -> python:3.11-slim-bookworm, or the local fallback
#   PYTHON_BASE=python:3.11-slim scripts/build-python-base.sh
#
# 1. ${PYTHON_BASE:-python:3.11-slim-bookworm} present locally, or pullable within
#    ${PULL_TIMEOUT:-20} s: use it.
# 2. Otherwise (no registry reachable) build an equivalent from Debian packages with debootstrap
#    (python3, python3-venv, ca-certificates) and `docker import` it as
#    clusterflow/python-base:3.11-bookworm. The host's CA bundle is installed into it so that pip
#    works behind a TLS-intercepting proxy. Skipped when that tag already exists.
#
# Env: DOCKER (client path; default: output of ensure-docker.sh), DEBIAN_MIRROR, DEBIAN_SUITE,
#      HOST_CA_BUNDLE, PULL_TIMEOUT, CLUSTERFLOW_REBUILD_PYTHON_BASE=1 (rebuild the fallback).
# Logs go to stderr; only the image name goes to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'build-python-base: %s\n' "$*" >&2; }

WANTED=${PYTHON_BASE:-python:3.11-slim-bookworm}
FALLBACK=clusterflow/python-base:3.11-bookworm
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DOCKER=${DOCKER:-$("$here/ensure-docker.sh")}

have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# Fast paths: the wanted image is here, or our fallback was built before.
if have "$WANTED"; then echo "$WANTED"; exit 0; fi
if [ "${CLUSTERFLOW_REBUILD_PYTHON_BASE:-0}" != 1 ] && have "$FALLBACK"; then
  echo "$FALLBACK"; exit 0
fi

# Try a pull, but don't wait long: where no registry is reachable it would hang on retries.
if [ "${CLUSTERFLOW_REBUILD_PYTHON_BASE:-0}" != 1 ]; then
  log "pulling $WANTED (timeout ${PULL_TIMEOUT:-20} s)"
  if timeout "${PULL_TIMEOUT:-20}" "$DOCKER" pull -q "$WANTED" >/dev/null 2>&1 && have "$WANTED"; then
    echo "$WANTED"; exit 0
  fi
  log "cannot pull $WANTED; building $FALLBACK from Debian $SUITE packages"
fi

if [ "$(id -u)" -ne 0 ]; then
  log "building $FALLBACK needs root (debootstrap). Re-run as root (sudo $0),"
  log "or make $WANTED available (docker pull / docker load), or set PYTHON_BASE to a local image."
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  if [ -f /etc/debian_version ]; then
    log "installing debootstrap (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  else
    log "debootstrap is missing; install it (it's in Debian/Ubuntu as 'debootstrap')."
    exit 1
  fi
fi
if [ ! -s "$HOST_CA" ]; then
  log "host CA bundle $HOST_CA not found; set HOST_CA_BUNDLE."
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/clusterflow-python-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

log "debootstrap $SUITE (minbase + python3, python3-venv, ca-certificates) into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 40 "$work/debootstrap.log" >&2
  log "debootstrap failed (full log above, last 40 lines)"
  exit 1
}

# The host's bundle (which holds the proxy's CA where there is one) replaces Debian's; keep it as
# a local CA too so that a later update-ca-certificates inside an image keeps it.
install -m 0644 "$HOST_CA" "$root/etc/ssl/certs/ca-certificates.crt"
install -d "$root/usr/local/share/ca-certificates"
install -m 0644 "$HOST_CA" "$root/usr/local/share/ca-certificates/clusterflow-host-bundle.crt"

# Trim what a slim image doesn't carry: docs, man pages, locales, apt lists and caches, logs.
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
       "$root"/usr/share/locale/* "$root"/usr/share/lintian "$root"/usr/share/linda \
       "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
       "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/debootstrap
# Keep the image's own machine-id/hostname neutral, like the official images.
: >"$root/etc/machine-id"
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"

log "importing as $FALLBACK"
tar --numeric-owner -C "$root" -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "clusterflow: Debian $SUITE minbase + python3 (local stand-in for $WANTED)" \
  - "$FALLBACK" >/dev/null

"$DOCKER" run --rm "$FALLBACK" python3 -c 'import venv, ssl, sys; print(sys.version.split()[0])' >&2
echo "$FALLBACK"
