#!/usr/bin/env bash
# Regenerate every hash-pinned lock file from its .in file with uv (pinned below).
#
#   scripts/lock-deps.sh            # rewrite the locks
#   scripts/lock-deps.sh --check    # exit 1 if a lock is out of date with its .in (no rewrite)
#
#   images/base/requirements-core.in -> images/base/requirements-core.lock  (the core venv of every
#                                        step image: clusterflow/core, numpy and click)
#   images/base/requirements.in      -> images/base/requirements.lock   (the scikit-learn layer of
#                                        clusterflow/base: prepare, cluster, evaluate)
#   images/report/requirements.in    -> images/report/requirements.lock (the report's matplotlib layer)
#   requirements/dev.in              -> requirements/dev.lock           (host dev/test venv .venv)
#   images/launch-gate/requirements.in -> images/launch-gate/requirements.lock (the launch gate:
#                                        h11 and docker, constrained by the dev lock)
#   orchestration/airflow/requirements-stack.txt -> orchestration/airflow/requirements-stack.lock
#                                        (the Airflow image, constrained by the vendored constraints)
#   images/airflow/requirements-build.in -> images/airflow/requirements-build.lock (its setuptools)
# The two layer locks are compiled with the core lock as constraints and the core packages left
# out: each holds only its layer's extra packages, so no layer carries a 2nd numpy.
#
# Every lock is universal (all platforms: the same lock works on x86_64 CI and arm64 laptops),
# for Python 3.11, with the sha256 of every wheel/sdist of each pinned version, so
# `pip install --require-hashes` works anywhere. Install: pip install --require-hashes -r X.lock
#
# uv: $UV if set, else uv on PATH or in .venv if it is exactly $UV_VERSION, else it is installed
# (pip install uv==$UV_VERSION) into .venv when that exists, otherwise into build/tools/uv.
set -euo pipefail

UV_VERSION=0.13.9
PYTHON_VERSION=3.11
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'lock-deps: %s\n' "$*" >&2; }

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
  *) log "unknown argument: $1"; exit 2 ;;
esac

# Behind a TLS-intercepting proxy uv needs the system bundle (it defaults to its own roots).
if [ -z "${SSL_CERT_FILE:-}" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  export SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
fi

uv_ok() { [ -n "$1" ] && [ -x "$1" ] && [ "$("$1" --version 2>/dev/null | awk '{print $2}')" = "$UV_VERSION" ]; }

find_uv() {
  local c
  for c in "${UV:-}" "$repo/.venv/bin/uv" "$(command -v uv || true)" "$repo/build/tools/uv/bin/uv"; do
    if uv_ok "$c"; then echo "$c"; return 0; fi
  done
  return 1
}

if ! UV_BIN=$(find_uv); then
  if [ -x "$repo/.venv/bin/python" ]; then venv=$repo/.venv; else venv=$repo/build/tools/uv; fi
  log "installing uv==$UV_VERSION into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "uv==$UV_VERSION"
  UV_BIN=$venv/bin/uv
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# compile IN OUT [extra uv args...]
compile() {
  local in=$1 out=$2; shift 2
  local target=$out
  [ "$check" = 1 ] && target=$tmp/$(echo "$out" | tr / _)
  # --no-config: ignore any user/system uv.toml (extra indexes); locks come from PyPI only.
  "$UV_BIN" pip compile --quiet --no-config --generate-hashes --universal \
    --python-version "$PYTHON_VERSION" --custom-compile-command "scripts/lock-deps.sh" \
    "$@" "$in" -o "$target" || { log "uv could not compile $in (see above)"; return 1; }
  if [ "$check" = 1 ]; then
    if ! diff -u "$out" "$target" >&2; then log "$out is out of date; run scripts/lock-deps.sh"; return 1; fi
    log "$out is up to date"
  else
    log "wrote $out"
  fi
}

status=0
core_lock=images/base/requirements-core.lock
compile images/base/requirements-core.in "$core_lock" || status=1

# A layer on top of the core venv: resolved together with the core pins (as constraints), the core
# packages not emitted. In --check mode the core lock is the committed one (checked above).
no_emit=()
while read -r name; do no_emit+=(--no-emit-package "$name"); done < <(
  sed -n 's/^\([A-Za-z0-9][A-Za-z0-9._-]*\)==.*/\1/p' "$core_lock")
compile images/base/requirements.in images/base/requirements.lock \
  --constraint "$core_lock" "${no_emit[@]}" || status=1
compile images/report/requirements.in images/report/requirements.lock \
  --constraint "$core_lock" "${no_emit[@]}" || status=1

compile requirements/dev.in requirements/dev.lock || status=1
# The launch gate's venv: the versions the tests ran it with (the dev lock as constraints).
compile images/launch-gate/requirements.in images/launch-gate/requirements.lock \
  --constraint requirements/dev.lock || status=1
# The Airflow image (images/airflow/Dockerfile): Airflow and its providers at the versions the
# vendored constraints pin, and the setuptools that builds the clusterflow package in it.
compile orchestration/airflow/requirements-stack.txt orchestration/airflow/requirements-stack.lock \
  --constraint orchestration/airflow/constraints-3.3.2-py3.11.txt || status=1
compile images/airflow/requirements-build.in images/airflow/requirements-build.lock || status=1
exit "$status"
