#!/usr/bin/env bash
# Start a local MLflow tracking server. Binds 127.0.0.1 unless HOST is set explicitly.
# Usage: infra/mlflow_server.sh [store dir]    then: export MLFLOW_TRACKING_URI=http://127.0.0.1:${PORT:-5000}
set -euo pipefail
STORE="${1:-.mlflow-server}"
mkdir -p "$STORE/artifacts"
exec mlflow server \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers 1 \
  --backend-store-uri "sqlite:///$(cd "$STORE" && pwd)/mlflow.db" \
  --artifacts-destination "$(cd "$STORE" && pwd)/artifacts"
