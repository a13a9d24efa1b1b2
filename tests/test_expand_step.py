"""hps_flow's expand step (``hps_core.recipes.hps.expand``) on a micro model: the prompts split three ways
(eval, reward-model only, policy), only the policy's training groups grow to K, every response of a grown
group carries the reward model's score, negatives are drawn again from the grown groups, the expanded
table goes through the data contracts (a violation stops the step before anything is handed on), and
``k = 0`` hands build_groups' result on untouched."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.recipes import hps as pipeline
from hps_core.config.schema import PipelineConfig


def _source(path: Path, n: int = 40) -> Path:
    """n prompts of two responses each (a pairs dataset, like HH-RLHF)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"how do I bake loaf number {i}?",
                                "responses": [f"mix flour and water, then bake loaf {i}", f"no idea about loaf {i}"],
                                "rewards": [1.0, 0.0], "label_source": "human"}) + "\n")
    return path


def _config(source: Path, k: int, **data) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "data": {"source": str(source), "format": "scored-jsonl", "eval_fraction": 0.2, "reward_fraction": 0.3, **data},
        "model": {"max_prompt_tokens": 24, "max_length": 40},
        "hps": {"method": "dpo-hps", "epochs": 2},
        "evaluate": {"batch_size": 8},
        "expand": {"k": k, "max_new_tokens": 8, "batch_size": 4},
    })


def _ready(tmp_path, k, **data):
    ctx = pipeline.StepContext(_config(_source(tmp_path / "pairs.jsonl"), k, **data), tmp_path / "run")
    validation = pipeline.validate(ctx)
    table = pd.read_parquet(validation["canonical_path"])
    return ctx, validation, table


def test_three_way_split_and_expansion_to_k(tmp_path, micro_model_dir):
    ctx, validation, table = _ready(tmp_path, k=4)
    splits = table.groupby("prompt_id")["split"].first().value_counts().to_dict()
    assert set(splits) == {"train", "eval", "reward"} and sum(splits.values()) == 40
    groups = {"groups": validation["canonical_path"], "negatives": "unused", "groups_digest": "before", "base": micro_model_dir}
    torch.manual_seed(0)  # the micro model's random score head is drawn from the global RNG when loaded
    out = pipeline.expand(ctx, validation["canonical"], groups, micro_model_dir, micro_model_dir)

    assert out["expanded"] and out["base"] == micro_model_dir and out["groups_digest"] != "before"
    grown = pd.read_parquet(out["groups_path"])
    by_split = {s: g for s, g in grown.groupby("split")}
    assert len(by_split["train"]) == splits["train"]
    # Every training group grew (up to 4: empty or repeated samples are dropped); the others are as read.
    assert (by_split["train"]["n"] > 2).all() and (by_split["train"]["n"] <= 4).all()
    for split in ("eval", "reward"):
        assert (by_split[split]["n"] == 2).all() and all(list(s) == [1.0, 0.0] for s in by_split[split]["scores"])
    expanded = pd.read_parquet(out["expanded_path"])
    assert set(expanded.loc[expanded["split"] == "train", "label_source"]) == {"rm"}
    assert set(expanded.loc[expanded["split"] != "train", "label_source"]) == {"human"}

    # One scale: the human-written responses of a grown group were rescored by the reward model too.
    from hps_core.models.reward import RewardScorer

    torch.manual_seed(0)
    scorer = RewardScorer.load(micro_model_dir, ctx.cfg.model, batch_size=8)
    row = by_split["train"].iloc[0]
    assert np.allclose(sorted(row["scores"], reverse=True), row["scores"])
    assert np.allclose(scorer.score([row["prompt"]] * row["n"], list(row["responses"])), row["scores"], atol=1e-5)

    # Negatives again, from the grown groups: two epochs, one per training group each, never the best response.
    negatives = pd.read_parquet(out["negatives_path"])
    assert len(negatives) == 2 * splits["train"]
    assert set(negatives["prompt_id"]) == set(by_split["train"]["prompt_id"])
    ids = dict(zip(grown["prompt_id"], grown["response_ids"]))
    assert all(neg in ids[pid][1:] for pid, neg in zip(negatives["prompt_id"], negatives["negative_id"]))
    assert (negatives["n_dispreferred"] > 1).all()
    assert "Data contracts passed" in out["report_markdown"]


def test_reward_model_trains_only_on_its_own_prompts():
    from hps_core.train.reward import reward_model_split

    groups = pd.DataFrame({"split": ["train", "eval", "reward"]})
    assert reward_model_split(groups) == "reward"
    assert reward_model_split(groups[groups["split"] != "reward"]) == "train"  # reward_fraction = 0: as before


def test_k_zero_is_not_the_recipes_to_expand(tmp_path):
    """k = 0 passes through in the flow's step (tests/test_flow_run.py's default run); the recipe refuses it
    rather than keep a second copy of the pass-through."""
    ctx = pipeline.StepContext(_config(tmp_path / "unused.jsonl", k=0), tmp_path / "run")
    groups = {"groups": "g", "negatives": "n", "groups_digest": "d"}
    with pytest.raises(ValueError, match="k = 0 means no expansion"):
        pipeline.expand(ctx, "canonical", groups, "sft", "rm")
    assert not (tmp_path / "run" / "expansion").exists()


def test_a_contract_violation_in_the_expanded_data_stops_the_step(tmp_path, micro_model_dir, monkeypatch):
    from data_contracts import ContractViolation
    from hps_core.recipes import expansion as expansion

    ctx, validation, _ = _ready(tmp_path, k=3, max_response_chars=300)
    real = expansion.expand_groups

    def runaway(*args, **kwargs):  # a generator that rambles past the contract's response bound
        records = real(*args, **kwargs)
        records[0]["responses"].append("blah " * 100)
        records[0]["rewards"].append(0.5)
        return records

    monkeypatch.setattr(expansion, "expand_groups", runaway)
    groups = {"groups": validation["canonical_path"], "negatives": "n", "groups_digest": "d"}
    with pytest.raises(ContractViolation, match="max_response|response"):
        pipeline.expand(ctx, validation["canonical"], groups, micro_model_dir, micro_model_dir)
    report = (tmp_path / "run" / "contracts_expanded" / "validation_report.md").read_text()
    assert "FAILED" in report
    assert not (tmp_path / "run" / "expansion" / "groups.parquet").exists()  # nothing handed on
