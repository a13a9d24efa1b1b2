"""Registration with the promotion gate, and the lineage walk, against a real MLflow server over HTTP.

No flow here: ``hps_core.registry.register_models`` is called the way the register step calls it, with a
tiny safetensors model standing in for both checkpoints and a small raw file + canonical table on disk.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hps_core.config.schema import DataConfig, PipelineConfig, RegisterConfig
from hps_core.data import load_canonical, table_digest
from hps_core.common.digests import file_sha256
from hps_core.registry.lineage_walk import main as lineage_main
from hps_core.registry.lineage_walk import verify, walk
from hps_core.tracking.step_context import StepContext
from hps_core.registry.register import register_models
from hps_core.tracking.reader import MlflowReader, parse_model_uri
from hps_core.tracking.mlflow_tracker import MlflowTracker
from hps_core.tracking.base import TrackingError
from tests.test_tracking import tiny_model_dir  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.slow  # slow tier (--run-slow): a real MLflow server

SFT = {"reward_mean": 0.5, "harmful_rate": 0.1}
HPS_1 = {"reward_mean": 1.0, "reward_mean_ci_low": 0.5, "reward_mean_ci_high": 1.5, "harmful_rate": 0.05,
         "margin_hardest": 0.5, "margin_mean": 1.0}


@pytest.fixture()
def setup(tmp_path, mlflow_server_uri):
    """A tracker, a parent run, a config with unique registered names, and the data a validate step leaves."""
    tag = uuid.uuid4().hex[:8]
    cfg = replace(PipelineConfig(), register=RegisterConfig(sft_name=f"sft-{tag}", policy_name=f"policy-{tag}"))
    tracker = MlflowTracker(mlflow_server_uri, experiment_name="test-lineage")
    loaded = load_canonical(DataConfig(n_prompts=6, responses_per_prompt=4), 0, tmp_path / "data")
    (raw, digest), = loaded.raw_files.items()
    raw = Path(raw)
    canonical = tmp_path / "canonical.parquet"
    loaded.table.to_parquet(canonical, index=False)
    validation = {"raw_files": {str(raw): digest}, "canonical_path": str(canonical),
                  "canonical_digest": table_digest(loaded.table), "counts": {"rows": float(len(loaded.table))},
                  "contract": {"success": True, "suites": {"canonical_rows": "2.0.0"}, "statistics": {"evaluated": 3}}}
    groups = {"groups_digest": "g" * 64, "groups_path": str(tmp_path / "groups.parquet"),
              "negatives_path": str(tmp_path / "negatives.parquet")}
    lineage = {"metaflow.pathspec": f"HPSFlow/{tag}", "git_commit": "abc123", "config_digest": "c" * 64,
               "canonical_digest": validation["canonical_digest"], "groups_digest": groups["groups_digest"],
               "contract_result": "passed", "contract_suites": "canonical_rows@2.0.0", "base_model": "tiny",
               "reward_model": "/models/rm"}
    return cfg, tracker, validation, groups, lineage, raw


def _register(setup, model_dir, hps_metrics, run_id=None, **cfg_changes):
    """One flow run's register step; each call is a new run unless ``run_id`` names one (a resume)."""
    cfg, tracker, validation, groups, lineage, _ = setup
    lineage = {**lineage, "metaflow.pathspec": f"HPSFlow/{run_id or uuid.uuid4().hex[:8]}"}
    cfg = replace(cfg, register=replace(cfg.register, **cfg_changes))
    parent = tracker.create_parent_run("test-parent", tags=lineage)
    ctx = StepContext(cfg, Path("."), tracker, parent, dict(lineage))
    out = register_models(ctx, str(model_dir), str(model_dir), {"sft": SFT, "hps": hps_metrics}, lineage,
                          validation=validation, groups=groups)
    tracker.finish_run(parent)
    return out


