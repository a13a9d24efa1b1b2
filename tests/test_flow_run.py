"""hps_core.recipes.flow_run: the run every flow's start step opens, and the step context rebuilt from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

from hps_core.config.schema import PipelineConfig
from hps_core.recipes.flow_run import RUN_ARTIFACTS, open_run, step_context
from hps_core.common.digests import json_digest
from hps_core.tracking.reader import MlflowReader


def test_open_run_then_step_context(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = PipelineConfig()
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_dir=str(tmp_path / "out"), experiment="flow-run-test"))
    opened = open_run(cfg, flow_name="SomeFlow", run_id="42", run_name="some-42", runs_dir="things",
                      extra_params={"extra": {"k": 3}})
    assert set(opened) == set(RUN_ARTIFACTS)
    assert opened["run_dir"] == str((tmp_path / "out" / "things" / "42").resolve())
    assert opened["tracking_uri"] == uri and opened["resolved_config"] == cfg.to_dict()
    assert opened["lineage"]["metaflow.pathspec"] == "SomeFlow/42"
    assert opened["lineage"]["config_digest"] == json_digest(cfg.to_dict())
    run = MlflowReader(uri).run(opened["mlflow_parent_run_id"])
    assert run["name"] == "some-42"
    assert run["tags"]["metaflow.pathspec"] == "SomeFlow/42"
    assert run["params"]["extra.k"] == "3" and run["params"]["run.experiment"] == "flow-run-test"

    flow = SimpleNamespace(**opened)
    ctx = step_context(flow, cfg, "input")
    assert ctx.run_dir == Path(opened["run_dir"]) / "input" and ctx.parent_run_id == opened["mlflow_parent_run_id"]
    assert ctx.tags == opened["lineage"] and ctx.tags is not flow.lineage  # a copy: steps add tags of their own
    assert "config_digest" not in open_run(cfg, flow_name="F", run_id="1", run_name="x", digest_config=False)["lineage"]
