"""Method comparison: method entries, the [compare] config, group subsampling, step times, aggregation over
seeds (checked against hand-computed t intervals) and the markdown table with its claims check."""

import math

import numpy as np
import pandas as pd
import pytest

from hps_core.evaluate.comparison import aggregate, claims_check, markdown_table, mean_ci
from hps_core.recipes.compare import StepTimes, branch_config, plan_runs, subsample_groups
from hps_core.config.compare_spec import parse_method_spec
from hps_core.config.building import ConfigError
from hps_core.config.schema import PipelineConfig


def test_method_entries_parse_with_their_bt_rule():
    spec = parse_method_spec("dpo-bt:max_min")
    assert (spec.method, spec.bt_rule, spec.negative_rule, spec.label, spec.slug) == (
        "dpo-bt", "max_min", "max_min", "dpo-bt (max_min)", "dpo-bt-max_min")
    assert parse_method_spec("dpo-bt").bt_rule == "random"  # the rule a bare bt method gets
    assert parse_method_spec("ipo-hps").negative_rule == "hps"
    assert parse_method_spec("DPO-PL").negative_rule is None  # PL trains on the whole group
    with pytest.raises(ValueError, match="unknown hardness 'max_min'; valid: score, policy, mix"):
        parse_method_spec("dpo-hps:max_min")
    with pytest.raises(ValueError, match="unknown bt negative rule 'hardest'"):
        parse_method_spec("dpo-bt:hardest")
    with pytest.raises(ValueError, match="pl uses every response"):
        parse_method_spec("dpo-pl:random")


def test_hps_entries_carry_hardness_and_overrides():
    """"dpo-hps:mix@gamma=1,gamma_r=10" -> hardness mix with gamma 1.0 and gamma_r 10.0 over the base [hps];
    a bt entry in the same comparison keeps score hardness whatever the base says; overrides are typed
    and limited to the hardness keys."""
    spec = parse_method_spec("dpo-hps:mix@gamma=1,gamma_r=10")
    assert (spec.hardness, spec.overrides, spec.label) == ("mix", (("gamma", 1.0), ("gamma_r", 10.0)),
                                                           "dpo-hps (mix, gamma=1.0, gamma_r=10.0)")
    cfg = PipelineConfig.from_dict({"hps": {"hardness": "policy"}, "compare": {"methods": ["dpo-bt", spec.entry]}})
    hps = spec.apply_to(cfg.hps)
    assert (hps.hardness, hps.gamma, hps.gamma_r, hps.method) == ("mix", 1.0, 10.0, "dpo-hps")
    assert parse_method_spec("dpo-bt").apply_to(cfg.hps).hardness == "score"
    with pytest.raises(ValueError, match="'beta=2' is not '<key>=<value>' with a key among"):
        parse_method_spec("dpo-hps@beta=2")
    with pytest.raises(ValueError, match="refresh_every = 'x' is not a int"):
        parse_method_spec("dpo-hps:policy@refresh_every=x")
    with pytest.raises(ConfigError, match="estimator = 'unbiased' is the gradient of the exact HPS loss"):
        PipelineConfig.from_dict({"compare": {"methods": ["ipo-hps@estimator=unbiased"]}})


def test_compare_section_is_checked_at_start_up():
    cfg = PipelineConfig.from_dict({"compare": {"methods": ["dpo-bt:random", "dpo-hps"], "seeds": [3, 4], "group_sizes": [2, 0]}})
    assert cfg.compare.methods == ("dpo-bt:random", "dpo-hps") and cfg.compare.seeds == (3, 4)
    for bad, match in ((["dpo-hps", "dpo-hps"], "names a method twice"), (["dpo-xx"], r"compare.methods\[0\]")):
        with pytest.raises(ConfigError, match=match):
            PipelineConfig.from_dict({"compare": {"methods": bad}})
    with pytest.raises(ConfigError, match="group_sizes"):
        PipelineConfig.from_dict({"compare": {"group_sizes": [1]}})
    with pytest.raises(ConfigError, match=r"compare.seeds\[1\] = 'a' has the wrong type"):
        PipelineConfig.from_dict({"compare": {"seeds": [0, "a"]}})


def test_branches_change_method_rule_and_seed_only():
    cfg = PipelineConfig.from_dict({"compare": {"methods": ["dpo-bt:max_min", "dpo-hps"], "seeds": [0, 1], "group_sizes": [4]}})
    runs = plan_runs(cfg)
    assert [r["name"] for r in runs] == ["dpo-bt-max_min_n4_s0", "dpo-bt-max_min_n4_s1", "dpo-hps_n4_s0", "dpo-hps_n4_s1"]
    branch = branch_config(cfg, runs[1])
    assert (branch.hps.method, branch.hps.bt_negative_rule, branch.run.seed) == ("dpo-bt", "max_min", 1)
    assert branch.sft == cfg.sft and branch.hps.beta == cfg.hps.beta and branch.data == cfg.data


