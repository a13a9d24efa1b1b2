"""The fast tier's end-to-end run: every step of the DAG on the smallest world (tests/configs/tiny_flow.toml)
and the laptop's default store (sqlite in the working directory, no server), the way README's second
command runs, in about two minutes on 2 cores. The full checks of the default flow against a server are in
tests/test_flow.py (slow tier)."""

import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
CONFIG = ROOT / "tests" / "configs" / "tiny_flow.toml"


def test_tiny_flow_runs_every_step_and_registers_both_models(tmp_path, hps_cache_dir):
    from mlflow import MlflowClient

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the laptop default store
    done = subprocess.run([sys.executable, str(FLOW), "--config", "config", str(CONFIG), "run"], cwd=tmp_path,
                          env={**env, "HPS_CACHE_DIR": str(hps_cache_dir)}, capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    for step in ("start", "validate", "build_groups", "train_sft", "train_reward_model", "join_models", "expand", "train_hps",
                 "evaluate", "register", "end"):
        assert f"/{step}/" in log, step
    assert "registered hps: models:/hps-policy/1" in log and "registered sft: models:/hps-sft/1" in log, log[-3000:]

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store, registry_uri=store)
    hps = client.get_model_version_by_alias("hps-policy", "challenger")
    assert str(hps.version) == "1"
    assert math.isfinite(float(hps.tags["metric.margin_hardest"]))
    # lineage back to the raw bytes: the generated world's file digests and the tables built from them
    assert hps.tags["raw_file_digests"] and hps.tags["canonical_digest"] and hps.tags["groups_digest"]
    assert hps.tags["metaflow.pathspec"].startswith("HPSFlow/")
