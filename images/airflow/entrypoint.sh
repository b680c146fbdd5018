#!/bin/sh
# clusterflow/airflow entrypoint: `airflow ARGS...`. When AIRFLOW_ADMIN_PASSWORD_FILE names a
# file (the stack's secret /run/secrets/airflow_admin_password), first write the SimpleAuthManager
# password file (JSON {user: password}) for every user named in
# AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS (user:role,...), so the password comes from the
# stack's secret instead of being generated and printed by the API server (and never sits in
# the container's environment). `celery worker`
# refuses to start unless the executor is CeleryExecutor (it would idle, taking no tasks).
# Every component first gets the project's Airflow settings (orchestration/airflow/settings.env,
# the same file scripts/airflow.sh reads), each unless the environment already sets it.
set -eu
settings=${CLUSTERFLOW_AIRFLOW_SETTINGS:-/etc/clusterflow/airflow-settings.env}
if [ -f "$settings" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in ''|'#'*) continue ;; esac
    key=${line%%=*}
    case $key in
      ''|[0-9]*|*[!A-Za-z0-9_]*) echo "clusterflow-airflow: $settings: not KEY=VALUE: $line" >&2; exit 2 ;;
    esac
    eval "already=\${$key+set}"
    # shellcheck disable=SC2163  # $line is KEY=VALUE: export assigns the key and exports it
    [ -n "$already" ] || export "$line"
  done <"$settings"
fi
if [ "${1:-}" = celery ] && [ "${2:-}" = worker ] && [ "${AIRFLOW__CORE__EXECUTOR:-}" != CeleryExecutor ]; then
  echo "clusterflow-airflow: a Celery worker needs AIRFLOW__CORE__EXECUTOR=CeleryExecutor (got" \
       "'${AIRFLOW__CORE__EXECUTOR:-}'): start the stack with AIRFLOW_EXECUTOR=CeleryExecutor" >&2
  exit 2
fi
if [ -n "${AIRFLOW_ADMIN_PASSWORD_FILE:-}" ]; then
  file=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated}
  umask 077
  python3 - "$AIRFLOW_ADMIN_PASSWORD_FILE" "$file" <<'PY'
import json, os, sys
try:
    password = open(sys.argv[1]).read().strip()
except OSError as exc:
    sys.exit(f"clusterflow-airflow: cannot read AIRFLOW_ADMIN_PASSWORD_FILE={sys.argv[1]} ({exc.strerror}):"
             " give the service the airflow_admin_password secret")
users = [u.split(":")[0].strip()
         for u in os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "").split(",") if u.strip()]
with open(sys.argv[2], "w") as out:
    json.dump({u: password for u in users}, out)
PY
fi
exec airflow "$@"
