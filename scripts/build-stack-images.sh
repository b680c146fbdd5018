#!/usr/bin/env bash
# Build the images of the Docker Compose stack (docker-compose.yml):
#   clusterflow/airflow:<VERSION>   Airflow 3.3.2 + docker provider (vendored constraints), postgres
#                                   drivers, the clusterflow package and the DAG folder (always built;
#                                   a rebuild without changes is all layer-cache hits)
#   clusterflow/launch-gate:<VERSION>  the launch gate, the only holder of the Docker socket
#                                   (images/launch-gate/; always built, as the Airflow image)
#   clusterflow/registry:<VERSION>  Debian's docker-registry, the `registry` profile's registry
#                                   (images/registry/; always built: a rebuild is all cache hits)
#   clusterflow/postgres-standin:15        only when $POSTGRES_IMAGE (default postgres:16) or
#   clusterflow/redis-standin:7            $REDIS_IMAGE (default redis:7) is neither present locally
#                                          nor pullable within $PULL_TIMEOUT seconds (10)
# The step images (clusterflow/{prepare,cluster,evaluate,report}) come from scripts/build-images.sh.
#
#   scripts/build-stack-images.sh            # all of the above
#   scripts/build-stack-images.sh --gate     # only the launch gate (its tests)
#
# Prints nothing on stdout but the lines `LAUNCH_GATE_IMAGE=...`, `REGISTRY_IMAGE=...`,
# `POSTGRES_IMAGE=...` and `REDIS_IMAGE=...`: the images the stack should use here
# (scripts/stack-env.sh writes them into .env).
# Each build logs to build/logs/stack-<image>.log; a failing build prints that log's tail.
# Env: PYTHON_BASE (see scripts/build-python-base.sh), POSTGRES_IMAGE, REDIS_IMAGE, PULL_TIMEOUT,
#      CLUSTERFLOW_STANDINS=always (build and use the stand-ins regardless).
# Classic builder (DOCKER_BUILDKIT=0): works on engines without buildx.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'build-stack-images: %s\n' "$*" >&2; }
case "${1:-}" in
  -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
  --gate|"") ;;
  *) log "unknown argument $1: give --gate or nothing"; exit 2 ;;
esac

DOCKER=$("$repo/scripts/ensure-docker.sh")
PYTHON_BASE=$("$repo/scripts/build-python-base.sh")
VERSION=$(tr -d '[:space:]' < "$repo/VERSION")
export DOCKER_BUILDKIT=0
POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:16}
REDIS_IMAGE=${REDIS_IMAGE:-redis:7}
PULL_TIMEOUT=${PULL_TIMEOUT:-10}
mkdir -p build/logs

build() {  # build NAME CONTEXT DOCKERFILE TAG [ARGS...]
  local name=$1 context=$2 dockerfile=$3 tag=$4; shift 4
  local logfile=$repo/build/logs/stack-$name.log start=$SECONDS
  log "building $tag (log: build/logs/stack-$name.log)"
  if ! "$DOCKER" build -f "$dockerfile" -t "$tag" "$@" "$context" >"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2
    log "building $tag failed"
    exit 1
  fi
  log "built $tag in $((SECONDS - start)) s"
}

available() {  # available IMAGE: present locally, or pulled within $PULL_TIMEOUT seconds
  "$DOCKER" image inspect "$1" >/dev/null 2>&1 && return 0
  [ "${CLUSTERFLOW_STANDINS:-}" = always ] && return 1
  log "pulling $1 (at most ${PULL_TIMEOUT} s)"
  timeout "$PULL_TIMEOUT" "$DOCKER" pull -q "$1" >/dev/null 2>&1
}

# Build contexts hold only what each image needs (the repo's .dockerignore admits step sources only).
contexts=$(mktemp -d)
trap 'rm -rf "$contexts"' EXIT
# Same modes every time (mktemp -d is 0700; umasks differ), so the layer cache keeps hitting.
clean() { find "$1" \( -name __pycache__ -o -name '*.pyc' -o -name tests \) -prune -exec rm -rf {} +; chmod -R u=rwX,go=rX "$1"; }

# The launch gate: its modules only (the clusterflow package's spec and pinning; spec needs
# clusterflow_steps' contract, parameter table and launch policy), so an edit elsewhere in the package keeps its layers.
gate=$contexts/launch-gate
mkdir -p "$gate/app/clusterflow" "$gate/app/clusterflow_steps" "$gate/images"
cp orchestration/clusterflow/__init__.py orchestration/clusterflow/spec.py orchestration/clusterflow/pinning.py \
   "$gate/app/clusterflow/"
cp -r orchestration/clusterflow/gate "$gate/app/clusterflow/"
cp steps/clusterflow_steps/__init__.py steps/clusterflow_steps/contract.py steps/clusterflow_steps/launch.py \
   steps/clusterflow_steps/params.py "$gate/app/clusterflow_steps/"
cp -r images/launch-gate "$gate/images/"
clean "$gate"
build launch-gate "$gate" "$gate/images/launch-gate/Dockerfile" "clusterflow/launch-gate:$VERSION" \
      --build-arg PYTHON_BASE="$PYTHON_BASE" --build-arg VERSION="$VERSION"
printf 'LAUNCH_GATE_IMAGE=%s\n' "clusterflow/launch-gate:$VERSION"
[ "${1:-}" = --gate ] && exit 0

context=$contexts/airflow
mkdir -p "$context/orchestration" "$context/steps" "$context/images"
cp pyproject.toml VERSION "$context/"
cp -r orchestration/airflow orchestration/clusterflow orchestration/dags "$context/orchestration/"
cp -r steps/clusterflow_steps "$context/steps/"
cp -r images/airflow "$context/images/"
clean "$context"
build airflow "$context" "$context/images/airflow/Dockerfile" "clusterflow/airflow:$VERSION" \
      --build-arg PYTHON_BASE="$PYTHON_BASE" --build-arg VERSION="$VERSION"
"$DOCKER" tag "clusterflow/airflow:$VERSION" clusterflow/airflow:latest

build registry "$repo" images/registry/Dockerfile "clusterflow/registry:$VERSION" --build-arg BASE="$PYTHON_BASE"
printf 'REGISTRY_IMAGE=%s\n' "clusterflow/registry:$VERSION"

standin() {  # standin VAR OFFICIAL STANDIN_TAG DIR WHAT: print VAR=<image to use>
  local var=$1 official=$2 tag=$3 dir=$4 what=$5
  if available "$official"; then
    printf '%s=%s\n' "$var" "$official"
    return 0
  fi
  log "$official unavailable: using the stand-in $tag ($what)"
  build "$dir-standin" "$repo" "images/$dir/Dockerfile" "$tag" --build-arg BASE="$PYTHON_BASE"
  printf '%s=%s\n' "$var" "$tag"
}
standin POSTGRES_IMAGE "$POSTGRES_IMAGE" clusterflow/postgres-standin:15 postgres "Debian postgresql-15"
standin REDIS_IMAGE "$REDIS_IMAGE" clusterflow/redis-standin:7 redis "Debian redis-server 7"
