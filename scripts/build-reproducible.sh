#!/usr/bin/env bash
# Build core, base and the four step images from the same Dockerfiles as scripts/build-images.sh,
# with buildah instead of the Docker engine, so that the image IDs depend only on the commit and the
# Python base image: created times and file times are SOURCE_DATE_EPOCH (the commit's time).
# The images land in a buildah store (vfs, no daemon), tagged localhost/clusterflow/<name>:<version>;
# scripts/publish.sh pushes them from there, scripts/verify-reproducible.sh builds twice and compares.
#
#   scripts/build-reproducible.sh [--store DIR] [--no-cache]
#
# Prints one line per image on stdout: `<name> <image id>`; logs go to build/logs/buildah-<name>.log.
# Env: PYTHON_BASE (default: scripts/build-python-base.sh's image, read from the Docker engine at
#      DOCKER_HOST), SOURCE_DATE_EPOCH (default: the commit time of HEAD).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'build-reproducible: %s\n' "$*" >&2; }

store=$repo/build/buildah no_cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --store) [ $# -ge 2 ] || { log "--store needs a directory"; exit 2; }; store=$2; shift 2 ;;
    --no-cache) no_cache=(--no-cache); shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
command -v buildah >/dev/null || { log "buildah is not installed: apt-get install buildah"; exit 2; }

VERSION=$(tr -d '[:space:]' < VERSION)
REVISION=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
if [ -z "${PYTHON_BASE:-}" ]; then
  PYTHON_BASE=docker-daemon:$(scripts/build-python-base.sh)
fi
mkdir -p "$store" build/logs
buildah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)

# build NAME DOCKERFILE BUILD-ARGS...
build() {
  local name=$1 dockerfile=$2; shift 2
  local logfile=build/logs/buildah-$name.log
  if ! "${buildah[@]}" build "${no_cache[@]}" --timestamp "$SOURCE_DATE_EPOCH" --network host \
      --isolation chroot --iidfile "$store/$name.iid" -f "$dockerfile" \
      -t "localhost/clusterflow/$name:$VERSION" --build-arg "VERSION=$VERSION" "$@" . >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    log "FAILED: $name; full log: $logfile"
    exit 1
  fi
  printf '%s %s\n' "$name" "$(cat "$store/$name.iid")"
}

log "store $store, python base $PYTHON_BASE, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH"
build core images/base/Dockerfile --target core --build-arg "PYTHON_BASE=$PYTHON_BASE"
build base images/base/Dockerfile --build-arg "PYTHON_BASE=$PYTHON_BASE"
for step in prepare cluster evaluate report; do
  from=base; [ "$step" = report ] && from=core
  build "$step" "images/$step/Dockerfile" --build-arg "BASE_IMAGE=localhost/clusterflow/$from:$VERSION" \
    --build-arg "REVISION=$REVISION"
done
