#!/usr/bin/env bash
# Publish the commit's images: build core, base and the five step images reproducibly
# (scripts/build-reproducible.sh), push each to REGISTRY/clusterflow/<name> tagged with the version
# and the commit, and write the digests file that pins them (clusterflow.pinning validates it).
#
#   scripts/publish.sh REGISTRY [--output FILE] [--store DIR]
#
# REGISTRY: host:port or a domain with an optional path, no scheme (127.0.0.1:5000, ghcr.io/acme).
# --output: the digests file (default images/digests.json); --store: the buildah store
# (default build/buildah). The work tree must be clean: what is pushed is named after the commit.
# Loopback registries are spoken to over plain HTTP; any other must have a certificate buildah
# trusts. Credentials: `buildah login REGISTRY` beforehand, or REGISTRY_AUTH_FILE=auth.json
# (what CI does); this script handles no secrets.
# Prints per image `<name> <reference> <push seconds>`, then the total time.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
log() { printf 'publish: %s\n' "$*" >&2; }
refuse() { log "$*"; exit 2; }
python=${PYTHON:-$repo/.venv/bin/python}
export PYTHONPATH="$repo/orchestration${PYTHONPATH:+:$PYTHONPATH}"  # this commit's pinning

registry="" output=$repo/images/digests.json store=$repo/build/buildah
while [ $# -gt 0 ]; do
  case "$1" in
    --output) [ $# -ge 2 ] || refuse "--output needs a file"; output=$2; shift 2 ;;
    --store) [ $# -ge 2 ] || refuse "--store needs a directory"; store=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) refuse "unknown option '$1' (see --help)" ;;
    *) [ -z "$registry" ] || refuse "one REGISTRY only, got '$registry' and '$1'"; registry=$1; shift ;;
  esac
done
[ -n "$registry" ] || refuse "give the registry: scripts/publish.sh HOST:PORT (make publish REGISTRY=HOST:PORT)"
case "$registry" in *://*) refuse "registry '$registry': drop the scheme (${registry#*://})" ;; esac
[ -x "$python" ] || refuse "no Python at $python: run make venv (or set PYTHON to one with clusterflow's dependencies)"
problem=$("$python" -c 'import sys; from clusterflow.pinning import registry_problem
print(registry_problem(sys.argv[1]) or "")' "$registry") || refuse "$python could not import clusterflow.pinning: run make venv"
[ -z "$problem" ] || refuse "$problem"
dirty=$(git status --porcelain --untracked-files=normal)
[ -z "$dirty" ] || refuse "the work tree has uncommitted changes ($(wc -l <<<"$dirty") paths): commit them, or publish from a clean clone"

version=$(tr -d '[:space:]' < VERSION)
commit=$(git rev-parse HEAD)
tls=()
case "${registry%%/*}" in 127.*|localhost|localhost:*|\[::1\]*) tls=(--tls-verify=false) ;; esac
buildah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)

# since T0: seconds from T0 (date +%s.%N) to now, one decimal.
since() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }'; }
started=$(date +%s.%N)
built=$(scripts/build-reproducible.sh --store "$store")
log "built $(wc -l <<<"$built") images in $(since "$started") s"

# push NAME TAG: push the built image, print its manifest digest.
push() {
  local digestfile=$store/$1-$2.digest
  "${buildah[@]}" push -q "${tls[@]}" --digestfile "$digestfile" \
    "localhost/clusterflow/$1:$version" "docker://$registry/clusterflow/$1:$2" >&2
  cat "$digestfile"
}

pairs=()
while read -r name _; do
  t0=$(date +%s.%N)
  digest=$(push "$name" "$version")
  again=$(push "$name" "$commit")
  [ "$digest" = "$again" ] || { log "$name: :$version is $digest but :$commit is $again"; exit 1; }
  pairs+=("$name=$digest")
  printf '%s %s/clusterflow/%s@%s %s s\n' "$name" "$registry" "$name" "$digest" "$(since "$t0")"
done <<<"$built"

mkdir -p "$(dirname "$output")"
"$python" -m clusterflow.pinning "$registry" "$version" "$commit" "${pairs[@]}" > "$output.tmp"
mv "$output.tmp" "$output"
printf 'total %s s; digests file %s\n' "$(since "$started")" "$output"
