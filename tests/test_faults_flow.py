"""Faults survived by the real flow, against a real MLflow server reached through a switchable proxy.

One scenario, to keep CI short:
1. Runs A and B start at once in one working directory, one cache, one MLflow server.
2. B's train_hps is killed with SIGKILL right after its checkpoint at optimizer step 4
   (``HPS_FAULT_KILL_AFTER_CHECKPOINT``, a fault-injection hook of the training loop); the checkpoint is
   already copied to B's MLflow parent run.
3. "Another machine": B's run directory (checkpoints, models, tables) and the cache are deleted, and
   ``resume`` B runs from another working directory with an empty cache (the Metaflow datastore and the
   MLflow server are what the machines share; the run directory is the run's fixed path, as a pod's
   working directory is, and starts empty there). train_sft is cloned, not rerun; train_hps restores
   checkpoint-4 from MLflow and continues from step 4. While it trains, MLflow drops for 10 s: the step
   finishes, and no metric is lost or logged twice. MLflow is cut again the moment register starts:
   register fails within the bound, naming the tracking URI, and leaves no version behind.
4. MLflow back, ``resume`` again: B registers exactly one version per model.
5. B's final metrics equal A's (same seed, uninterrupted), step by step in training; A's versions, run dir
   and checkpoints are its own; no checkpoint copy is left in MLflow once the models are saved.
"""

import os
import re
import shutil
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
    exp, parent = _parent(client, run_id)
    runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and "
                              "tags.mlflow.runName = 'evaluate' and attributes.status = 'FINISHED'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0].data.metrics


def _parent(client: MlflowClient, run_id: str):
    (exp,) = [e for e in client.search_experiments() if e.name == "hps"]
    (parent,) = client.search_runs([exp.experiment_id], f"tags.mlflow.runName = 'hps-{run_id}'")
    return exp, parent


def _training_history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The finished train_hps child run's metric history: key -> [(step, value)], timing metrics left out."""
    exp, parent = _parent(client, run_id)
    (run,) = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and "
                                "tags.mlflow.runName = 'train_hps' and attributes.status = 'FINISHED'")
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics if key not in ("tokens_per_s", "step_time_s")}


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
               "HF_HUB_OFFLINE": "1", "HPS_MLFLOW_CONNECT_RETRIES": "2", "PYTHONUNBUFFERED": "1",
               "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(work / ".metaflow")}  # what every "machine" shares

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
        _, parent_b = _parent(client, b)
        assert {"checkpoint-4", "latest.json"} <= {
            os.path.basename(f.path) for f in client.list_artifacts(parent_b.info.run_id, "checkpoints/hps")}

        # Another machine: nothing of B on its disk, an empty cache, another working directory.
        shutil.rmtree(run_dir_b)
        shutil.rmtree(tmp_path / "cache")
        work2 = tmp_path / "work2"
        work2.mkdir()
        env2 = {**env, "HPS_CACHE_DIR": str(tmp_path / "cache2")}

        # Resume 1: MLflow drops for 10 s while train_hps trains, and goes away the moment register starts.
        log_r1 = tmp_path / "resume1.log"
        resume1 = _start(work2, env2, log_r1, "resume", "--origin-run-id", b)

        def wait_for(pattern: str) -> None:
            deadline = time.monotonic() + 900
            while not re.search(pattern, log_r1.read_text(errors="replace")):
                assert resume1.poll() is None, log_r1.read_text()[-4000:]
                assert time.monotonic() < deadline
                time.sleep(0.05)

        wait_for(r"dpo-hps: resumed from checkpoint at step 4")
        proxy.down()  # the next metric write (step 8) and checkpoint copy (step 6) meet the outage
        time.sleep(10)
        proxy.up()
        wait_for(r"/register/\d+ \(pid \d+\)\] Task is starting")
        proxy.down()
        cut = time.monotonic()
        out_r1 = _wait(resume1, log_r1)
        waited = time.monotonic() - cut
        assert resume1.returncode != 0
        # Metaflow clones in parallel threads, so its lines may interleave: match the origin task only.
        assert re.search(rf"Cloning previously run task {b}/train_sft/\d+", out_r1), out_r1[-4000:]
        assert not re.search(r"/train_sft/\d+ \(pid \d+\)\] Task is starting", out_r1)  # SFT not recomputed
        assert re.search(r"restored checkpoint-4 \(step 4\) from runs:/\w+/checkpoints/hps", out_r1), out_r1[-4000:]
        assert "fetched runs:/" in out_r1  # the SFT model and the groups came from MLflow, not this disk
        assert f"MLflow tracking server {proxy.url} is unreachable after 2 attempts" in out_r1, out_r1[-4000:]
        # The probe gives up after 2 attempts (1 s apart); marking the runs FAILED meets MLflow's bounded
        # HTTP retries (about 65 s, hps_core.tracking.mlflow_tracker.HTTP_BOUNDS): minutes, never hours.
        assert waited < 300, waited
        assert client.list_artifacts(parent_b.info.run_id, "checkpoints/hps") == []  # dropped with the model
        assert _versions(client, b) == {"hps-sft": [], "hps-policy": []}  # nothing half-registered

        # Resume 2: MLflow is back; only register and end run.
        proxy.up()
        log_r2 = tmp_path / "resume2.log"
        out_r2 = _wait(_start(work2, env2, log_r2, "resume", "--origin-run-id", _run_id(log_r1)), log_r2)
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
        # Every training metric after the resume point, once each (none lost to the outage, none doubled
        # by a retried write), at A's values.
        history_a, history_b = _training_history(client, a), _training_history(client, b)
        assert set(history_b) == set(history_a) and "loss" in history_a
        for key, points in history_a.items():
            after_resume = [(step, value) for step, value in points if step > 4]
            assert [step for step, _ in history_b[key]] == [step for step, _ in after_resume], key
            assert [v for _, v in history_b[key]] == pytest.approx([v for _, v in after_resume], rel=1e-3, abs=1e-4), key
        # Concurrent runs kept their own run directories and checkpoints.
        assert (work / ".hps" / "runs" / a / "models" / "hps").is_dir() and a != b
