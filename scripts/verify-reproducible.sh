#!/usr/bin/env bash
# Check that the image builds are reproducible: build core, base and the five step images of the
# commit HEAD twice, cold (two empty scratch buildah stores, --no-cache), with
# scripts/build-reproducible.sh, and compare the image IDs. With --against STORE, build once and
# compare with the images an earlier build left in STORE (e.g. the store scripts/publish.sh pushed).
# The builds run in a clone of HEAD: uncommitted edits are not what a commit's images are made of,
# and an edit or a commit during the builds must not make them differ.
#
#   scripts/verify-reproducible.sh [--against STORE] [--keep]
#
# Prints one line per image on stdout: `<name> <id> <id> identical|DIFFERENT`; exits 1 on any
# difference. The scratch stores (~1.7 GB each) live in a temporary directory under ${TMPDIR:-/tmp}
# that is removed on exit, also when interrupted; --keep leaves it there (for diffing two images:
# skopeo copy containers-storage:[vfs@STORE/root+STORE/run]IMAGE oci:DIR) and says where.
# Build logs: build/logs/verify-{a,b}/. Env: as scripts/build-reproducible.sh (PYTHON_BASE,
# SOURCE_DATE_EPOCH), resolved once so that both builds get the same.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'verify-reproducible: %s\n' "$*" >&2; }
NAMES=(core base prepare cluster evaluate report assign)

against='' keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --against) [ $# -ge 2 ] || { log "--against needs a buildah store directory"; exit 2; }
               against=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
if [ -n "$against" ]; then
  for name in "${NAMES[@]}"; do
    [ -s "$against/$name.iid" ] || {
      log "$against has no $name image: build it with scripts/build-reproducible.sh --store $against"; exit 2; }
  done
fi
scripts/ensure-tools.sh buildah
if [ -z "${PYTHON_BASE:-}" ]; then
  PYTHON_BASE=docker-daemon:$(scripts/build-python-base.sh)
fi
export PYTHON_BASE

scratch=$(mktemp -d "${TMPDIR:-/tmp}/verify-reproducible.XXXXXX")
pids=()
# shellcheck disable=SC2329  # invoked by the EXIT trap below
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # Their buildah too, before the rm (a bounded wait: an orphan's zombie may never be reaped).
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
  done
  if [ "$keep" = 1 ]; then
    log "kept the stores in $scratch (remove it when done: ~1.7 GB each)"
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

git clone -q --no-hardlinks "$repo" "$scratch/src"
# buildah's own temporary files (e.g. its copy of a docker-daemon: base) go in the scratch too.
mkdir "$scratch/tmp"
export TMPDIR=$scratch/tmp
log "commit $(git -C "$scratch/src" rev-parse HEAD), scratch $scratch"
# Each build in its own process group (set -m), so that cleanup stops its buildah too.
set -m
t0=$(date +%s)
runs=(a b); [ -n "$against" ] && runs=(a)
for run in "${runs[@]}"; do
  "$scratch/src/scripts/build-reproducible.sh" --no-cache --store "$scratch/$run" \
    --log-dir "$repo/build/logs/verify-$run" >"$scratch/$run.ids" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || { log "a build failed (its log tail is above)"; exit 1; }; done
pids=()
set +m
log "built in $(($(date +%s) - t0)) s"

first=$scratch/a second=${against:-$scratch/b}
differ=0
for name in "${NAMES[@]}"; do
  one=$(cat "$first/$name.iid") two=$(cat "$second/$name.iid")
  if [ "$one" = "$two" ]; then verdict=identical; else verdict=DIFFERENT; differ=1; fi
  printf '%-8s %s %s %s\n' "$name" "$one" "$two" "$verdict"
done
exit "$differ"
