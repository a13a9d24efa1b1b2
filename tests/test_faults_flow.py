"""Faults survived by the real flow, against a real MLflow server reached through a switchable proxy.

One scenario, to keep CI short:
1. Runs A and B start at once in one working directory, one cache, one MLflow server.
2. B's train_hps is killed with SIGKILL right after its checkpoint at optimizer step 4
   (``HPS_FAULT_KILL_AFTER_CHECKPOINT``, a fault-injection hook of the training loop).
3. ``resume`` B with MLflow cut the moment its register step starts: train_sft is cloned, not rerun;
   train_hps continues from step 4; register fails after bounded retries, naming the tracking URI, and
   leaves no version behind.
4. MLflow back, ``resume`` again: B registers exactly one version per model.
5. B's final metrics equal A's (same seed, uninterrupted); A's versions, run dir and checkpoints are its own.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from tests.mlflow_server import mlflow_server
from tests.tcp_proxy import SwitchableProxy

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
CONFIG = ROOT / "tests" / "configs" / "faults.toml"

pytestmark = pytest.mark.flow


def _start(cwd: Path, env: dict, log: Path, *args: str) -> subprocess.Popen:
    # resume takes the origin run's config; Metaflow refuses --config with it
    config = [] if args[0] == "resume" else ["--config", "config", str(CONFIG)]
    cmd = [sys.executable, str(FLOW), *config, *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _run_id(log: Path) -> str:
    return re.search(r"Workflow starting \(run-id (\d+)", log.read_text()).group(1)


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    proc.wait(timeout=timeout)
    return log.read_text(errors="replace")


def _evaluate_metrics(client: MlflowClient, run_id: str) -> dict[str, float]:
    (exp,) = [e for e in client.search_experiments() if e.name == "hps"]
    (parent,) = client.search_runs([exp.experiment_id], f"tags.mlflow.runName = 'hps-{run_id}'")
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and "
                              "tags.mlflow.runName = 'evaluate' and attributes.status = 'FINISHED'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0].data.metrics


def _versions(client: MlflowClient, run_id: str) -> dict[str, list]:
    out = {}
    for name in ("hps-sft", "hps-policy"):
        out[name] = [v for v in client.search_model_versions(f"name = '{name}'")
                     if v.tags.get("metaflow.pathspec") == f"HPSFlow/{run_id}"]
    return out


def test_kill_resume_and_registry_outage_lose_nothing(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with mlflow_server(tmp_path / "mlflow") as server_uri:
        target = urlparse(server_uri)
        proxy = SwitchableProxy(target.hostname, target.port)
        proxy.up()
        client = MlflowClient(server_uri, registry_uri=server_uri)
        env = {**os.environ, "MLFLOW_TRACKING_URI": proxy.url, "HPS_CACHE_DIR": str(tmp_path / "cache"),
               "HF_HUB_OFFLINE": "1", "HPS_MLFLOW_CONNECT_RETRIES": "2", "PYTHONUNBUFFERED": "1"}

        log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
        run_a = _start(work, env, log_a, "run")
        run_b = _start(work, {**env, "HPS_FAULT_KILL_AFTER_CHECKPOINT": "dpo-hps:4"}, log_b, "run")
        out_a, out_b = _wait(run_a, log_a), _wait(run_b, log_b)
        assert run_a.returncode == 0, out_a[-4000:]
        assert run_b.returncode != 0 and "train_hps" in out_b, out_b[-4000:]
        a, b = _run_id(log_a), _run_id(log_b)
        run_dir_b = work / ".hps" / "runs" / b
        assert (run_dir_b / "checkpoints" / "hps" / "checkpoint-4").is_dir()  # checkpoint-<step> layout
        assert not (run_dir_b / "models" / "hps").exists()  # no half-written final model
        sft_weights = run_dir_b / "models" / "sft" / "model.safetensors"
        sft_mtime = sft_weights.stat().st_mtime_ns

        # Resume 1: MLflow goes away the moment the register step starts.
        log_r1 = tmp_path / "resume1.log"
        resume1 = _start(work, env, log_r1, "resume", "--origin-run-id", b)
        deadline = time.monotonic() + 900
        while not re.search(r"/register/\d+ \(pid \d+\)\] Task is starting", log_r1.read_text(errors="replace")):
            assert resume1.poll() is None, log_r1.read_text()[-4000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proxy.down()
        out_r1 = _wait(resume1, log_r1)
        assert resume1.returncode != 0
        # Metaflow clones in parallel threads, so its lines may interleave: match the origin task only.
        assert re.search(rf"Cloning previously run task {b}/train_sft/\d+", out_r1), out_r1[-4000:]
        assert sft_weights.stat().st_mtime_ns == sft_mtime  # SFT was not recomputed
        assert "dpo-hps: resumed from checkpoint at step 4" in out_r1, out_r1[-4000:]
        assert f"MLflow tracking server {proxy.url} is unreachable after 2 attempts" in out_r1, out_r1[-4000:]
        assert _versions(client, b) == {"hps-sft": [], "hps-policy": []}  # nothing half-registered

        # Resume 2: MLflow is back; only register and end run.
        proxy.up()
        log_r2 = tmp_path / "resume2.log"
        out_r2 = _wait(_start(work, env, log_r2, "resume", "--origin-run-id", _run_id(log_r1)), log_r2)
        assert "registered hps: models:/hps-policy/" in out_r2, out_r2[-4000:]
        versions_b, versions_a = _versions(client, b), _versions(client, a)
        assert {k: len(v) for k, v in versions_b.items()} == {"hps-sft": 1, "hps-policy": 1}
        assert {k: len(v) for k, v in versions_a.items()} == {"hps-sft": 1, "hps-policy": 1}
        assert all(v.status == "READY" for vs in (*versions_a.values(), *versions_b.values()) for v in vs)
        assert versions_a["hps-policy"][0].version != versions_b["hps-policy"][0].version

        # The killed-and-resumed run ends where the uninterrupted one did.
        metrics_a, metrics_b = _evaluate_metrics(client, a), _evaluate_metrics(client, b)
        for name in ("hps/margin_hardest", "hps/margin_mean", "hps/reward_mean", "sft/reward_mean", "hps/harmful_rate"):
            assert metrics_b[name] == pytest.approx(metrics_a[name], rel=1e-3, abs=1e-4, nan_ok=True), name
        # Concurrent runs kept their own run directories and checkpoints.
        assert (work / ".hps" / "runs" / a / "models" / "hps").is_dir() and a != b
