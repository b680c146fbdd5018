#!/usr/bin/env bash
# Build the clusterflow images: clusterflow/core and clusterflow/base (both from images/base/Dockerfile:
# core = the venv with numpy and click; base = core + the scikit-learn layer), then
# clusterflow/{prepare,cluster,evaluate,assign} FROM base and clusterflow/report FROM core (matplotlib, no
# scikit-learn/scipy), each tagged :<VERSION> (from the VERSION file) and :latest.
#
#   scripts/build-images.sh                    # all seven
#   scripts/build-images.sh --step report      # core (cached) + one step; --step may repeat
#   scripts/build-images.sh --step base        # only core and base (--step core: only core)
#   CLUSTERFLOW_BUILDKIT=0 scripts/build-images.sh   # classic builder instead of BuildKit
#
# Options: --step NAME (repeatable), --no-cache, -v/--verbose (stream build output), -h/--help.
# Env: CLUSTERFLOW_BUILDKIT (1|0, default 1), PYTHON_BASE (see scripts/build-python-base.sh),
#      CLUSTERFLOW_SOURCE (OCI source label; default: [project.urls] Source in pyproject.toml, not
#      the clone's remote, so two clones build the same labels), CLUSTERFLOW_REVISION,
#      SOURCE_DATE_EPOCH (unset by default: passed as a build arg only when set, because the core
#      image's useradd layer depends on it, and the commit time would rebuild every image after
#      each commit; scripts/build-reproducible.sh always sets it).
#
# Quiet by default: each build logs to build/logs/<image>.log; a failing build prints the tail of
# its log and the script exits non-zero. The build context is the repo root, trimmed to
# images/ and steps/clusterflow_steps/ by the allow-list .dockerignore. Idempotent: a rebuild
# without changes is all layer-cache hits.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'build-images: %s\n' "$*" >&2; }

ALL_STEPS=(prepare cluster evaluate report assign)
steps=() verbose=0 no_cache=()
while [ $# -gt 0 ]; do
  case "$1" in
    --step) [ $# -ge 2 ] || { log "--step needs a name"; exit 2; }; steps+=("$2"); shift 2 ;;
    --step=*) steps+=("${1#--step=}"); shift ;;
    --no-cache) no_cache=(--no-cache); shift ;;
    -v|--verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) log "unknown argument: $1 (see --help)"; exit 2 ;;
  esac
done
# Which image each step builds FROM: report needs only core; the others need base.
from_image() { case "$1" in report) echo core ;; *) echo base ;; esac; }
build_base=0
if [ ${#steps[@]} -eq 0 ]; then
  steps=("${ALL_STEPS[@]}")
  build_base=1
else
  wanted=("${steps[@]}"); steps=()
  for s in "${wanted[@]}"; do
    case " core base ${ALL_STEPS[*]} " in
      *" $s "*) ;;
      *) log "unknown step '$s' (core base ${ALL_STEPS[*]})"; exit 2 ;;
    esac
    case "$s" in
      core) ;;
      base) build_base=1 ;;
      *) steps+=("$s"); [ "$(from_image "$s")" = core ] || build_base=1 ;;
    esac
  done
fi

DOCKER=$("$repo/scripts/ensure-docker.sh")
export DOCKER
PYTHON_BASE=$("$repo/scripts/build-python-base.sh")

case "${CLUSTERFLOW_BUILDKIT:-1}" in
  0|false|no) export DOCKER_BUILDKIT=0; builder=classic; progress=() ;;
  *)          export DOCKER_BUILDKIT=1; builder=buildkit; progress=(--progress=plain) ;;
esac

VERSION=$(tr -d '[:space:]' < "$repo/VERSION")
REVISION=${CLUSTERFLOW_REVISION:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)}
SOURCE=${CLUSTERFLOW_SOURCE:-$(awk -F'"' '/^\[/ { table = $0 }
  table == "[project.urls]" && /^Source *=/ { print $2 }' "$repo/pyproject.toml")}
[ -n "$SOURCE" ] || { log "pyproject.toml has no [project.urls] Source: add the project's URL there"; exit 2; }
epoch=(); [ -z "${SOURCE_DATE_EPOCH:-}" ] || epoch=(--build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH")

logdir=$repo/build/logs
mkdir -p "$logdir"
summary=()

# build NAME DOCKERFILE BUILD-ARGS...
build() {
  local name=$1 dockerfile=$2; shift 2
  local image=clusterflow/$name logfile=$logdir/$name.log start end rc=0
  start=$(date +%s.%N)
  # The Dockerfile goes in on stdin (-f -), not as -f images/<name>/Dockerfile: BuildKit in
  # Docker 20.10 syncs the Dockerfile under one cache key per build context and skips the
  # transfer when name, size and mtime match the last one, so two Dockerfiles of the same size
  # and checkout time would silently build the same image.
  local cmd=("$DOCKER" build "${progress[@]}" "${no_cache[@]}" -f -
             -t "$image:$VERSION" -t "$image:latest"
             --build-arg "VERSION=$VERSION" --build-arg "SOURCE=$SOURCE"
             "${epoch[@]}" "$@" .)
  printf '+ %s < %s\n' "${cmd[*]}" "$dockerfile" >"$logfile"
  if [ "$verbose" = 1 ]; then
    "${cmd[@]}" <"$dockerfile" 2>&1 | tee -a "$logfile" >&2 || rc=${PIPESTATUS[0]}
  else
    "${cmd[@]}" <"$dockerfile" >>"$logfile" 2>&1 || rc=$?
  fi
  end=$(date +%s.%N)
  if [ "$rc" -ne 0 ]; then
    [ "$verbose" = 1 ] || tail -n 60 "$logfile" >&2
    log "FAILED: $image ($builder builder, exit $rc); full log: ${logfile#"$repo"/}"
    exit "$rc"
  fi
  local size id secs
  size=$("$DOCKER" image inspect --format '{{.Size}}' "$image:$VERSION")
  id=$("$DOCKER" image inspect --format '{{.Id}}' "$image:$VERSION")
  id=${id#sha256:}
  secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
  summary+=("$(printf '%-28s %7s MB  id %.12s  (%s s, %s)' "$image:$VERSION" \
    "$(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1000000 }')" "$id" "$secs" "$builder")")
}

t0=$(date +%s.%N)
log "engine $DOCKER ($builder builder), python base $PYTHON_BASE, version $VERSION"
# core first, then base from the same Dockerfile: base's first stages are core's, cached.
build core images/base/Dockerfile --target core --build-arg "PYTHON_BASE=$PYTHON_BASE"
if [ "$build_base" = 1 ]; then
  build base images/base/Dockerfile --build-arg "PYTHON_BASE=$PYTHON_BASE"
fi
for s in "${steps[@]}"; do
  # report has a Dockerfile of its own; the other steps share images/step/Dockerfile (STEP: which).
  step_file=(images/step/Dockerfile --build-arg "STEP=$s")
  [ "$s" != report ] || step_file=(images/report/Dockerfile)
  build "$s" "${step_file[@]}" --build-arg "BASE_IMAGE=clusterflow/$(from_image "$s"):$VERSION" \
    --build-arg "REVISION=$REVISION"
done
printf '%s\n' "${summary[@]}"
log "done in $(awk -v s="$t0" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }') s; logs in ${logdir#"$repo"/}/"
