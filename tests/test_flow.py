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

    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
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

    # The evaluate run holds every metric with its interval, and the per-example table reproduces the margins.
    from hps_core.evaluate.metrics import check_margins_match

    parent = run["start"].task.data.mlflow_parent_run_id
    (evaluate_run,) = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName = 'evaluate'",
    )
    logged = evaluate_run.data.metrics
    for policy in ("sft", "hps"):
        for name in ("reward_mean", "reward_best_of_k", "harmful_rate", "bleu", "bleu_char"):
            for suffix in ("", "_ci_low", "_ci_high", "_n"):
                assert f"{policy}/{name}{suffix}" in logged, f"{policy}/{name}{suffix}"
    table = client.download_artifacts(evaluate_run.info.run_id, "eval/implicit_rewards.parquet", str(tmp_path))
    assert check_margins_match(table, logged) >= 3
    # Nothing was written outside the run's cwd and the configured cache.
    assert (tmp_path / ".hps" / "runs" / run.id / "models" / "hps" / "model.safetensors").is_file()
    assert f"mlflow_run:{run['start'].task.data.mlflow_parent_run_id}" in run.user_tags
    shutil.rmtree(tmp_path / ".hps", ignore_errors=True)
