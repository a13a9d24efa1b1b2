#!/usr/bin/env bash
# Start a local MLflow tracking server. Binds 127.0.0.1 unless HOST is set explicitly.
# Usage: infra/mlflow_server.sh [store dir]    then: export MLFLOW_TRACKING_URI=http://127.0.0.1:${PORT:-5000}
# AUTH=1: MLflow's auth app with the deployed settings (infra/mlflow_basic_auth.ini), its users and grants in
# <store>/basic_auth.db. The first start needs MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters) for the `admin`
# user; then create the other users with infra/mlflow_access.py (docs/production.md, "Who may touch the registry").
set -euo pipefail
STORE="${1:-.mlflow-server}"
mkdir -p "$STORE/artifacts"
STORE="$(cd "$STORE" && pwd)"
APP=()
if [ "${AUTH:-0}" = 1 ]; then
  sed "s|^database_uri = .*|database_uri = sqlite:///$STORE/basic_auth.db|" \
    "$(dirname "$0")/mlflow_basic_auth.ini" > "$STORE/basic_auth.ini"
  export MLFLOW_AUTH_CONFIG_PATH="$STORE/basic_auth.ini"
  # The auth app's CSRF key must not change between restarts: kept in the store, readable by its owner only.
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    [ -s "$STORE/flask_secret_key" ] || (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$STORE/flask_secret_key")
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$STORE/flask_secret_key")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  APP=(--app-name basic-auth)
fi
exec mlflow server \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers 1 \
  --backend-store-uri "sqlite:///$STORE/mlflow.db" \
  --artifacts-destination "$STORE/artifacts" ${APP[@]+"${APP[@]}"}
