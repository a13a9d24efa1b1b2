"""Steps hand tables and checkpoints to each other by URI, so each step can run on its own machine.

The cross-machine test runs the real step functions against a real MLflow server: validate, build_groups
and train_sft in one working directory, then that directory and cache are deleted (the producer's pod is
gone) and train_hps runs in a fresh working directory with a fresh cache, from the references alone.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from hps_core.tracking import handoff as handoff
from hps_core.recipes import hps as pipeline
from hps_core.config.schema import PipelineConfig
from hps_core.tracking.step_context import StepContext
from hps_core.tracking.mlflow_tracker import MlflowTracker
from hps_core.tracking.null import NullTracker

pytestmark = pytest.mark.slow  # slow tier (--run-slow): a real MLflow server

TINY = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 96}


def _config(root: Path) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "run": {"output_dir": str(root / ".hps"), "experiment": "handoff-test"},
        "data": {"n_prompts": 24, "responses_per_prompt": 4, "eval_fraction": 0.25},
        "model": {"max_prompt_tokens": 32, "max_length": 64, "tiny": TINY},
        "sft": {"epochs": 1, "batch_size": 8, "checkpoint_every": 0},
        "hps": {"epochs": 1, "batch_size": 8, "checkpoint_every": 0},
    })


def _ctx(cfg, run_dir, tracker, parent):
    return StepContext(cfg, run_dir, tracker, parent)


def test_a_step_loads_its_inputs_by_uri_in_a_fresh_working_directory(tmp_path, monkeypatch, mlflow_server_uri):
    producer, consumer = tmp_path / "pod-a", tmp_path / "pod-b"
    producer.mkdir()
    consumer.mkdir()
    monkeypatch.chdir(producer)
    monkeypatch.setenv("HPS_CACHE_DIR", str(producer / "cache"))
    cfg = _config(producer)
    tracker = MlflowTracker(mlflow_server_uri, experiment_name=cfg.run.experiment)
    parent = tracker.create_parent_run("handoff")
    ctx = _ctx(cfg, producer / "run", tracker, parent)
    validation = pipeline.validate(ctx)
    groups = pipeline.build_groups(ctx, validation["canonical"])
    sft = pipeline.train_sft(ctx, groups["groups"], groups["base"])
    for ref in (groups["groups"], groups["negatives"], groups["base"], sft["model"]):
        assert ref["uri"].startswith("runs:/"), ref
    sft_weights = load_file(str(Path(sft["model"]["path"]) / "model.safetensors"))

    shutil.rmtree(producer)  # the producer's machine is gone: only the references remain
    monkeypatch.chdir(consumer)
    monkeypatch.setenv("HPS_CACHE_DIR", str(consumer / "cache"))
    ctx_b = _ctx(_config(consumer), consumer / "run", MlflowTracker(mlflow_server_uri, cfg.run.experiment), parent)
    local_sft = Path(handoff.local(ctx_b, sft["model"]))
    assert local_sft.is_relative_to(consumer / "cache")
    fetched = load_file(str(local_sft / "model.safetensors"))
    assert fetched.keys() == sft_weights.keys()
    assert all(bool((fetched[k] == sft_weights[k]).all()) for k in fetched)

    hps = pipeline.train_hps(ctx_b, groups["groups"], groups["negatives"], sft["model"])
    assert Path(hps["model_dir"]).is_relative_to(consumer)
    assert (Path(hps["model_dir"]) / "model.safetensors").is_file()
    assert hps["model"]["uri"].startswith("runs:/")
    assert not producer.exists()


class CountingTracker(NullTracker):
    """Serves downloads from a local folder and counts them."""

    def __init__(self, store: Path):
        super().__init__()
        self.store, self.downloads = store, 0

    def artifact_uri(self, run_id, artifact_path):
        return f"runs:/{run_id}/{artifact_path}"

    def log_artifact(self, run_id, local_path, artifact_path=None):
        target = self.store / run_id / artifact_path
        target.mkdir(parents=True, exist_ok=True)
        src = Path(local_path)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True)
        else:
            shutil.copy(src, target / src.name)

    def download_artifacts(self, uri, dst_dir):
        self.downloads += 1
        src = self.store / uri.removeprefix("runs:/")
        dst = Path(dst_dir) / src.name
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
        return dst


def test_download_is_cached_and_the_producer_path_is_preferred(tmp_path, monkeypatch):
    monkeypatch.setenv("HPS_CACHE_DIR", str(tmp_path / "cache"))
    tracker = CountingTracker(tmp_path / "store")
    ctx = StepContext(PipelineConfig(), tmp_path / "run", tracker, "p")
    table = ctx.path("groups", "groups.parquet")
    pd.DataFrame({"a": [1, 2]}).to_parquet(table)
    ref = handoff.publish(ctx, "run1", table, "groups")
    assert ref == {"path": str(table), "uri": "runs:/run1/handoff/groups/groups.parquet"}

    assert handoff.local(ctx, ref) == str(table) and tracker.downloads == 0  # same machine: no copy
    table.unlink()
    first = handoff.local(ctx, ref)
    second = handoff.local(ctx, ref)
    assert first == second and tracker.downloads == 1
    assert pd.read_parquet(first)["a"].tolist() == [1, 2]
    assert Path(first).name == "groups.parquet"


def test_a_missing_local_path_without_uri_says_what_to_do(tmp_path):
    ctx = StepContext(PipelineConfig(), tmp_path, NullTracker())
    with pytest.raises(FileNotFoundError, match="MLFLOW_TRACKING_URI"):
        handoff.local(ctx, {"path": str(tmp_path / "gone" / "sft"), "uri": None})
    assert handoff.local(ctx, {"path": "org/model-8b", "uri": None}) == "org/model-8b"  # a hub id
    assert handoff.local(ctx, "org/model-8b") == "org/model-8b"
