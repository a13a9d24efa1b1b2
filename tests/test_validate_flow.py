"""Must-show of issue 4: a flow run on data with planted violations stops at `validate` with the report
and trains/registers nothing; the same run with `on_invalid = "quarantine"` goes on without the bad rows.

Each run uses the smoke config's values (tests/configs/smoke.toml) with data.source pointing at a planted
copy of the generated world, and its own sqlite MLflow store so the registry starts empty.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "hps_flow.py"
SMOKE = ROOT / "tests" / "configs" / "smoke.toml"

pytestmark = pytest.mark.flow


def planted_dataset(path: Path) -> Path:
    """The smoke world (80 prompts x 8 responses, seed 0) with three planted violations:

    - line 4: response 2 emptied                -> 1 row fails the non-empty response expectations;
    - line 11: a dispreferred response set to the preferred text plus two spaces -> its group fails
      "preferred differs from every dispreferred" (8 rows);
    - line 21: only the first response kept    -> its group of 1 fails "at least 2 responses" (1 row).

    So 640 - 7 = 633 rows are read and quarantine removes 1 + 8 + 1 = 10 of them (623 = 98.4 % remain).
    """
    from hps_core.data.synthetic import write_world_jsonl

    world = write_world_jsonl(path.with_name("world.jsonl"), seed=0, n_prompts=80, responses_per_prompt=8)
    records = [json.loads(line) for line in world.read_text().splitlines()]
    records[3]["responses"][2] = ""
    rec = records[10]
    best = max(range(len(rec["rewards"])), key=rec["rewards"].__getitem__)
    other = (best + 1) % len(rec["rewards"])
    rec["responses"][other] = rec["responses"][best] + "  "
    rec = records[20]
    for key in ("responses", "rewards", "is_harmful"):
        rec[key] = rec[key][:1]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_config(tmp_path: Path, data_path: Path, on_invalid: str) -> Path:
    raw = tomllib.loads(SMOKE.read_text())
    raw.setdefault("data", {}).update({"source": str(data_path), "on_invalid": on_invalid})
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / f"planted_{on_invalid}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_flow(tmp_path: Path, config: Path, hps_cache_dir: Path):
    from metaflow import Runner

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "HPS_CACHE_DIR": str(hps_cache_dir), "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with Runner(str(FLOW), cwd=str(tmp_path), env=env, show_output=False,
                config=[("config", str(config))]).run() as running:
        return running.status, running.run, running.stdout + running.stderr


def card_text(html: str) -> str:
    """The card's components: Metaflow embeds them in the HTML as base64 JSON (``__MF_DATA__[...] = "..."``)."""
    import base64
    import re

    match = re.search(r'__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    assert match, "no card data in the HTML"
    return base64.b64decode(match.group(1)).decode("utf-8")


def validate_child_run(tracking_uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "attributes.run_name = 'validate'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def test_planted_violations_stop_the_flow_at_validate(tmp_path, hps_cache_dir):
    data = planted_dataset(tmp_path / "planted.jsonl")
    status, run, log = run_flow(tmp_path, write_config(tmp_path, data, "fail"), hps_cache_dir)
    assert status == "failed", log[-3000:]
    assert [s.id for s in run] == ["validate", "start"]  # nothing after validate started
    assert not run["validate"].task.successful
    # The readable report: expectation, count, the file:line of examples, the remedy.
    for text in ("expect_column_value_lengths_to_be_between", "| response | 1 | 633 |", "planted.jsonl:4",
                 "preferred_equals_dispreferred", "planted.jsonl:11", "n_responses", "planted.jsonl:21",
                 'on_invalid = "quarantine"'):
        assert text in log, text
    # (No card: Metaflow renders cards only for tasks that succeed; the report is in the log and MLflow.)
    # The report went to MLflow; the registry is empty.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, validate_run = validate_child_run(uri)
    logged = {a.path for a in client.list_artifacts(validate_run.info.run_id, "contracts")}
    assert {"contracts/validation_result.json", "contracts/data_docs.html"} <= logged
    result = json.loads(Path(client.download_artifacts(validate_run.info.run_id, "contracts/validation_result.json",
                                                       str(tmp_path))).read_text())
    assert not result["success"] and result["statistics"]["unsuccessful_expectations"] == 4
    assert client.search_registered_models() == []


def test_quarantine_removes_and_counts_the_bad_rows_and_goes_on(tmp_path, hps_cache_dir):
    import pandas as pd
    from metaflow.cards import get_cards

    data = planted_dataset(tmp_path / "planted.jsonl")
    status, run, log = run_flow(tmp_path, write_config(tmp_path, data, "quarantine"), hps_cache_dir)
    assert status == "successful", log[-3000:]
    validation = run["validate"].task.data.validation
    assert validation["counts"]["rows_read"] == 633 and validation["counts"]["rows_quarantined"] == 10
    assert validation["counts"]["prompts_read"] == 80 and validation["counts"]["prompts"] == 78
    quarantined = pd.read_parquet(validation["contract_files"]["quarantine"])
    assert sorted(quarantined["origin"].str.split(":").str[-1].astype(int).value_counts().items()) == [
        (4, 1), (11, 8), (21, 1)]
    kept = pd.read_parquet(validation["canonical_path"])
    assert len(kept) == 623 and not set(kept["origin"]) & set(quarantined["origin"]) - {"planted.jsonl:4"}
    assert run["train_sft"].task.successful and run["end"].task.successful
    assert run["end"].task.data.lineage["contract_result"] == "passed after quarantine"
    card = card_text(get_cards(run["validate"].task, id="contracts")[0].get())
    assert "# Data contracts failed; 10 rows quarantined, the rest passed" in card and "| rows_quarantined | 10 |" in card
    client, validate_run = validate_child_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert validate_run.data.metrics["data/rows_quarantined"] == 10
    assert "contracts/quarantine.parquet" in {a.path for a in client.list_artifacts(validate_run.info.run_id, "contracts")}
    assert {m.name for m in client.search_registered_models()} == {"hps-sft", "hps-policy"}  # it went on to the end
