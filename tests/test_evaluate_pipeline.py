"""The evaluate step on tiny models (no flow, no MLflow): what it logs, the per-example tables it writes,
and that the margins recomputed from the saved implicit-rewards table equal the logged ones.

Models: a randomly initialised tiny Llama as SFT (the reference), a seeded perturbation of it as "HPS", and
a sequence-classification head on it as reward model: the numbers mean nothing, the bookkeeping is exact.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.config.schema import PipelineConfig
from hps_core.data import load_canonical
from hps_core.config.metric_names import MARGIN_METRICS, POLICY_METRICS
from hps_core.evaluate.metrics import check_margins_match
from hps_core.evaluate.report import run_evaluation
from hps_core.sampling.groups import build_groups
from hps_core.tracking.step_context import StepContext
from hps_core.tracking.null import NullTracker

TINY = {"vocab_size": 400, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128}


class RecordingTracker(NullTracker):
    """NullTracker that keeps what the evaluate step logs."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, float] = {}
        self.params: dict = {}
        self.artifacts: list[tuple[str, str]] = []
        self.figures: list[str] = []
        self.texts: dict[str, str] = {}

    def log_metrics(self, run_id, metrics, step=None):
        self.metrics.update(metrics)

    def log_params(self, run_id, params):
        self.params.update(params)

    def log_artifact(self, run_id, path, artifact_path=None):
        self.artifacts.append((path, artifact_path))

    def log_figure(self, run_id, figure, artifact_file):
        self.figures.append(artifact_file)

    def log_text(self, run_id, text, artifact_file):
        self.texts[artifact_file] = text


def _config(extra_path: Path) -> PipelineConfig:
    return PipelineConfig.from_dict({
        "data": {"n_prompts": 40, "responses_per_prompt": 4, "eval_fraction": 0.25},
        "model": {"max_prompt_tokens": 32, "max_length": 64, "tiny": TINY},
        "evaluate": {"max_prompts": 5, "samples_per_prompt": 2, "max_new_tokens": 6, "batch_size": 8,
                     "bootstrap_samples": 100, "extra_sets": [{"name": "xfer", "path": str(extra_path), "all_safety_prompts": True}]},
    })


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from hps_core.models.loading import build_tiny_model, load_causal_lm, load_reward_model

    tmp = tmp_path_factory.mktemp("evaluate")
    extra = tmp / "xfer.jsonl"
    records = [{"prompt": f"how do I bake bread number {i}?", "responses": ["Mix flour and water.", "No.", "Bread is food."],
                "rewards": [3.0, 0.5, 1.0], "is_harmful": [False, False, False]} for i in range(4)]
    extra.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = _config(extra)
    table = load_canonical(cfg.data, cfg.run.seed, tmp / "data").table
    groups = build_groups(table)
    corpus = sorted(set(table["prompt"])) + sorted(set(table["response"]))
    sft_dir = build_tiny_model(corpus, cfg.model.tiny, seed=0, cache_dir=tmp / "cache")
    model, tok = load_causal_lm(str(sft_dir))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hps_dir = tmp / "hps"
    model.save_pretrained(hps_dir, safe_serialization=True)
    tok.save_pretrained(hps_dir)
    rm, rm_tok = load_reward_model(str(sft_dir), num_labels=1)
    rm_dir = tmp / "rm"
    rm.save_pretrained(rm_dir, safe_serialization=True)
    rm_tok.save_pretrained(rm_dir)

    tracker = RecordingTracker()
    ctx = StepContext(cfg, tmp / "run", tracker)
    result = run_evaluation(ctx, groups, str(sft_dir), str(hps_dir), str(rm_dir))
    return {"result": result, "tracker": tracker, "groups": groups, "cfg": cfg, "ctx": ctx}


def test_every_metric_logged_with_interval_and_count(evaluated):
    """Every metric of HPS_METHOD.md section 7 for SFT and HPS, with _ci_low <= value <= _ci_high and _n;
    SFT has no margins (its own reference) and no win rate against itself; the extra set is prefixed."""
    logged = evaluated["tracker"].metrics
    for prefix in ("", "xfer/"):
        for policy in ("sft", "hps"):
            for metric in POLICY_METRICS:
                key = f"{prefix}{policy}/{metric}"
                if policy == "sft" and metric in (*MARGIN_METRICS, "win_rate_vs_sft"):
                    assert key not in logged
                    continue
                for suffix in ("", "_ci_low", "_ci_high", "_n"):
                    assert key + suffix in logged, key + suffix
                if metric == "harmful_rate" and logged[key + "_n"] == 0:
                    continue
                assert logged[key + "_ci_low"] - 1e-12 <= logged[key] <= logged[key + "_ci_high"] + 1e-12, key
    heldout = int((evaluated["groups"]["split"] == "eval").sum())
    assert logged["hps/margin_hardest_n"] == heldout
    assert logged["hps/reward_mean_n"] == min(5, heldout)
    assert logged["xfer/hps/margin_mean_n"] == 4
    assert logged["xfer/hps/harmful_rate_n"] == 4  # all_safety_prompts: every prompt, though none is labelled harmful
    assert logged["xfer/overlap_with_train_prompts"] == 0
    assert logged["reward_model/examples"] > 0 and "reward_model/truncated_responses" in logged
    assert evaluated["tracker"].params["harm_judge"] == "rule-v1"


