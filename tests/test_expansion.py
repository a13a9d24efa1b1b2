"""Response expansion on a tiny model: which prompts grow, how candidates are scored, shards, and that the
expanded file reads back through the scored-JSONL adapter and passes the data contracts."""

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.config.schema import EvaluateConfig, ModelConfig, PipelineConfig
from hps_core.recipes.expansion import (
    expand_groups,
    expansion_stats,
    groups_to_expand,
    merge_shards,
    shard_prompts,
    write_jsonl,
)


def test_shards_are_contiguous_and_cover_every_prompt():
    assert shard_prompts(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert shard_prompts(3, 8) == [(0, 1), (1, 2), (2, 3)]  # no empty shard
    assert shard_prompts(0, 4) == [(0, 0)]


@pytest.fixture(scope="module")
def tiny_dir(micro_model_dir):
    return micro_model_dir


def _table():
    rows = [("p1", "how do I bake bread?", "mix flour and water", 1.0, None, "human"),
            ("p2", "how do I boil an egg?", "put it in hot water", 1.0, False, "human"),
            ("p3", "what is rye?", "a grain", 1.0, None, "human"),
            ("p3", "what is rye?", "a fish", 0.0, None, "human")]
    return pd.DataFrame(rows, columns=["prompt_id", "prompt", "response", "score", "is_harmful", "label_source"])


def test_expansion_generates_scores_and_passes_the_contracts(tiny_dir, tmp_path):
    from data_contracts import enforce_contracts
    from hps_core.data import load_preferences
    from hps_core.models.reward import RewardScorer

    cfg = PipelineConfig(model=ModelConfig(max_prompt_tokens=24, max_length=64),
                         evaluate=EvaluateConfig(max_new_tokens=12, batch_size=2))
    groups = groups_to_expand(_table(), k=2)
    assert groups["expand"].tolist() == [True, True, False] and groups["have"].tolist() == [1, 1, 2]
    torch.manual_seed(0)  # the random reward head of a causal LM directory is initialised from the global RNG
    records = expand_groups(groups, tiny_dir, tiny_dir, cfg, k=2, seed=0)
    torch.manual_seed(0)
    again = expand_groups(groups, tiny_dir, tiny_dir, cfg, k=2, seed=0)
    assert records == again  # seeded: the same candidates and scores

    p1, p2, p3 = records
    assert [len(r["responses"]) for r in records] == [2, 2, 2]
    assert p1["responses"][0] == "mix flour and water" and p1["responses"][1] not in ("", p1["responses"][0])
    assert "is_harmful" not in p1 and p2["is_harmful"] == [False, None]  # generated: unknown harm
    assert p3 == {"prompt": "what is rye?", "responses": ["a grain", "a fish"], "rewards": [1.0, 0.0],
                  "label_source": "human"}  # at k already: passes through with its own scores
    assert p1["label_source"] == p2["label_source"] == "rm" and p3["label_source"] == "human"
    # Every response of an expanded group carries the reward model's own score (one scale).
    torch.manual_seed(0)
    scorer = RewardScorer.load(tiny_dir, cfg.model, batch_size=2)
    expected = scorer.score([p1["prompt"]] * 2 + [p2["prompt"]] * 2, p1["responses"] + p2["responses"])
    assert np.allclose(p1["rewards"] + p2["rewards"], expected, atol=1e-5)
    assert expansion_stats(groups, records, 2) == {"prompts": 3.0, "prompts_expanded": 2.0, "responses_before": 4.0,
                                                   "responses_after": 6.0, "groups_at_k": 3.0, "responses_per_group_mean": 2.0}

    # Two shards written apart, merged in order, read back and checked like any input.
    merged = merge_shards([write_jsonl(records[:1], tmp_path / "s0.jsonl"), write_jsonl(records[1:], tmp_path / "s1.jsonl")],
                          tmp_path / "expanded.jsonl")
    table = load_preferences(merged, format="scored-jsonl")
    assert len(table) == 6 and table["prompt"].nunique() == 3
    table["split"] = "train"
    outcome = enforce_contracts(table, on_invalid="fail")
    assert outcome.report.success