def _groups():
    return pd.DataFrame({
        "prompt_id": ["a", "b", "c"], "prompt": ["pa", "pb", "pc"], "split": ["train", "train", "eval"], "n": [5, 2, 5],
        "response_ids": [["a0", "a1", "a2", "a3", "a4"], ["b0", "b1"], ["c0", "c1", "c2", "c3", "c4"]],
        "responses": [["A0", "A1", "A2", "A3", "A4"], ["B0", "B1"], ["C0", "C1", "C2", "C3", "C4"]],
        "scores": [[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]],
        "is_harmful": [[False, True, False, False, False], [None, None], [False] * 5],
        "preferred_id": ["a0", "b0", "c0"], "dispreferred_ids": [["a1", "a2", "a3", "a4"], ["b1"], ["c1", "c2", "c3", "c4"]],
        "score_gap": [1.0, 1.0, 1.0], "n_top_ties": [0, 0, 0],
    })


def test_subsampled_groups_keep_the_best_and_stay_consistent():
    groups = _groups()
    sub = subsample_groups(groups, 3, seed=0)
    a = sub.iloc[0]
    assert a.n == 3 and a.response_ids[0] == "a0" and len(set(a.response_ids)) == 3
    k = [int(r[1]) for r in a.response_ids]  # indices kept, in rank order
    assert k == sorted(k) and a.responses == [f"A{i}" for i in k] and a.scores == [5.0 - i for i in k]
    assert a.dispreferred_ids == a.response_ids[1:] and a.score_gap == a.scores[0] - a.scores[1]
    assert list(a.is_harmful) == [i == 1 for i in k]
    assert sub.iloc[1].n == 2 and sub.iloc[2].n == 5  # small groups and held-out groups stay whole
    assert sub.equals(subsample_groups(groups, 3, seed=0))  # one fixed draw, shared by every method and seed
    assert subsample_groups(groups, 0, seed=0) is groups


def test_step_times_weigh_every_window_by_its_steps():
    seen = []
    times = StepTimes(lambda m, s: seen.append(s))
    times({"step_time_s": 0.2, "loss": 1.0}, 10)  # 10 steps at 0.2 s
    times({"step_time_s": 0.5}, 13)  # 3 steps at 0.5 s
    times({"hps/truncated": 0.0}, 13)  # a later log without a time
    assert times.mean_ms == pytest.approx(1000 * (10 * 0.2 + 3 * 0.5) / 13) and seen == [10, 13, 13]


def test_mean_ci_is_the_t_interval_over_seeds():
    # values 1, 2, 6: mean 3, sd = sqrt(((-2)^2 + (-1)^2 + 3^2) / 2) = sqrt(7), t(0.975, 2) = 4.302653
    mean, low, high = mean_ci([1.0, 2.0, 6.0])
    half = 4.302652729911275 * math.sqrt(7) / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - half, 3.0 + half), rel=1e-9)
    one = mean_ci([2.5])
    assert one[0] == 2.5 and math.isnan(one[1]) and math.isnan(one[2])
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # a failed metric does not poison the mean


def _per_seed():
    rows = []
    for label, method, margin, step in (("dpo-bt (random)", "dpo-bt", [0.2, 0.4], [100.0, 120.0]),
                                        ("dpo-pl", "dpo-pl", [0.3, 0.3], [400.0, 420.0]),
                                        ("dpo-hps", "dpo-hps", [0.5, 0.7], [105.0, 115.0])):
        for seed in (0, 1):
            rows.append({"label": label, "method": method, "bt_rule": "", "n": 8, "seed": seed, "bleu": 10.0 + seed,
                         "reward_mean": 1.0, "margin_hardest": margin[seed], "margin_mean": 2 * margin[seed],
                         "margin_top_scored": 3 * margin[seed],
                         "harmful_rate": 0.1, "win_rate_vs_sft": 0.8, "step_time_ms": step[seed],
                         "peak_memory_mb": 200.0 if method != "dpo-pl" else 600.0,
                         "sft_bleu": 5.0 + seed, "sft_reward_mean": -1.0, "sft_harmful_rate": 0.3})
    return pd.DataFrame(rows)