def test_first_version_champion_second_judged_against_it(setup, tiny_model_dir, mlflow_server_uri):
    """v1 clears the floors (margin 0.5 > 0, harm 0.05 <= 0.2) -> champion. v2 has margin 0.4 < 0.5 ->
    rejected: challenger moves to v2, champion stays on v1, and v2's tags/description say why."""
    cfg, tracker, *_ = setup
    name = cfg.register.policy_name
    first = _register(setup, tiny_model_dir, HPS_1)
    assert first["hps"] == f"models:/{name}/1"
    second = _register(setup, tiny_model_dir, {**HPS_1, "margin_hardest": 0.4})
    assert second["hps"] == f"models:/{name}/2"
    reader = MlflowReader(mlflow_server_uri)
    v1, v2 = reader.model_version(f"models:/{name}/1"), reader.model_version(f"models:/{name}@challenger")
    assert v1["aliases"] == ["champion"] and v2["version"] == 2 and v2["aliases"] == ["challenger"]
    assert v1["tags"]["gate.decision"] == "promoted" and v1["tags"]["gate.judged_against"] == "none (first version)"
    assert v2["tags"]["gate.decision"] == "rejected" and v2["tags"]["gate.judged_against"] == f"models:/{name}/1"
    assert "margin_hardest > champion: FAIL (0.4 > 0.5)" in v2["tags"]["gate.reasons"]
    assert "**Promotion gate: rejected**" in v2["description"]
    assert "| margin_hardest | 0.4000 | [nan, nan] | 0.5000 | -0.1000 |" in v2["description"]
    assert v2["tags"]["parent_version"] == f"models:/{cfg.register.sft_name}/2"
    assert v2["tags"]["method"] == "dpo-hps" and v2["tags"]["metric.margin_hardest"] == "0.4"

    third = _register(setup, tiny_model_dir, {**HPS_1, "margin_hardest": 0.75, "reward_mean": 0.95})
    v3 = reader.model_version(third["hps"])  # 0.75 > 0.5 and 0.95 >= 1.0 - 0.1 -> promoted
    assert v3["aliases"] == ["challenger", "champion"] and v3["tags"]["gate.decision"] == "promoted"


def test_a_resumed_register_step_does_not_register_twice(setup, tiny_model_dir, mlflow_server_uri):
    """The register step of run R failed after its models were registered; `resume` runs it again with
    R's lineage (start is cloned): it finds R's versions instead of making a second pair."""
    cfg, *_ = setup
    first = _register(setup, tiny_model_dir, HPS_1, run_id="R")
    again = _register(setup, tiny_model_dir, HPS_1, run_id="R")
    assert again == first == {"sft": f"models:/{cfg.register.sft_name}/1", "hps": f"models:/{cfg.register.policy_name}/1",
                              "alias": f"models:/{cfg.register.policy_name}@challenger"}
    client = MlflowClient(mlflow_server_uri, registry_uri=mlflow_server_uri)
    for name in (cfg.register.sft_name, cfg.register.policy_name):
        assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert _register(setup, tiny_model_dir, HPS_1)["hps"] == f"models:/{cfg.register.policy_name}/2"  # a new run


