"""Metrics of the evaluation with hand-computed expectations (HPS_METHOD.md section 7)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.evaluate.bleu import (
    bleu_from_statistics,
    bleu_statistics,
    char_sentence_bleu,
    corpus_bleu,
    corpus_bleu_with_ci,
)
from hps_core.evaluate.metrics import (
    bootstrap_ci,
    check_margins_match,
    implicit_margins,
    safety_prompts,
    score_generations,
    summarise,
)
from hps_core.evaluate.generation import policy_seed
from hps_core.evaluate.harm_judge import (
    ClassifierHarmJudge,
    RewardThresholdHarmJudge,
    RuleHarmJudge,
    harmful_label_index,
    make_harm_judge,
)


# --- bootstrap ---------------------------------------------------------------------------------------

def test_bootstrap_of_constant_values_is_the_constant():
    """Every resample of [2, 2, 2] has mean 2, so both bounds are 2."""
    assert bootstrap_ci([2.0, 2.0, 2.0], n_boot=200, seed=0) == (2.0, 2.0)


def test_bootstrap_of_two_points_spans_both():
    """Resamples of [0, 1] have mean 0, 0.5 or 1 with probability 1/4, 1/2, 1/4. The 2.5 % and 97.5 %
    quantiles fall inside the 25 % masses at the ends, so the interval is [0, 1] (with 1000 draws, the
    chance that fewer than 2.5 % are all-zero is ~1e-60)."""
    assert bootstrap_ci([0.0, 1.0], n_boot=1000, seed=3) == (0.0, 1.0)


def test_bootstrap_matches_the_normal_approximation():
    """400 values, half ones: the mean of a resample has sd sqrt(0.25 / 400) = 0.025, so the 95 % interval
    is about 0.5 -+ 1.96 * 0.025 = [0.451, 0.549]; allow 0.01 for resampling noise."""
    low, high = bootstrap_ci([0.0, 1.0] * 200, n_boot=4000, seed=0)
    assert abs(low - 0.451) < 0.01 and abs(high - 0.549) < 0.01


def test_bootstrap_is_seeded_and_empty_is_nan():
    values = np.arange(10.0)
    assert bootstrap_ci(values, seed=5) == bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, seed=5) != bootstrap_ci(values, seed=6)
    low, high = bootstrap_ci([], seed=0)
    assert math.isnan(low) and math.isnan(high)


def test_summarise_names_value_interval_and_count():
    """mean of [1, 2, 3, 6] = 3; four prompts."""
    out = summarise("reward_mean", [1.0, 2.0, 3.0, 6.0], n_boot=200, seed=0)
    assert out["reward_mean"] == 3.0 and out["reward_mean_n"] == 4.0
    assert 1.0 <= out["reward_mean_ci_low"] <= 3.0 <= out["reward_mean_ci_high"] <= 6.0
    assert set(out) == {"reward_mean", "reward_mean_ci_low", "reward_mean_ci_high", "reward_mean_n"}


# --- BLEU --------------------------------------------------------------------------------------------

def test_char_bleu_hand_values():
    """'abcde' vs 'abcdf': character n-gram precisions 4/5, 3/4, 2/3, 1/2, equal lengths (BP = 1):
    (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 0.2 ** 0.25 = 0.668740.
    'abcd' vs 'abcdef': all precisions 1, BP = exp(1 - 6/4) = exp(-0.5) = 0.606531.
    Surrounding spaces are stripped (as the reference code does); nothing in common -> 0."""
    assert char_sentence_bleu("abcde", "abcdf") == pytest.approx(0.2 ** 0.25, rel=1e-12)
    assert char_sentence_bleu("  abcd ", "abcdef") == pytest.approx(math.exp(-0.5), rel=1e-12)
    assert char_sentence_bleu("xyz", "abc") == 0.0
    assert char_sentence_bleu("", "abc") == 0.0
    assert char_sentence_bleu("same text", "same text") == pytest.approx(1.0)


def test_char_bleu_zero_four_gram_precision_is_nltk_tiny_not_zero():
    """'abcd' vs 'abce': 3/4, 2/3, 1/2, 0/1. nltk's method0 replaces the zero by sys.float_info.min,
    so the score is 0.25**(1/4) * (2.2e-308)**(1/4) ~ 1e-77: positive, yet negligible."""
    score = char_sentence_bleu("abcd", "abce")
    assert 0.0 < score < 1e-70


def test_corpus_bleu_hand_value_and_statistics():
    """Sentence 1 'a b c d e' vs 'a b c d f': correct 4,3,2,1 of 5,4,3,2. Sentence 2 'x y z w' identical:
    4,3,2,1 of 4,3,2,1. Corpus: 8/9, 6/7, 4/5, 2/3, lengths 9 = 9 (BP 1):
    100 * (8/9 * 6/7 * 4/5 * 2/3) ** 0.25 = 100 * (0.406349) ** 0.25 = 79.840.
    (The mean of the two sentence BLEUs, (66.874 + 100) / 2 = 83.4, is a different number.)"""
    hyps, refs = ["a b c d e", "x y z w"], ["a b c d f", "x y z w"]
    expected = 100 * (8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, rel=1e-9)
    stats = bleu_statistics(hyps, refs)
    assert stats.tolist() == [[5, 5, 4, 3, 2, 1, 5, 4, 3, 2], [4, 4, 4, 3, 2, 1, 4, 3, 2, 1]]
    assert bleu_from_statistics(stats.sum(axis=0)) == pytest.approx(expected, rel=1e-9)
    assert bleu_from_statistics(stats[0]) == pytest.approx(100 * 0.2 ** 0.25, rel=1e-9)


def test_corpus_bleu_interval_resamples_prompts():
    """Resamples of the two sentences are {1,1}, {1,2}, {2,2} with probability 1/4, 1/2, 1/4: BLEU 66.874,
    79.840, 100. The 2.5 % and 97.5 % quantiles land in the end masses: [66.874, 100]."""
    out = corpus_bleu_with_ci(["a b c d e", "x y z w"], ["a b c d f", "x y z w"], n_boot=1000, seed=0)
    assert out["bleu_n"] == 2
    assert out["bleu_ci_low"] == pytest.approx(100 * 0.2 ** 0.25) and out["bleu_ci_high"] == pytest.approx(100.0)


# --- score_generations -------------------------------------------------------------------------------

class _QJudge:
    name = "q-judge"

    def flag(self, prompts, responses, rewards=None):
        return ["q" in r for r in responses]


def _score(**kw):
    return score_generations(
        "hps", ["p1", "p2"], ["prompt one", "prompt two"], [["abcde", "xy"], ["q", "abcd"]],
        lambda prompts, texts: [float(len(t)) for t in texts], _QJudge(),
        references=["abcdf", "abcdef"], n_boot=200, seed=0, **kw,
    )


def test_score_generations_hand_values():
    """reward = len(text): p1 [5, 2] (mean 3.5, best 5, best-of-k 'abcde'), p2 [1, 4] (mean 2.5, best 4,
    best-of-k 'abcd'). reward_mean = (3.5 + 2.5) / 2 = 3.0; reward_best_of_k = (5 + 4) / 2 = 4.5.
    The judge flags 'q': p1 0/2, p2 1/2 -> harmful_rate over both prompts = 0.25, over the safety prompt p2
    only = 0.5. bleu_char: p1 'abcde' vs 'abcdf' = 0.2 ** 0.25, p2 'abcd' vs 'abcdef' = exp(-0.5); mean
    0.637635. bleu = corpus BLEU of the best-of-k texts."""
    res = _score()
    m = res.metrics
    assert m["reward_mean"] == 3.0 and m["reward_best_of_k"] == 4.5
    assert m["harmful_rate"] == 0.25 and m["harmful_rate_n"] == 2
    assert m["bleu_char"] == pytest.approx((0.2 ** 0.25 + math.exp(-0.5)) / 2, rel=1e-12)
    assert m["bleu"] == pytest.approx(corpus_bleu(["abcde", "abcd"], ["abcdf", "abcdef"]))
    assert res.table.loc[res.table["is_best_of_k"], "generation"].tolist() == ["abcde", "abcd"]
    assert res.table["harmful"].tolist() == [False, False, True, False]
    assert "win_rate_vs_sft" not in m
    safety = _score(safety_prompts=[False, True]).metrics
    assert safety["harmful_rate"] == 0.5 and safety["harmful_rate_n"] == 1


def test_win_rate_counts_strict_wins_only():
    """Mean rewards p1 3.5, p2 2.5. Against SFT {p1: 3.0, p2: 3.0}: p1 wins, p2 loses -> 0.5. Against
    {p1: 3.5, p2: 2.0}: p1 ties (not a win), p2 wins -> 0.5. Against {p1: 3.5, p2: 2.5}: two ties -> 0."""
    assert _score(sft_reward_per_prompt=pd.Series({"p1": 3.0, "p2": 3.0})).metrics["win_rate_vs_sft"] == 0.5
    assert _score(sft_reward_per_prompt=pd.Series({"p2": 2.0, "p1": 3.5})).metrics["win_rate_vs_sft"] == 0.5
    out = _score(sft_reward_per_prompt=pd.Series({"p1": 3.5, "p2": 2.5})).metrics
    assert out["win_rate_vs_sft"] == 0.0 and out["win_rate_vs_sft_n"] == 2
    with pytest.raises(ValueError, match="no SFT generation"):
        _score(sft_reward_per_prompt=pd.Series({"p1": 3.0}))


def test_safety_prompts_from_harm_labels():
    """A group is a safety prompt when one of its responses is labelled harmful; no labels at all -> None."""
    groups = pd.DataFrame({"is_harmful": [[False, True], [False, False]]})
    assert safety_prompts(groups) == [True, False]
    assert safety_prompts(pd.DataFrame({"is_harmful": [[None, None], [None, None]]})) is None


# --- implicit margins --------------------------------------------------------------------------------

def _groups():
    return pd.DataFrame({
        "prompt_id": ["A", "B"], "n": [3, 2], "response_ids": [["a0", "a1", "a2"], ["b0", "b1"]],
        "responses": [["x", "y", "z"], ["u", "v"]], "scores": [[3.0, 2.0, 1.0], [2.0, 1.0]],
        "is_harmful": [[False, True, False], [None, None]],
    })


def test_implicit_margins_hand_values():
    """beta = 0.5. Group A: policy [-1, -3, -2], reference [-2, -2, -2] -> r = 0.5 * [1, -1, 0] =
    [0.5, -0.5, 0]: margin_hardest = 0.5 - 0 = 0.5, margin_mean = 0.5 - (-0.25) = 0.75, ranked first: 1.
    Group B: policy [-4, -1], reference [-2, -2] -> r = [-1, 0.5]: hardest = mean = -1.5, ranked: 0.
    Means over groups: margin_hardest -0.5, margin_mean -0.375, ranking_accuracy 0.5.
    margin_top_scored (over the rank-1 response): A 0.5 - (-0.5) = 1.0, B -1.5; mean -0.25."""
    table, m = implicit_margins(_groups(), np.array([-1.0, -3, -2, -4, -1]), np.full(5, -2.0), 0.5, n_boot=200, seed=0)
    assert m["margin_hardest"] == pytest.approx(-0.5) and m["margin_mean"] == pytest.approx(-0.375)
    assert m["ranking_accuracy"] == 0.5 and m["margin_hardest_n"] == 2
    assert m["margin_top_scored"] == pytest.approx(-0.25)
    assert table["implicit_reward"].tolist() == pytest.approx([0.5, -0.5, 0.0, -1.0, 0.5])
    assert table["response_id"].tolist() == ["a0", "a1", "a2", "b0", "b1"]
    assert check_margins_match(table, {f"hps/{k}": v for k, v in m.items()}) == 4


def test_ranking_accuracy_tie_is_not_a_win():
    """r = [0, 0] (policy == reference): the preferred response does not beat the dispreferred one."""
    groups = _groups().iloc[[1]].reset_index(drop=True)
    _, m = implicit_margins(groups, np.array([-2.0, -2.0]), np.array([-2.0, -2.0]), 0.1, n_boot=50, seed=0)
    assert m["ranking_accuracy"] == 0.0 and m["margin_hardest"] == 0.0


def test_check_margins_match_reports_mismatch_and_missing():
    table, m = implicit_margins(_groups(), np.array([-1.0, -3, -2, -4, -1]), np.full(5, -2.0), 0.5, n_boot=50, seed=0)
    logged = {f"hps/{k}": v for k, v in m.items()}
    with pytest.raises(AssertionError, match=r"hps/margin_mean: logged 0.0"):
        check_margins_match(table, {**logged, "hps/margin_mean": 0.0})
    with pytest.raises(AssertionError, match="hps/ranking_accuracy: not logged"):
        check_margins_match(table, {k: v for k, v in logged.items() if k != "hps/ranking_accuracy"})
    with pytest.raises(ValueError, match="expected 5 log-probs"):
        implicit_margins(_groups(), np.zeros(4), np.zeros(4), 0.5, n_boot=10, seed=0)


# --- seeds and generation ----------------------------------------------------------------------------

def test_policy_seed_is_stable_and_distinct():
    assert policy_seed(0, "", "sft") == policy_seed(0, "", "sft")
    assert len({policy_seed(0, "", "sft"), policy_seed(0, "", "hps"), policy_seed(1, "", "sft"), policy_seed(0, "x", "sft")}) == 4
    assert 0 <= policy_seed(123, "a", "b") < 2 ** 63


def test_generation_is_reproducible_and_leaves_the_global_rng_alone(tmp_path):
    """Same seed -> same texts, whatever ran before; the caller's torch RNG stream is not consumed."""
    from hps_core.config.schema import EvaluateConfig, ModelConfig, TinyModelConfig
    from hps_core.evaluate.generation import generate
    from hps_core.models.loading import build_tiny_model, load_causal_lm

    tiny = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    path = build_tiny_model(["User: hello there\nAssistant: hi, how are you today?"] * 4, tiny, cache_dir=tmp_path)
    model, tok = load_causal_lm(str(path), device=torch.device("cpu"))
    mcfg, ecfg = ModelConfig(max_prompt_tokens=16, max_length=40), EvaluateConfig(samples_per_prompt=3, max_new_tokens=8, batch_size=2)
    prompts = ["hello", "hello there", "hi"]
    first = generate(model, tok, prompts, mcfg, ecfg, seed=7, desc="t")
    torch.manual_seed(99)
    expected_next = torch.rand(3)
    torch.manual_seed(99)
    generate(model, tok, prompts, mcfg, ecfg, seed=8, desc="t")
    assert torch.equal(torch.rand(3), expected_next)
    assert generate(model, tok, prompts, mcfg, ecfg, seed=7, desc="t") == first
    assert len(first) == 3 and all(len(samples) == 3 for samples in first)


# --- harm judges -------------------------------------------------------------------------------------

def test_reward_threshold_judge():
    """Harmful when reward < 0.5: [0.4, 0.5, 0.6] -> [True, False, False]."""
    judge = make_harm_judge("reward_threshold:0.5")
    assert isinstance(judge, RewardThresholdHarmJudge) and judge.name == "reward_threshold:0.5"
    assert judge.flag(["p"] * 3, ["a", "b", "c"], [0.4, 0.5, 0.6]) == [True, False, False]
    with pytest.raises(ValueError, match="one reward per response"):
        judge.flag(["p"], ["a"], None)


def test_rule_judge_through_the_shared_interface():
    judge = make_harm_judge("rule")
    assert isinstance(judge, RuleHarmJudge)
    assert judge.flag(["p", "p"], ["I can't help with that.", "ok"], None) == [False, False]


def test_harmful_label_detection():
    assert harmful_label_index({0: "SAFE", 1: "UNSAFE"}) == 1
    assert harmful_label_index({"0": "not_toxic", "1": "toxic"}) == 1
    assert harmful_label_index({0: "LABEL_0", 1: "LABEL_1"}, "label_1") == 1
    with pytest.raises(ValueError, match="set evaluate.harm_label"):
        harmful_label_index({0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ValueError, match="no label named 'bad'"):
        harmful_label_index({0: "ok", 1: "harmful"}, "bad")


def test_classifier_judge_flags_by_the_harmful_label(tmp_path):
    """A classifier whose head ignores the text (zero weights) and has bias [0, 5] always predicts label 1:
    every text is flagged when label 1 is the harmful one, none when label 0 is."""
    from hps_core.config.schema import TinyModelConfig
    from hps_core.models.loading import build_tiny_model, load_reward_model

    tiny = TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    path = build_tiny_model(["some text to train a tokenizer on"] * 4, tiny, cache_dir=tmp_path)
    model, tok = load_reward_model(str(path), num_labels=2, device=torch.device("cpu"))
    head = torch.nn.Linear(model.config.hidden_size, 2, bias=True)
    torch.nn.init.zeros_(head.weight)
    head.bias.data = torch.tensor([0.0, 5.0])
    model.score = head
    texts = ["some text", "a much longer text to train on some text to train on", "x"]
    assert ClassifierHarmJudge(model, tok, harmful_index=1, max_length=8).flag([""] * 3, texts) == [True] * 3
    judge = ClassifierHarmJudge(model, tok, harmful_index=0, max_length=8, batch_size=2)
    assert judge.flag([""] * 3, texts) == [False] * 3
    assert judge.truncated == 1  # only the long text exceeds 8 tokens
