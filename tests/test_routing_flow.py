"""The routing flow end to end through Metaflow's Runner on a small config (tests/configs/routing_smoke.toml):
contracts, mixes, the registered PPM, the routed scored JSONL with label_source per record and its lineage
sidecar, the report's metrics on the MLflow parent run and the card."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "routing_flow.py"
SMOKE = ROOT / "tests" / "configs" / "routing_smoke.toml"

pytestmark = pytest.mark.flow


def test_routing_flow_end_to_end(tmp_path, hps_cache_dir):
    import mlflow
    from metaflow import Runner

    from hps_core.config.loading import load_config
    from hps_core.data import load_preferences
    from hps_core.registry.lineage import upstream_lineage

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": db, "HPS_CACHE_DIR": str(hps_cache_dir), "MLFLOW_DISABLE_TELEMETRY": "true"}
    with Runner(str(FLOW), cwd=str(tmp_path), env=env, show_output=False, config=[("config", str(SMOKE))]).run() as running:
        assert running.status == "successful", running.stdout + running.stderr
        run = running.run
    routed = run["route"].task.data.routed
    rows = load_preferences(routed["routed_path"])
    assert set(rows["label_source"]) == {"human", "ai"}
    assert rows.groupby("label_source")["prompt_id"].nunique().to_dict() == {k: v for k, v in routed["counts"].items() if k != "ties_dropped"}
    sidecar = json.loads(Path(routed["sidecar_path"]).read_text())
    assert sidecar["routing_run"] == run.pathspec and sidecar["ppm"]["model_uri"] == "models:/hyper-ppm/1"
    assert upstream_lineage({routed["routed_path"]: routed["sha256"]})["upstream.ppm_version"] == "models:/hyper-ppm/1"
    hps_cfg = load_config(routed["hps_config_path"])  # smoke settings + the routed data
    assert hps_cfg.data.source == routed["routed_path"] and hps_cfg.evaluate.max_prompts == 12

    client = mlflow.MlflowClient(db, registry_uri=db)
    parent_id = run["start"].task.data.mlflow_parent_run_id
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["ppm_version"] == "models:/hyper-ppm/1"
    metrics = parent.data.metrics
    for name in ("routing/acc_all_human", "routing/acc_all_ai", "routing/acc_random", "routing/acc_hyper",
                 "ppm/cv_spearman", "ppm/cv_rmse"):
        assert name in metrics and metrics[name] == metrics[name]  # present and not NaN
    assert 0.5 < metrics["routing/acc_hyper"] <= 1.0 and metrics["routing/human_share"] == pytest.approx(0.5)
    version = client.get_model_version("hyper-ppm", "1")
    assert version.tags["metaflow.pathspec"] == run.pathspec and version.tags["ppm_sha256"] == sidecar["ppm"]["sha256"]
    ppm = json.loads(Path(mlflow.artifacts.download_artifacts(f"runs:/{version.run_id}/ppm/ppm.json", tracking_uri=db)).read_text())
    assert ppm["sha256"] == sidecar["ppm"]["sha256"] and ppm["ppm"]["schema"] == "hyper-ppm/1"
    assert f"mlflow_run:{parent_id}" in run.tags and "model:models:/hyper-ppm/1" in run.tags
    card = run["report"].task.data.report_result["markdown"]
    assert "| 100 % human |" in card and "| HyPER mix (routed) |" in card
