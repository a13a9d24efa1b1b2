"""Issue 7: the registration step against a production-shaped tracking store, an MLflow server on PostgreSQL.

The register step's calls (``tests/test_lineage.py``'s ``setup`` and ``_register``: a tiny safetensors model
for both checkpoints, real raw data and canonical table) run twice through ``mlflow server
--backend-store-uri postgresql://...``; the versions, aliases, gate outcome, metric and lineage tags are read
back through the registry API, and the rows are counted in PostgreSQL itself, so the test fails if the
server quietly used another store.

PostgreSQL comes from the distribution (``apt-get install postgresql``; .ci/run installs it). Without it
the test is skipped on a developer machine and fails in CI (the ``CI`` environment variable is set).
"""

from __future__ import annotations

import os

import pytest

from tests.mlflow_server import mlflow_server
from tests.postgres_server import INSTALL_HINT, postgres_bindir, postgres_server
from tests.test_lineage import HPS_1, _register, setup  # noqa: F401  (setup: fixture)
from tests.test_tracking import tiny_model_dir  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.slow  # slow tier (--run-slow): a PostgreSQL server and an MLflow server on it


@pytest.fixture(scope="module")
def postgres_uri(tmp_path_factory):
    if postgres_bindir() is None:
        message = f"PostgreSQL server binaries not found; {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with postgres_server(tmp_path_factory.mktemp("postgres")) as uri:
        yield uri


@pytest.fixture(scope="module")
def mlflow_server_uri(postgres_uri, tmp_path_factory):
    """Overrides the session's SQLite-backed server: ``setup`` and ``_register`` in this module use this one."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-postgres"), backend_store_uri=postgres_uri) as uri:
        yield uri


def test_register_step_on_postgres_backed_registry(setup, tiny_model_dir, mlflow_server_uri, postgres_uri):
    """v1 clears the floors -> champion + challenger; v2 (margin 0.4 < 0.5) is rejected -> challenger only.
    The registry API and PostgreSQL's own tables say the same."""
    import psycopg
    from mlflow import MlflowClient

    cfg, _, _, _, lineage, _ = setup
    name = cfg.register.policy_name
    assert _register(setup, tiny_model_dir, HPS_1)["hps"] == f"models:/{name}/1"
    assert _register(setup, tiny_model_dir, {**HPS_1, "margin_hardest": 0.4})["hps"] == f"models:/{name}/2"

    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    champion, challenger = (client.get_model_version_by_alias(name, a) for a in ("champion", "challenger"))
    assert (champion.version, challenger.version) == ("1", "2")
    assert champion.tags["gate.decision"] == "promoted" and challenger.tags["gate.decision"] == "rejected"
    assert challenger.tags["gate.judged_against"] == f"models:/{name}/1"
    assert challenger.tags["metric.margin_hardest"] == "0.4" and champion.tags["metric.margin_hardest"] == "0.5"
    assert challenger.tags["parent_version"] == f"models:/{cfg.register.sft_name}/2"
    for key in ("git_commit", "config_digest", "canonical_digest", "groups_digest"):
        assert challenger.tags[key] == lineage[key], key
    assert challenger.tags["metaflow.pathspec"].startswith("HPSFlow/")  # _register makes one per call (a run)
    assert "**Promotion gate: rejected**" in challenger.description

    with psycopg.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM model_versions ORDER BY name, version")
        assert cur.fetchall() == sorted([(cfg.register.sft_name, 1), (cfg.register.sft_name, 2), (name, 1), (name, 2)])
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias", (name,))
        assert cur.fetchall() == [("challenger", 2), ("champion", 1)]
        cur.execute("SELECT value FROM model_version_tags WHERE name = %s AND version = 2 AND key = %s",
                    (name, "canonical_digest"))
        assert cur.fetchall() == [(lineage["canonical_digest"],)]