def test_margins_recomputed_from_the_table_equal_the_logged_ones(evaluated):
    """check_margins_match recomputes r = beta * (logp_policy - logp_reference) from the saved parquet and the
    four margin metrics per (set, policy): 2 sets x 1 preference policy x 4 metrics = 8 values. A second,
    independent loop here recomputes margin_hardest of the held-out set."""
    path = evaluated["result"]["implicit_rewards_path"]
    assert check_margins_match(path, evaluated["tracker"].metrics) == 8
    table = pd.read_parquet(path)
    main = table[table["eval_set"] == ""]
    margins = []
    for _, g in main.groupby("prompt_id", sort=False):
        r = g.sort_values("rank")["beta"].to_numpy() * (g.sort_values("rank")["logp_policy"].to_numpy() - g.sort_values("rank")["logp_reference"].to_numpy())
        margins.append(r[0] - r[1:].max())
    assert np.isclose(np.mean(margins), evaluated["tracker"].metrics["hps/margin_hardest"], rtol=0, atol=1e-12)


def test_tampered_table_fails_the_margin_check(evaluated):
    """Changing one policy log-prob of a preferred response changes that group's margins: the check fails."""
    table = pd.read_parquet(evaluated["result"]["implicit_rewards_path"])
    row = table.index[(table["eval_set"] == "") & (table["rank"] == 0)][0]
    table.loc[row, "logp_policy"] += 5.0
    with pytest.raises(AssertionError, match="hps/margin_hardest"):
        check_margins_match(table, evaluated["tracker"].metrics)


def test_per_example_tables_are_complete(evaluated):
    """generations: one row per (set, policy, prompt, sample) with reward, judge label, seed, reference and
    the best-of-k marker; implicit rewards: every held-out response of every set, with both log-probs."""
    res, groups = evaluated["result"], evaluated["groups"]
    gens = pd.read_parquet(res["examples_path"])
    heldout = groups[groups["split"] == "eval"]
    assert len(gens) == 2 * 2 * (min(5, len(heldout)) + 4)  # policies x k x (held-out + extra prompts)
    for col in ("eval_set", "policy", "prompt_id", "prompt", "sample", "seed", "generation", "reward", "harmful",
                "is_best_of_k", "reference_response", "bleu_char", "safety_prompt"):
        assert col in gens.columns, col
    assert (gens.groupby(["eval_set", "policy", "prompt_id"])["is_best_of_k"].sum() == 1).all()
    assert gens.loc[~gens["is_best_of_k"], "bleu_char"].isna().all()
    assert gens.groupby(["eval_set", "policy"])["seed"].nunique().eq(1).all() and gens["seed"].nunique() == 4
    implicit = pd.read_parquet(res["implicit_rewards_path"])
    assert len(implicit) == int(heldout["n"].sum()) + 4 * 3
    assert set(implicit["policy"]) == {"hps"} and set(implicit["reference_policy"]) == {"sft"}
    for col in ("response_id", "response", "score", "is_harmful", "logp_policy", "logp_reference", "implicit_reward"):
        assert col in implicit.columns, col
    comparison = pd.read_parquet(res["comparison_path"])
    assert set(comparison["eval_set"]) == {"", "xfer"}
    logged_paths = {Path(p).name for p, _ in evaluated["tracker"].artifacts}
    assert {"generations.parquet", "implicit_rewards.parquet", "comparison.parquet"} <= logged_paths
    assert {"eval/reward_hist.png", "eval/margin_hist.png", "eval/harmful_rate.png", "eval/xfer_reward_hist.png"} <= set(evaluated["tracker"].figures)
    assert all(Path(p).is_file() for p in res["figures"])


def test_report_says_sft_margins_are_zero_by_construction(evaluated):
    """The markdown names the SFT margins as zero by construction instead of printing a 0.000 result."""
    md = evaluated["result"]["comparison_markdown"]
    margin_row = next(line for line in md.splitlines() if line.startswith("| margin_hardest |"))
    sft_cell = margin_row.split("|")[2]
    assert "zero by construction" in sft_cell and "0.000" not in sft_cell
    assert "Eval set: xfer" in md and "Eval set: held-out" in md
    assert evaluated["tracker"].texts["eval/comparison.md"] == md
