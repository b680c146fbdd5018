#!/usr/bin/env bash
# Build core, base and the five step images from the same Dockerfiles as scripts/build-images.sh,
# with buildah instead of the Docker engine, so that the image IDs depend only on the commit and the
# Python base image: created times and file times are SOURCE_DATE_EPOCH (the commit's time), which
# the Dockerfiles also get as a build arg (useradd's password-change day); the source label is the
# project's URL from pyproject.toml, never the clone's remote; bytecode is hash-checked and
# marshalled with PYTHONHASHSEED=0 (see images/base/slim-packages.sh).
# The images land in a buildah store (vfs, no daemon), tagged localhost/clusterflow/<name>:<version>;
# scripts/publish.sh pushes them from there, scripts/verify-reproducible.sh builds twice and compares.
#
#   scripts/build-reproducible.sh [--store DIR] [--no-cache] [--log-dir DIR]
#
# DIR is emptied first (see below): it holds these images only. Prints one line per image on
# stdout: `<name> <image id>`; logs go to
# build/logs/buildah-<name>.log (or DIR/buildah-<name>.log). Installs buildah if it is missing
# (scripts/ensure-tools.sh).
# Env: PYTHON_BASE (default: scripts/build-python-base.sh's image, read from the Docker engine at
#      DOCKER_HOST), SOURCE_DATE_EPOCH (default: the commit time of HEAD).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'build-reproducible: %s\n' "$*" >&2; }

store=$repo/build/buildah no_cache=() logdir=$repo/build/logs
while [ $# -gt 0 ]; do
  case "$1" in
    --store) [ $# -ge 2 ] || { log "--store needs a directory"; exit 2; }; store=$2; shift 2 ;;
    --no-cache) no_cache=(--no-cache); shift ;;
    --log-dir) [ $# -ge 2 ] || { log "--log-dir needs a directory"; exit 2; }; logdir=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
scripts/ensure-tools.sh buildah

VERSION=$(tr -d '[:space:]' < VERSION)
REVISION=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
SOURCE=$(awk -F'"' '/^\[/ { table = $0 } table == "[project.urls]" && /^Source *=/ { print $2 }' pyproject.toml)
[ -n "$SOURCE" ] || { log "pyproject.toml has no [project.urls] Source: add the project's URL there"; exit 2; }
if [ -z "${PYTHON_BASE:-}" ]; then
  PYTHON_BASE=docker-daemon:$(scripts/build-python-base.sh)
fi
mkdir -p "$store" "$logdir"
buildah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)

# build NAME DOCKERFILE BUILD-ARGS...
build() {
  local name=$1 dockerfile=$2; shift 2
  local logfile=$logdir/buildah-$name.log
  if ! "${buildah[@]}" build "${no_cache[@]}" --timestamp "$SOURCE_DATE_EPOCH" --network host \
      --isolation chroot --iidfile "$store/$name.iid" -f "$dockerfile" \
      -t "localhost/clusterflow/$name:$VERSION" --build-arg "VERSION=$VERSION" --build-arg "SOURCE=$SOURCE" \
      --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" "$@" . >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    log "FAILED: $name; full log: $logfile"
    exit 1
  fi
  printf '%s %s\n' "$name" "$(cat "$store/$name.iid")"
}

log "store $store, python base $PYTHON_BASE, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH"
# Start from an empty store: buildah writes the name of a stage's base into the image's history
# ("FROM localhost/clusterflow/core:0.1.0" where an earlier build left that tag, "FROM <id>" where
# not), so what a store already holds would change the IDs. The store is these images' alone.
"${buildah[@]}" rmi --all --force >/dev/null
# base before core: at its end a build removes its intermediate images, and base's core stage is
# the very image core is (same ID), so building core first would lose its tag to that cleanup.
build base images/base/Dockerfile --build-arg "PYTHON_BASE=$PYTHON_BASE"
build core images/base/Dockerfile --target core --build-arg "PYTHON_BASE=$PYTHON_BASE"
for step in prepare cluster evaluate report assign; do
  # report has a Dockerfile of its own (FROM core); the others share images/step (FROM base).
  from=base step_file=(images/step/Dockerfile --build-arg "STEP=$step")
  [ "$step" != report ] || from=core step_file=(images/report/Dockerfile)
  build "$step" "${step_file[@]}" --build-arg "BASE_IMAGE=localhost/clusterflow/$from:$VERSION" \
    --build-arg "REVISION=$REVISION"
done
