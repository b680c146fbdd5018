#!/usr/bin/env bash
# Make sure the publishing tools are installed: buildah (reproducible image builds), skopeo
# (registry inspection) and docker-registry (a local registry for tests and the compose profile).
# Installs the missing Debian packages when run as root on Debian; otherwise says what to do.
#
#   scripts/ensure-tools.sh [TOOL...]      # default: buildah skopeo docker-registry
set -euo pipefail

log() { printf 'ensure-tools: %s\n' "$*" >&2; }
[ $# -gt 0 ] || set -- buildah skopeo docker-registry
missing=()
for tool in "$@"; do
  case "$tool" in
    buildah|skopeo|docker-registry) command -v "$tool" >/dev/null 2>&1 || missing+=("$tool") ;;
    *) log "unknown tool '$tool' (buildah, skopeo, docker-registry)"; exit 2 ;;
  esac
done
[ ${#missing[@]} -gt 0 ] || exit 0
if [ "$(id -u)" -ne 0 ] || [ ! -f /etc/debian_version ]; then
  log "missing ${missing[*]}: install them (Debian/Ubuntu: apt-get install ${missing[*]})"
  exit 1
fi
log "installing ${missing[*]} (Debian packages)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq "${missing[@]}" >/dev/null; }
