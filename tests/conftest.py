"""Shared test set-up: no network, caches in a temp dir, a real MLflow server when a test asks for one."""

import os

# Tests never reach a model hub or MLflow's telemetry; set before anything imports transformers/mlflow.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Metaflow's client refuses root or a missing $USER (CI containers); the flow file does the same for runs.
if not any(os.environ.get(v, "root") != "root" for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")):
    os.environ["METAFLOW_USER"] = "hps-test"

import pytest  # noqa: E402

from tests.mlflow_server import mlflow_server_uri  # noqa: E402,F401  (session-scoped fixture)


@pytest.fixture(scope="session")
def hps_cache_dir(tmp_path_factory):
    """One cache (tiny models, reference log-probs) for the whole session, isolated from the user's."""
    path = tmp_path_factory.mktemp("hps_cache")
    os.environ["HPS_CACHE_DIR"] = str(path)
    return path
