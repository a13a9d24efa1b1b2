"""End to end: the default flow through Metaflow's Runner API against a real MLflow server."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"

pytestmark = pytest.mark.flow


def _finite(x) -> bool:
    import math

    return x is not None and math.isfinite(float(x))


def test_default_flow_registers_both_models(tmp_path, mlflow_server_uri, hps_cache_dir):
    from metaflow import Runner
    from mlflow import MlflowClient

    env = {
        "MLFLOW_TRACKING_URI": mlflow_server_uri,
        "HPS_CACHE_DIR": str(hps_cache_dir),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    with Runner(str(FLOW), cwd=str(tmp_path), env={**os.environ, **env}, show_output=False).run() as running:
        log = running.stdout + running.stderr
        assert running.status == "successful", log[-5000:]
        run = running.run
    assert run.successful
    registered = run["end"].task.data.registered
    assert registered == {"sft": "models:/hps-sft/1", "hps": "models:/hps-policy/1", "alias": "models:/hps-policy@challenger"}

    client = MlflowClient(mlflow_server_uri)
    sft = client.get_model_version("hps-sft", "1")
    hps = client.get_model_version_by_alias("hps-policy", "challenger")
    assert hps.version == "1"
    for version, required in ((sft, ("reward_mean", "harmful_rate")), (hps, ("reward_mean", "harmful_rate", "margin_hardest", "margin_mean"))):
        logged = client.get_logged_model(version.source.removeprefix("models:/"))
        for name in required:
            assert _finite(logged.metrics and {m.key: m.value for m in logged.metrics}.get(name)), (version.name, name)
            assert _finite(version.tags[f"metric.{name}"])
        assert version.tags["metaflow.pathspec"] == run.pathspec
        assert version.tags["canonical_digest"] and version.tags["groups_digest"]
    assert "margin_hardest" not in {m.key for m in client.get_logged_model(sft.source.removeprefix("models:/")).metrics}
    # Nothing was written outside the run's cwd and the configured cache.
    assert (tmp_path / ".hps" / "runs" / run.id / "models" / "hps" / "model.safetensors").is_file()
    assert f"mlflow_run:{run['start'].task.data.mlflow_parent_run_id}" in run.user_tags
    shutil.rmtree(tmp_path / ".hps", ignore_errors=True)