def test_lineage_walk_lists_every_link_and_verify_catches_a_flipped_byte(setup, tiny_model_dir, mlflow_server_uri,
                                                                        capsys):
    cfg, _, validation, _, lineage, raw = setup
    out = _register(setup, tiny_model_dir, HPS_1)
    chain = walk(MlflowReader(mlflow_server_uri), f"models:/{cfg.register.policy_name}@champion")
    assert chain["model_version"]["uri"] == out["hps"]
    assert chain["parent_version"]["uri"] == out["sft"]
    assert chain["raw_files"] == [{"path": str(raw), "sha256": file_sha256(raw), "bytes": raw.stat().st_size}]
    assert chain["canonical"]["sha256"] == validation["canonical_digest"]
    assert chain["validation"]["suites"] == {"canonical_rows": "2.0.0"} and chain["validation"]["result"] == "passed"
    assert chain["groups"]["digest"] == "g" * 64 and chain["code_version"] == "abc123"
    assert {d["name"] for d in chain["mlflow_run"]["datasets"]} == {"raw:generated_world.jsonl", "canonical"}
    assert chain["mlflow_run"]["n_params"] > 50  # the full resolved config
    # No Metaflow run behind this test's pathspec: those two links are "not checkable", all others hold.
    assert {k for k, v in chain["links"].items() if v is not True} == {"metaflow->mlflow_run", "metaflow->model_version"}
    assert [c["status"] for c in verify(chain)] == ["ok", "ok"]

    argv = [out["hps"], "--tracking-uri", mlflow_server_uri]
    capsys.readouterr()  # MLflow's own "View run" lines from the registration above
    assert lineage_main(argv + ["--json", "--verify"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["links"] == chain["links"] and [c["status"] for c in printed["verify"]] == ["ok", "ok"]

    data = bytearray(raw.read_bytes())
    data[0] ^= 1
    raw.write_bytes(bytes(data))
    assert lineage_main(argv + ["--verify"]) == 1
    captured = capsys.readouterr()
    assert f"MISMATCH {raw}" in captured.err and f"MISMATCH    {raw}" in captured.out


def test_failure_inside_register_leaves_aliases_untouched(setup, tiny_model_dir, tmp_path, mlflow_server_uri):
    """A champion exists; then (a) the HPS checkpoint cannot be registered (pickle weights) and (b) moving
    `champion` fails after `challenger` moved. Both raise, and both aliases still point at v1."""
    cfg, tracker, *_ = setup
    name = cfg.register.policy_name
    _register(setup, tiny_model_dir, HPS_1)
    bad = tmp_path / "pickled"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "pytorch_model.bin").write_bytes(b"\x80")
    c, t, v, g, lin, _ = setup
    ctx = StepContext(c, Path("."), t, t.create_parent_run("bad"), dict(lin))
    with pytest.raises(ValueError, match="safetensors only"):
        register_models(ctx, str(tiny_model_dir), str(bad), {"sft": SFT, "hps": {**HPS_1, "margin_hardest": 0.9}},
                        lin, validation=v, groups=g)

    real_set_alias = tracker.set_alias

    def fail_on_champion(n, alias, version):
        if alias == "champion":
            raise TrackingError("server went away")
        real_set_alias(n, alias, version)

    tracker.set_alias = fail_on_champion
    with pytest.raises(TrackingError, match="server went away"):
        _register(setup, tiny_model_dir, {**HPS_1, "margin_hardest": 0.9})
    reader = MlflowReader(mlflow_server_uri)
    assert reader.model_version(f"models:/{name}@champion")["version"] == 1
    assert reader.model_version(f"models:/{name}@challenger")["version"] == 1


def test_model_uri_forms():
    assert parse_model_uri("models:/hps-policy/3") == ("hps-policy", "version", "3")
    assert parse_model_uri("models:/hps-policy@champion") == ("hps-policy", "alias", "champion")
    for bad in ("hps-policy/3", "models:/hps-policy", "models:/hps-policy/latest", "runs:/abc/model"):
        with pytest.raises(ValueError, match="models:/<name>/<version>"):
            parse_model_uri(bad)


def test_unknown_version_is_a_clear_error(mlflow_server_uri, capsys):
    assert lineage_main(["models:/no-such-model/1", "--tracking-uri", mlflow_server_uri]) == 2
    assert "could not resolve models:/no-such-model/1" in capsys.readouterr().err


def test_the_walk_names_the_negatives_training_used():
    """With an expand step the grown groups' negatives were trained on, not build_groups' first draw."""
    from hps_core.registry.lineage_walk import _negatives_artifact

    built = "runs:/b/handoff/negatives/negatives.parquet"
    grown = "runs:/e/handoff/negatives/negatives.parquet"
    assert _negatives_artifact({"build_groups": [built]}) == built
    assert _negatives_artifact({"build_groups": [built], "expand": ["runs:/e/expansion/expanded.jsonl", grown]}) == grown
    assert _negatives_artifact({}) is None
