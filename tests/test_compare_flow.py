"""The comparison flow end to end (2 methods x 1 seed on a small world) through Metaflow's Runner against a
real MLflow server: one branch per method, the table in the card's artifact, MLflow and markdown."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "compare_flow.py"
CONFIG = ROOT / "tests" / "configs" / "compare_smoke.toml"

pytestmark = pytest.mark.flow


def test_compare_flow_trains_each_method_from_one_sft_and_writes_the_table(tmp_path, mlflow_server_uri, hps_cache_dir):
    from metaflow import Runner
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": mlflow_server_uri, "HPS_CACHE_DIR": str(hps_cache_dir), "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    runner = Runner(str(FLOW), cwd=str(tmp_path), env={**os.environ, **env}, show_output=False,
                    config=[("config", str(CONFIG))])
    with runner.run(max_workers=2) as running:
        assert running.status == "successful", (running.stdout + running.stderr)[-5000:]
        run = running.run

    branches = list(run["train_method"])
    assert sorted(t.data.branch["name"] for t in branches) == ["dpo-bt-max_min_n3_s0", "dpo-hps_n3_s0"]
    sft_dir = run["train_sft"].task.data.sft["model_dir"]
    rows = run["report"].task.data.rows
    assert {r["label"] for r in rows} == {"dpo-bt (max_min)", "dpo-hps"}
    for row in rows:
        for key in ("bleu", "reward_mean", "margin_hardest", "margin_mean", "step_time_ms", "peak_memory_mb"):
            assert row[key] == row[key], key  # not NaN
        assert row["step_time_ms"] > 0
    # Every branch trained on groups cut to n = 3, from the one SFT checkpoint (shared reference).
    import pandas as pd

    sized = run["join_models"].task.data.sized_groups
    groups = pd.read_parquet(sized["groups"]["3"]["path"])
    assert set(groups.loc[groups["split"] == "train", "n"]) == {3} and set(groups.loc[groups["split"] == "eval", "n"]) == {4}
    hps_negatives = pd.read_parquet(Path(run["start"].task.data.run_dir) / "compare" / "dpo-hps_n3_s0" / "groups" / "negatives.parquet")
    bt_negatives = pd.read_parquet(Path(run["start"].task.data.run_dir) / "compare" / "dpo-bt-max_min_n3_s0" / "groups" / "negatives.parquet")
    assert set(bt_negatives["negative_rank"]) == {2}  # max_min: the worst of the 3 responses, every time
    assert hps_negatives["negative_rank"].isin([1, 2]).all()
    assert sft_dir and all(t.data.trained["model"]["path"] != sft_dir for t in branches)

    markdown = run["report"].task.data.comparison["markdown"]
    assert "| dpo-hps |" in markdown and "| dpo-bt (max_min) |" in markdown and "Claims check" in markdown
    assert Path(run["report"].task.data.comparison["paths"]["markdown"]).read_text() == markdown

    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    parent = run["start"].task.data.mlflow_parent_run_id
    experiment = client.get_run(parent).info.experiment_id
    (report,) = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName = 'compare_report'")
    assert {a.path for a in client.list_artifacts(report.info.run_id, "compare")} >= {
        "compare/comparison.md", "compare/per_seed.csv", "compare/aggregate.csv", "compare/comparison.png"}
    assert "dpo-hps/n3/margin_hardest_mean" in report.data.metrics
    branch_runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName LIKE 'dpo-%'")
    assert len(branch_runs) == 2
    for branch in branch_runs:  # each branch run holds its train and evaluate runs
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{branch.info.run_id}'")
        assert sorted(c.info.run_name for c in children) == ["evaluate", "train"]
    assert client.get_run(parent).info.status == "FINISHED"
