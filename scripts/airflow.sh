#!/usr/bin/env bash
# Airflow for the digits_kmeans DAG (orchestration/dags/digits_kmeans.py), on this machine.
#
#   scripts/airflow.sh install      # .venv-airflow: Airflow 3.3.2 + docker provider (+ clusterflow)
#   scripts/airflow.sh standalone   # embedded Airflow (scheduler, API server, DAG processor,
#                                   # triggerer) on http://localhost:$AIRFLOW_PORT, DAG folder loaded
#   scripts/airflow.sh test [ARGS]  # `airflow dags test digits_kmeans [ARGS]` against the real engine
#   scripts/airflow.sh env          # print the environment the other commands use (eval-able)
#   scripts/airflow.sh airflow ...  # any airflow CLI command in that environment
#
# Airflow gets its own venv, installed the way Airflow documents (pins from its constraints file),
# so its ~130 packages never move the step libraries pinned in requirements/dev.lock (.venv), and
# the DAG is proved to import with nothing but Airflow and the clusterflow package.
#
# Environment: AIRFLOW_HOME (default ./airflow-home, git-ignored), AIRFLOW_PORT (default 8080),
# AIRFLOW_VENV (default ./.venv-airflow), CLUSTERFLOW_DATA_SOURCE (data root for the steps: an
# absolute host path or a named Docker volume; default ./data), CLUSTERFLOW_IMAGE_TAG, DOCKER_HOST.
# Airflow settings shared with the Compose stack (scheduler latency) come from
# orchestration/airflow/settings.env; a variable already in the environment wins.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${AIRFLOW_VENV:-$repo/.venv-airflow}
python=${PYTHON:-python3}
requirements=$repo/orchestration/airflow/requirements.txt
constraints=$repo/orchestration/airflow/constraints-3.3.2-py3.11.txt
stamp=$venv/.clusterflow-installed
settings=$repo/orchestration/airflow/settings.env

log() { printf 'airflow.sh: %s\n' "$*" >&2; }

fingerprint() { cat "$requirements" "$constraints" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1; }

install() {
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(fingerprint)" ] && [ -x "$venv/bin/airflow" ]; then
    log "$venv is up to date"
    return 0
  fi
  local version
  version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$version" != 3.11 ]; then
    log "warning: $python is Python $version; the constraints are resolved for Python 3.11"
  fi
  log "installing Airflow into $venv (about 30 s, 570 MB)"
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" -c "$constraints"
  # The DAG imports clusterflow.spec (pure Python, no dependencies of its own that Airflow lacks).
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$repo"
  "$venv/bin/python" -c 'import airflow.sdk, airflow.providers.docker.operators.docker, clusterflow.spec'
  fingerprint >"$stamp"
  log "installed: $("$venv/bin/airflow" version 2>/dev/null | tail -1)"
}

load_settings() {
  # KEY=VALUE lines of settings.env, each exported unless the environment already sets it.
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key=${line%%=*}
    # shellcheck disable=SC2163  # $line is KEY=VALUE: export assigns the key and exports it
    [ -n "${!key+set}" ] || export "$line"
  done <"$settings"
}

settings_keys() { grep -o '^[A-Za-z_][A-Za-z0-9_]*=' "$settings" | tr -d =; }

setup_env() {
  load_settings
  export AIRFLOW_HOME=${AIRFLOW_HOME:-$repo/airflow-home}
  export AIRFLOW_PORT=${AIRFLOW_PORT:-8080}
  export PATH="$venv/bin:$PATH"  # standalone starts its components as `airflow ...`
  export AIRFLOW__CORE__DAGS_FOLDER=$repo/orchestration/dags
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}
  export AIRFLOW__API__PORT=$AIRFLOW_PORT
  export AIRFLOW__API__BASE_URL=http://localhost:$AIRFLOW_PORT
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$AIRFLOW_PORT/execution/
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}
  export CLUSTERFLOW_DATA_SOURCE=${CLUSTERFLOW_DATA_SOURCE:-$repo/data}
  mkdir -p "$AIRFLOW_HOME"
}

require_venv() {
  if [ ! -x "$venv/bin/airflow" ]; then
    log "no Airflow in $venv: run 'scripts/airflow.sh install' (or 'make airflow') first"
    exit 1
  fi
}

require_engine() {
  if ! "$repo/scripts/ensure-docker.sh" >/dev/null; then
    log "no Docker engine answers; the DAG's tasks are containers"
    exit 1
  fi
}

data_root() {
  # A host data root: the DAG's plan task creates each run's directory there and hands it (only
  # it, never following a symlink) to the steps' user 10001: as root by ownership; as another uid
  # by giving it the data root's own mode, so the steps can write it when they can write the data
  # root. Say so when they cannot: group 10001 with chmod 2775 lets that group's members in;
  # chmod 0777 lets anyone plant files the steps and the UI read. A named volume needs nothing.
  local dir=$CLUSTERFLOW_DATA_SOURCE
  case "$dir" in
    /*) mkdir -p "$dir" ;;
    *) return 0 ;;
  esac
  [ "$(id -u)" -ne 0 ] || return 0
  local uid gid mode
  read -r uid gid mode < <(stat -c '%u %g %a' "$dir")
  mode=$((8#$mode))
  if { [ "$uid" = 10001 ] && (( mode & 8#200 )); } || { [ "$gid" = 10001 ] && (( mode & 8#020 )); } \
      || (( mode & 8#002 )); then
    return 0
  fi
  log "warning: the steps run as uid 10001 and cannot write $dir (mode $(stat -c '%a %U:%G' "$dir")):"
  log "  chgrp 10001 it and chmod 2775 (and put uid $(id -u) in group 10001), or run this as root,"
  log "  or set CLUSTERFLOW_DATA_SOURCE to a Docker volume name (e.g. clusterflow-data)"
}

cmd=${1:-help}
shift || true
case "$cmd" in
  install)
    install
    ;;
  env)
    setup_env
    for v in AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__CORE__LOAD_EXAMPLES \
             AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS AIRFLOW__API__PORT AIRFLOW__API__BASE_URL \
             AIRFLOW__CORE__EXECUTION_API_SERVER_URL CLUSTERFLOW_DATA_SOURCE PATH $(settings_keys); do
      printf 'export %s=%q\n' "$v" "${!v}"
    done
    ;;
  airflow)
    require_venv; setup_env
    exec airflow "$@"
    ;;
  standalone)
    require_venv; require_engine; setup_env; data_root
    airflow db migrate >/dev/null
    log "Airflow UI and REST API: http://localhost:$AIRFLOW_PORT  (login: admin, password in"
    log "  $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated once it has started)"
    log "DAG folder: $AIRFLOW__CORE__DAGS_FOLDER; data root: $CLUSTERFLOW_DATA_SOURCE; Ctrl-C stops it"
    exec airflow standalone
    ;;
  test)
    require_venv; require_engine; setup_env; data_root
    airflow db migrate >/dev/null
    exec airflow dags test digits_kmeans "$@"
    ;;
  help|-h|--help)
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    ;;
  *)
    log "unknown command '$cmd' (install, standalone, test, env, airflow)"
    exit 2
    ;;
esac