def test_aggregate_and_table_by_hand():
    agg = aggregate(_per_seed())
    row = agg[(agg["label"] == "dpo-hps") & (agg["metric"] == "margin_hardest")].iloc[0]
    half = 12.706204736174698 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)  # t(0.975, 1) = 12.7062
    assert (row["mean"], row.ci_low, row.ci_high, row.seeds) == pytest.approx((0.6, 0.6 - half, 0.6 + half, 2))
    sft = agg[(agg["label"] == "sft (reference)") & (agg["metric"] == "bleu")].iloc[0]
    assert sft["mean"] == pytest.approx(5.5) and sft.seeds == 2  # one SFT value per seed, not per method
    table = markdown_table(agg, 8).splitlines()
    assert table[0].startswith("| method | BLEU | reward | margin_hardest | margin_top_scored | margin_mean | harmful_rate | win rate vs SFT")
    assert [line.split(" | ")[0] for line in table[2:]] == ["| sft (reference)", "| dpo-bt (random)", "| dpo-pl", "| dpo-hps"]
    assert f"| dpo-hps | 10.5 [{10.5 - 12.7062 * np.std([10, 11], ddof=1) / np.sqrt(2):.1f}," in table[-1]
    assert "| — | — |" in table[2]  # SFT has no margins or cost


def test_claims_check_reads_the_table():
    lines = claims_check(aggregate(_per_seed()), 8)
    assert lines[0].startswith("- **margin_hardest up** (dpo-hps vs dpo-bt (random)): 0.600 vs 0.300 (+100 %")
    assert lines[0].endswith("direction holds, intervals overlap.")  # two seeds: wide t intervals
    assert lines[1].startswith("- **margin_top_scored up** (dpo-hps vs dpo-bt (random)): 1.800 vs 0.900 (+100 %")
    assert "reward kept" in lines[3] and lines[3].endswith("holds (HPS not lower).")
    assert lines[5].endswith("harmful_rate 0.100 vs 0.100 -> does not hold.")  # equal is not fewer
    assert lines[6] == "- **time per step like BT, not PL**: HPS/BT = 1.00x, PL/HPS = 3.73x -> holds."
    assert lines[7] == "- **peak memory like BT, not PL**: HPS/BT = 1.00x, PL/HPS = 3.00x -> holds."


def test_target_check_by_hand():
    """Three seeds, tight values. dpo-bt: margins 0.5 / 1.0, reward 2.0, 100 ms. 'A': margins 0.7 (+40 %) /
    1.5 (+50 %), intervals apart, reward 1.94 (-3 %, within 5 %), 140 ms (1.40x) -> meets. 'B' is A at
    160 ms (1.60x > 1.5x) -> misses. 'C': margin_hardest 0.55 (+10 % < 20 %) -> misses."""
    from hps_core.evaluate.comparison import target_check

    rows = []
    for label, mh, mt, reward, step in (("dpo-bt (random)", 0.5, 1.0, 2.0, 100.0), ("dpo-hps (A)", 0.7, 1.5, 1.94, 140.0),
                                        ("dpo-hps (B)", 0.7, 1.5, 1.94, 160.0), ("dpo-hps (C)", 0.55, 1.5, 2.0, 100.0)):
        for seed, d in enumerate((-0.01, 0.0, 0.01)):
            rows.append({"label": label, "method": label.split()[0], "bt_rule": "", "n": 8, "seed": seed, "bleu": 10.0,
                         "reward_mean": reward, "margin_hardest": mh + d, "margin_top_scored": mt + d, "margin_mean": 1.0,
                         "harmful_rate": 0.1, "win_rate_vs_sft": 0.8, "step_time_ms": step, "peak_memory_mb": 200.0,
                         "sft_bleu": 5.0, "sft_reward_mean": -1.0, "sft_harmful_rate": 0.3})
    lines = target_check(aggregate(pd.DataFrame(rows)), 8)
    assert lines[0] == ("- **dpo-hps (A)** vs dpo-bt (random): margin_hardest +40% (apart), margin_top_scored +50% (apart), "
                        "reward -3%, step time 1.40x -> MEETS the target.")
    assert lines[1].endswith("step time 1.60x -> misses the target.")
    assert lines[2].startswith("- **dpo-hps (C)** vs dpo-bt (random): margin_hardest +10% (apart)") and lines[2].endswith("misses the target.")


def test_report_names_the_measured_group_size_of_data_groups():
    from hps_core.evaluate.comparison import report_markdown

    per_seed = _per_seed().assign(n=0)
    sizes = {"0": {"train_groups": 50, "responses_per_train_group": 8.0}}
    assert report_markdown(aggregate(per_seed), per_seed, sizes).startswith("### n = 8 (groups as in the data): 2 seed(s) [0, 1]")
    sizes["0"]["responses_per_train_group"] = 7.64
    assert report_markdown(aggregate(per_seed), per_seed, sizes).startswith("### n = 7.6 on average (groups as in the data)")
