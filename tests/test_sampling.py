"""Tests for hps_core.sampling: q_gamma, the group split, negative selection and gamma schedules."""
import dataclasses
import math

import numpy as np
import pytest

from hps_core.sampling.hardness import (
    BT_RULES,
    REFERENCE_STAGES,
    SELECTION_RULES,
    GammaSchedule,
    count_top_ties,
    draw_index,
    draw_negative,
    policy_hardness_probs,
    hardness_probs,
    make_gamma_schedule,
    pick_negative,
    rank_group,
    select_negative,
)


# ---------------------------------------------------------------- hardness_probs
def test_hardness_probs_hand_values():
    """scores (0, 1, 2), gamma = ln 2: weights e^{gamma s} = 1, 2, 4, total 7 -> q = (1/7, 2/7, 4/7)."""
    np.testing.assert_allclose(hardness_probs([0.0, 1.0, 2.0], math.log(2)), [1 / 7, 2 / 7, 4 / 7], rtol=1e-12)


def test_hardness_probs_gamma_zero_is_uniform_and_negative_favours_easy():
    np.testing.assert_allclose(hardness_probs([3.0, -1.0, 10.0, 0.0], 0.0), [0.25] * 4)
    q = hardness_probs([0.0, 1.0, 2.0], -1.0)
    assert q[0] > q[1] > q[2]
    q = hardness_probs([0.0, 1.0, 2.0], 1.0)
    assert q[0] < q[1] < q[2]


def test_hardness_probs_stable_at_extreme_scores():
    """scores (1e4, -1e4, 1e4 - 1e-3), gamma 1e3: logits (1e7, -1e7, 1e7 - 1). After the max-shift
    q = (1, 0, e^-1) / (1 + e^-1) = (0.7310586, 0, 0.2689414); raw exp would overflow to inf/inf = nan."""
    q = hardness_probs([1e4, -1e4, 1e4 - 1e-3], 1e3)
    np.testing.assert_allclose(q, [1 / (1 + math.e ** -1), 0.0, math.e ** -1 / (1 + math.e ** -1)], rtol=1e-6)
    for scores in ([-1e4] * 3, [1e4] * 3):
        np.testing.assert_allclose(hardness_probs(scores, 1e3), [1 / 3] * 3)
    q = hardness_probs(np.linspace(-1e4, 1e4, 7), -1e3)
    assert np.all(np.isfinite(q)) and q[0] == pytest.approx(1.0) and q.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "scores, gamma, match",
    [([], 1.0, "at least 1"), ([1.0, float("nan")], 1.0, "finite"), ([1.0, float("inf")], 1.0, "finite"),
     ([1.0, 2.0], float("inf"), "gamma"), ([1.0, 2.0], float("nan"), "gamma"), ([[1.0, 2.0]], 1.0, "1-D")],
)
def test_hardness_probs_rejects_bad_input(scores, gamma, match):
    with pytest.raises(ValueError, match=match):
        hardness_probs(scores, gamma)


# ---------------------------------------------------------------- rank_group / ties
def test_rank_group_unique_top():
    assert rank_group([0.1, 0.9, 0.5]) == (1, [0, 2])
    assert count_top_ties([0.1, 0.9, 0.5]) == 0


def test_rank_group_ties_keep_the_tied_responses():
    """Top score 5 at positions 1 and 2: the earliest (1) is preferred, 2 stays a (maximally hard) negative."""
    assert rank_group([3.0, 5.0, 5.0, 1.0]) == (1, [0, 2, 3])
    assert count_top_ties([3.0, 5.0, 5.0, 1.0]) == 1
    assert rank_group([2.0, 2.0, 2.0]) == (0, [1, 2])
    assert count_top_ties([2.0, 2.0, 2.0]) == 2


@pytest.mark.parametrize("scores, match", [([1.0], "at least 2"), ([1.0, float("nan")], "finite")])
def test_rank_group_rejects_bad_groups(scores, match):
    with pytest.raises(ValueError, match=match):
        rank_group(scores)
    with pytest.raises(ValueError, match=match):
        count_top_ties(scores)


# ---------------------------------------------------------------- drawing negatives
def test_draw_negative_large_gamma_picks_top_scored():
    """gamma = 1e3, gaps >= 0.2: the runner-up has q <= e^-200, so every draw is the top-scored index 1."""
    rng = np.random.default_rng(0)
    assert {draw_negative([0.1, 0.5, 0.3, -2.0], 1e3, rng) for _ in range(200)} == {1}


def test_draw_negative_is_reproducible_and_needs_a_generator():
    a = [draw_negative([0.0, 1.0, 2.0], 0.5, np.random.default_rng(7)) for _ in range(3)]
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    assert [draw_negative([0.0, 1.0, 2.0], 0.5, r1) for _ in range(50)] == [
        draw_negative([0.0, 1.0, 2.0], 0.5, r2) for _ in range(50)]
    assert len(set(a)) == 1
    with pytest.raises(TypeError, match="Generator"):
        draw_negative([0.0, 1.0], 1.0, np.random)  # the global RNG is refused


def _chi_square_pvalue_or_critical(counts, expected, df):
    """p-value by scipy when installed; else the statistic against the chi-square critical value at alpha 1e-3
    (df 3: 16.266, df 4: 18.467, from standard tables). Returns True when the fit is NOT rejected."""
    try:
        from scipy.stats import chisquare
    except ImportError:
        stat = float(((counts - expected) ** 2 / expected).sum())
        return stat < {3: 16.266, 4: 18.467}[df]
    return chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("gamma", [1.0, 0.0, -0.7])
def test_draw_negative_frequencies_match_q_gamma(gamma):
    """20 000 seeded draws over 4 negatives; chi-square goodness of fit to q_gamma, df = 3, alpha = 1e-3."""
    scores = [0.0, 0.5, 1.0, 2.0]
    q = hardness_probs(scores, gamma)
    rng = np.random.default_rng(12345)
    n = 20_000
    counts = np.bincount([draw_negative(scores, gamma, rng) for _ in range(n)], minlength=4)
    assert _chi_square_pvalue_or_critical(counts, n * q, df=3)


def test_draw_negative_never_picks_zero_probability():
    rng = np.random.default_rng(1)
    draws = {draw_negative([1e4, -1e4, 1e4 - 1e-3, -1e4], 1e3, rng) for _ in range(2000)}
    assert draws <= {0, 2}


# ---------------------------------------------------------------- BT rules and the dispatcher
def test_pick_negative_fixed_rules_and_ties():
    rng = np.random.default_rng(0)
    assert pick_negative("max_min", [0.3, -1.0, 2.0, -1.0], rng) == 1  # lowest, earliest of the tie
    assert pick_negative("max_max", [0.3, 2.0, -1.0, 2.0], rng) == 1  # highest, earliest of the tie


def test_pick_negative_random_is_uniform():
    rng = np.random.default_rng(3)
    n = 8000
    counts = np.bincount([pick_negative("random", [5.0, 1.0, 0.0, 9.0, 2.0], rng) for _ in range(n)], minlength=5)
    assert _chi_square_pvalue_or_critical(counts, np.full(5, n / 5), df=4)


def test_unknown_rules_name_the_valid_ones():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError) as err:
        pick_negative("hardest", [1.0, 2.0], rng)
    assert all(r in str(err.value) for r in BT_RULES)
    with pytest.raises(ValueError) as err:
        select_negative("hardest", [1.0, 2.0], rng)
    assert all(r in str(err.value) for r in SELECTION_RULES)


def test_select_negative_dispatch():
    scores = [0.2, 0.9, -0.4]
    assert select_negative("max_min", scores, np.random.default_rng(0)) == 2
    assert select_negative("max_max", scores, np.random.default_rng(0), gamma=3.0) == 1  # gamma ignored for BT
    assert select_negative("hps", scores, np.random.default_rng(0), gamma=1e3) == 1
    assert select_negative("hps", scores, np.random.default_rng(5), gamma=0.5) == draw_negative(
        scores, 0.5, np.random.default_rng(5))
    with pytest.raises(ValueError, match="gamma"):
        select_negative("hps", scores, np.random.default_rng(0))


# ---------------------------------------------------------------- gamma schedules
def test_constant_and_linear_schedules_follow_the_step():
    """linear -2 -> 2 over 101 steps (0..100): step s -> -2 + 4 * s / 100: step 25 -> -1, the LAST step
    (100) -> 2 = gamma_end, beyond -> 2 (clamped). Over 5 steps: -2, -1, 0, 1, 2. One step: gamma_start."""
    assert make_gamma_schedule("constant", gamma=2.5).value(0, 10) == 2.5
    assert make_gamma_schedule().value(7, 10) == 1.0
    lin = make_gamma_schedule("linear", gamma_start=-2.0, gamma_end=2.0)
    assert [lin.value(s, 101) for s in (0, 25, 50, 100, 250)] == [-2.0, -1.0, 0.0, 2.0, 2.0]
    assert [lin.value(s, 5) for s in range(5)] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert lin.value(0, 1) == -2.0


def test_step_schedule_reference_stages_at_quantiles():
    """Five stages at 20 % quantiles of step / total: [0, 20) -> -5, [20, 40) -> -3, [40, 60) -> -1,
    [60, 80) -> +1, [80, 100] -> +3; never +5 (as in the reference code)."""
    sched = make_gamma_schedule("step")
    assert sched.stages == REFERENCE_STAGES
    steps = [0, 19, 20, 39, 40, 59, 60, 79, 80, 99, 100]
    assert [sched.value(s, 100) for s in steps] == [-5, -5, -3, -3, -1, -1, 1, 1, 3, 3, 3]
    assert [sched.value(s, 5) for s in range(5)] == [-5, -3, -1, 1, 3]  # exact at integer quantiles


def test_step_schedule_custom_stages():
    """Two stages (0, 4) over 4 steps: step s -> stage floor(2s/4) -> 0, 0, 4, 4. Three stages over 7
    steps: floor(3s/7) for s = 0..6 -> 0,0,0,1,1,2,2."""
    sched = make_gamma_schedule("step", stages=[0, 4])
    assert [sched.value(s, 4) for s in range(4)] == [0.0, 0.0, 4.0, 4.0]
    three = make_gamma_schedule("step", stages=[-1, 0, 2])
    assert [three.value(s, 7) for s in range(7)] == [-1.0, -1.0, -1.0, 0.0, 0.0, 2.0, 2.0]


def test_policy_hardness_probs_hand_values():
    """q(j) = softmax(gamma_s s_j + gamma_r r_j). s = (1, 0, 0), r = (0, ln 2, 0), gamma_s = ln 3,
    gamma_r = 1: logits (ln 3, ln 2, 0) -> exp = (3, 2, 1) / 6 = (1/2, 1/3, 1/6). gamma_r = 0 is score
    hardness whatever r is; gamma_s = 0 is on-policy only: (1, 2, 1) / 4."""
    import math

    s, r = [1.0, 0.0, 0.0], [0.0, math.log(2), 0.0]
    assert policy_hardness_probs(s, r, math.log(3), 1.0) == pytest.approx([1 / 2, 1 / 3, 1 / 6])
    assert policy_hardness_probs(s, r, 2.0, 0.0) == pytest.approx(hardness_probs(s, 2.0))
    assert policy_hardness_probs(s, r, 0.0, 1.0) == pytest.approx([1 / 4, 1 / 2, 1 / 4])
    with pytest.raises(ValueError, match="2 policy rewards for 3 scores"):
        policy_hardness_probs(s, [0.0, 1.0], 1.0, 1.0)
    with pytest.raises(ValueError, match="gamma_r must be finite"):
        policy_hardness_probs(s, r, 1.0, float("nan"))


def test_schedule_validation_messages():
    with pytest.raises(ValueError, match="constant, linear, step"):
        make_gamma_schedule("cosine")
    with pytest.raises(ValueError, match="gamma_start, gamma_end"):
        make_gamma_schedule("linear", gamma=3.0)
    with pytest.raises(ValueError, match="stage"):
        make_gamma_schedule("step", stages=())
    with pytest.raises(ValueError, match="finite"):
        make_gamma_schedule("constant", gamma=float("inf"))
    with pytest.raises(ValueError, match="total_steps"):
        make_gamma_schedule().value(0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        GammaSchedule().gamma = 3.0


# hps_core.sampling.negatives: the configured draw (which rule, which schedule, which groups, online or not)

def _negatives_cfg(**hps):
    from hps_core.config.schema import PipelineConfig

    return PipelineConfig.from_dict({"run": {"seed": 3}, "hps": {"epochs": 2, "batch_size": 2, "grad_accum_steps": 2, **hps}})


def _negatives_groups():
    """6 training prompts (scores 0..3, best first after ranking) and 2 held-out ones."""
    import pandas as pd

    from hps_core.sampling.groups import build_groups

    rows = [{"prompt_id": f"p{i}", "prompt": f"q{i}", "response_id": f"p{i}-{j}", "response": f"a{j}",
             "score": float(j), "is_harmful": None, "split": "train" if i < 6 else "eval"}
            for i in range(8) for j in range(4)]
    return build_groups(pd.DataFrame(rows))


@pytest.mark.parametrize("hardness, estimator, online", [
    ("score", "pair", False), ("score", "unbiased", True), ("policy", "pair", True), ("mix", "pair", True)])
def test_negatives_are_drawn_by_the_trainer_exactly_when_the_draw_needs_the_policy(hardness, estimator, online):
    from types import SimpleNamespace

    from hps_core.sampling.negatives import is_online

    assert is_online(SimpleNamespace(hardness=hardness, estimator=estimator)) is online


def test_configured_draw_covers_training_groups_per_epoch_on_the_plan():
    """6 training groups x 2 epochs = 12 rows, none of the 2 held-out prompts; 4 examples per step
    (batch 2 x accumulation 2) -> steps 0, 1 (4 + 2 groups) in epoch 0 and 2, 3 in epoch 1; hps: every
    negative is a dispreferred rank 1..3 of its group; the same seed draws the same table."""
    from hps_core.sampling.negatives import draw_negatives

    groups = _negatives_groups()
    cfg = _negatives_cfg(method="dpo-hps", gamma_schedule="constant", gamma=2.0)
    table = draw_negatives(cfg, groups)
    assert len(table) == 12 and set(table["prompt_id"]) == {f"p{i}" for i in range(6)}
    assert table.groupby("epoch")["step"].agg(lambda s: sorted(set(s))).to_dict() == {0: [0, 1], 1: [2, 3]}
    assert table.groupby("step").size().to_dict() == {0: 4, 1: 2, 2: 4, 3: 2}
    assert set(table["negative_rank"]) <= {1, 2, 3} and set(table["gamma"]) == {2.0}
    assert draw_negatives(cfg, groups).equals(table)


def test_configured_draw_rules_per_method():
    """pl (listwise) draws nothing; bt with max_max takes the top-scored dispreferred (rank 1) always;
    on-policy hps records the plan with rank -1 (the trainer draws at the step)."""
    from hps_core.sampling.groups import NEGATIVE_COLUMNS
    from hps_core.sampling.negatives import draw_negatives

    groups = _negatives_groups()
    pl = draw_negatives(_negatives_cfg(method="dpo-pl"), groups)
    assert pl.empty and list(pl.columns) == list(NEGATIVE_COLUMNS)
    bt = draw_negatives(_negatives_cfg(method="dpo-bt", bt_negative_rule="max_max"), groups)
    assert len(bt) == 12 and set(bt["negative_rank"]) == {1}
    online = draw_negatives(_negatives_cfg(method="dpo-hps", hardness="policy"), groups)
    assert len(online) == 12 and set(online["negative_rank"]) == {-1}


def test_configured_gamma_schedule_per_kind():
    """constant 2 -> 2 everywhere; linear 1 -> 5 over 5 steps: 1, 2, 3, 4, 5; step stages (-1, 1) over 4
    steps: -1, -1, 1, 1."""
    from hps_core.sampling.negatives import gamma_schedule

    constant = gamma_schedule(_negatives_cfg(gamma_schedule="constant", gamma=2.0).hps)
    assert [constant.value(s, 5) for s in range(5)] == [2.0] * 5
    linear = gamma_schedule(_negatives_cfg(gamma_schedule="linear", gamma_start=1.0, gamma_end=5.0).hps)
    assert [linear.value(s, 5) for s in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    staged = gamma_schedule(_negatives_cfg(gamma_schedule="step", gamma_stages=[-1.0, 1.0]).hps)
    assert [staged.value(s, 4) for s in range(4)] == [-1.0, -1.0, 1.0, 1.0]


def test_count_top_ties_names_itself_when_given_one_score():
    from hps_core.sampling.hardness import count_top_ties

    with pytest.raises(ValueError) as exc:
        count_top_ties([1.0])
    assert str(exc.value) == "count_top_ties: expected at least 2 score(s), got 1."
    assert count_top_ties([2.0, 2.0, 1.0, 2.0]) == 2 and count_top_ties([2.0, 1.0]) == 0


# ---------------------------------------------------------------- the configured draws (hps_core.sampling.negatives)
def _neg_cfg(**hps):
    from hps_core.config.schema import PipelineConfig, PreferenceTrainConfig, RunConfig

    base = dict(epochs=2, batch_size=3, grad_accum_steps=2)
    return PipelineConfig(run=RunConfig(seed=5), hps=PreferenceTrainConfig(**(base | hps)))


def _neg_groups():
    import pandas as pd

    from hps_core.sampling.groups import build_groups

    rows = [{"prompt_id": f"p{i}", "prompt": "x", "response_id": f"p{i}-{j}", "response": "y", "score": float(j * (i + 1)),
             "is_harmful": None, "split": "eval" if i >= 8 else "train"} for i in range(10) for j in range(4)]
    return build_groups(pd.DataFrame(rows))


@pytest.mark.parametrize("hps, rule, gamma_kw", [
    ({"method": "dpo-hps", "gamma": 2.0}, "hps", {"gamma": 2.0}),
    ({"method": "ipo-bt", "bt_negative_rule": "max_min"}, "max_min", {"gamma": 1.0}),
    ({"method": "dpo-bt", "bt_negative_rule": "max_max"}, "max_max", {"gamma": 1.0}),
    ({"method": "dpo-hps", "hardness": "policy"}, "online", {"gamma": 1.0}),
    ({"method": "dpo-hps", "estimator": "unbiased"}, "online", {"gamma": 1.0}),
])
def test_draw_negatives_is_the_plan_for_the_methods_rule_over_training_groups(hps, rule, gamma_kw):
    """Training groups only (8 of 10), the run's seed, examples per step = batch_size x grad_accum (6),
    the configured epochs: exactly what draw_epoch_negatives gives with those arguments."""
    from hps_core.sampling.groups import draw_epoch_negatives
    from hps_core.sampling.negatives import draw_negatives

    groups = _neg_groups()
    got = draw_negatives(_neg_cfg(**hps), groups)
    train = groups[groups["split"] == "train"].reset_index(drop=True)
    want = draw_epoch_negatives(train, rule=rule, schedule=make_gamma_schedule("constant", **gamma_kw), n_epochs=2,
                                seed=5, examples_per_step=6)
    import pandas as pd

    pd.testing.assert_frame_equal(got, want)
    assert got["step"].tolist() == [0] * 6 + [1] * 2 + [2] * 6 + [3] * 2
    assert set(got["prompt_id"]) == set(train["prompt_id"])


def test_listwise_methods_draw_no_negatives():
    from hps_core.sampling.groups import NEGATIVE_COLUMNS
    from hps_core.sampling.negatives import draw_negatives

    got = draw_negatives(_neg_cfg(method="dpo-pl"), _neg_groups())
    assert len(got) == 0 and tuple(got.columns) == NEGATIVE_COLUMNS


@pytest.mark.parametrize("hardness, estimator, online", [
    ("score", "pair", False), ("policy", "pair", True), ("mix", "pair", True), ("score", "unbiased", True)])
def test_is_online_when_the_draw_needs_the_policy(hardness, estimator, online):
    from types import SimpleNamespace

    from hps_core.sampling.negatives import is_online

    assert is_online(SimpleNamespace(hardness=hardness, estimator=estimator)) is online


def test_gamma_schedule_of_each_kind_uses_its_own_fields():
    from types import SimpleNamespace

    from hps_core.sampling.negatives import gamma_schedule

    hps = SimpleNamespace(gamma_schedule="constant", gamma=2.5, gamma_start=-1.0, gamma_end=3.0, gamma_stages=(7.0, 9.0))
    assert [gamma_schedule(hps).value(k, 4) for k in range(4)] == [2.5] * 4
    hps.gamma_schedule = "linear"
    assert [gamma_schedule(hps).value(k, 5) for k in range(5)] == [-1.0, 0.0, 1.0, 2.0, 3.0]
    hps.gamma_schedule = "step"
    assert [gamma_schedule(hps).value(k, 4) for k in range(4)] == [7.0, 7.0, 9.0, 9.0]


# ---------------------------------------------------------------- every refusal, word for word
_RNG = np.random.default_rng(0)


@pytest.mark.parametrize("call, error, message", [
    (lambda: draw_index(np.array([1.0]), None), TypeError,
     "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got NoneType; the global numpy RNG "
     "is never used so that every draw is reproducible."),
    (lambda: hardness_probs([[1.0, 2.0]], 1.0), ValueError,
     "hardness_probs: expected a 1-D list of scores, got shape (1, 2)."),
    (lambda: hardness_probs([], 1.0), ValueError, "hardness_probs: expected at least 1 score(s), got 0."),
    (lambda: rank_group([1.0]), ValueError, "rank_group: expected at least 2 score(s), got 1."),
    (lambda: hardness_probs([1.0, float("nan"), float("inf")], 1.0), ValueError,
     "hardness_probs: scores must be finite; found nan at position 1 (2 non-finite in total). Drop or re-score "
     "those responses."),
    (lambda: hardness_probs([1.0], float("inf")), ValueError, "hardness_probs: gamma must be finite, got inf."),
    (lambda: policy_hardness_probs([1.0], [1.0], 1.0, float("nan")), ValueError,
     "hardness_probs: gamma_r must be finite, got nan."),
    (lambda: policy_hardness_probs([1.0, 2.0], [1.0, float("inf")], 1.0, 1.0), ValueError,
     "hardness_probs (policy rewards): scores must be finite; found inf at position 1 (1 non-finite in total). "
     "Drop or re-score those responses."),
    (lambda: policy_hardness_probs([1.0, 2.0], [1.0, 2.0, 3.0], 1.0, 1.0), ValueError,
     "hardness_probs: 3 policy rewards for 2 scores; give one per response."),
    (lambda: hardness_probs([1e300, 0.0], 1e10), ValueError,
     "hardness_probs: gamma * score overflows float64 (gamma=10000000000.0, gamma_r=0.0, max |score|=1e+300)."),
    (lambda: pick_negative("hps", [1.0], _RNG), ValueError,
     "Unknown BT negative rule 'hps'; valid rules: random, max_min, max_max."),
    (lambda: pick_negative("max_min", [], _RNG), ValueError, "pick_negative('max_min'): expected at least 1 score(s), got 0."),
    (lambda: pick_negative("random", [1.0], np.random.RandomState(0)), TypeError,
     "rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got RandomState; the global numpy RNG "
     "is never used so that every draw is reproducible."),
    (lambda: select_negative("hps", [1.0], _RNG), ValueError,
     "select_negative('hps', ...) needs gamma (the hardness temperature of q_gamma)."),
    (lambda: select_negative("best", [1.0], _RNG), ValueError,
     "Unknown negative-selection rule 'best'; valid rules: hps, random, max_min, max_max."),
    (lambda: GammaSchedule(kind="cosine"), ValueError,
     "Unknown gamma schedule kind 'cosine'; valid kinds: constant, linear, step."),
    (lambda: GammaSchedule(gamma_end=float("nan")), ValueError,
     "GammaSchedule values must be finite, got GammaSchedule(kind='constant', gamma=1.0, gamma_start=0.0, gamma_end=nan, "
     "stages=(-5.0, -3.0, -1.0, 1.0, 3.0))."),
    (lambda: GammaSchedule(kind="step", stages=()), ValueError,
     "GammaSchedule(kind='step') needs at least one stage in `stages`."),
    (lambda: GammaSchedule().value(-1, 3), ValueError,
     "GammaSchedule.value needs step >= 0 and total_steps >= 1, got step=-1, total_steps=3."),
    (lambda: GammaSchedule().value(0, 0), ValueError,
     "GammaSchedule.value needs step >= 0 and total_steps >= 1, got step=0, total_steps=0."),
    (lambda: make_gamma_schedule("cosine"), ValueError,
     "Unknown gamma schedule kind 'cosine'; valid kinds: constant, linear, step."),
    (lambda: make_gamma_schedule("linear", gamma=3.0, stages=[1]), ValueError,
     "Gamma schedule kind 'linear' takes fields gamma_start, gamma_end; got unexpected gamma, stages."),
])
def test_refusals_say_what_was_wrong(call, error, message):
    with pytest.raises(error) as exc:
        call()
    assert str(exc.value) == message


def test_schedule_edges_by_hand():
    """linear over 1 step: gamma_start; step k past the end clamps to gamma_end; step schedule with 3
    stages over 7 steps: floor(3 k / 7) = 0,0,0,1,1,2,2; a step past the end stays on the last stage.
    Stages given as a list become floats."""
    lin = make_gamma_schedule("linear", gamma_start=-1.0, gamma_end=3.0)
    assert lin.value(0, 1) == -1.0 and lin.value(9, 5) == 3.0 and lin.value(2, 5) == 1.0
    three = make_gamma_schedule("step", stages=[0, 1, 2])
    assert [three.value(k, 7) for k in range(7)] == [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    assert three.value(20, 7) == 2.0 and three.stages == (0.0, 1.0, 2.0) and type(three.stages[0]) is float
    assert type(make_gamma_schedule("constant", gamma=2).value(0, 1)) is float



class _FixedUniform(np.random.Generator):
    """A Generator whose uniform draw is fixed (the ends of [0, 1) a real one reaches with probability ~0)."""

    def __init__(self, u: float):
        super().__init__(np.random.PCG64(0))
        self.u = u

    def random(self, *args, **kwargs):
        return self.u


def test_draw_index_never_returns_a_zero_probability_response():
    """u = 0 lands on the first response with mass, not on a leading zero; u * total rounding up to the
    total (here u = 1) falls back to the last response with mass, not past the end or onto a trailing zero."""
    assert draw_index(np.array([0.0, 1.0]), _FixedUniform(0.0)) == 1
    assert draw_index(np.array([0.3, 0.3, 0.4, 0.0]), _FixedUniform(1.0)) == 2
    assert draw_index(np.array([0.5, 0.5]), _FixedUniform(0.49)) == 0 and draw_index(np.array([0.5, 0.5]), _FixedUniform(0.5)) == 1


def test_draw_index_scales_by_the_total_of_unnormalised_weights():
    """Weights 1 and 3 (total 4): u * 4 < 1 picks index 0, so 1 in 4 draws; 4000 seeded draws give 0.25 within
    3 standard deviations (sd = sqrt(0.25 * 0.75 / 4000) = 0.0068)."""
    rng = np.random.default_rng(0)
    share = np.mean([draw_index(np.array([1.0, 3.0]), rng) == 0 for _ in range(4000)])
    assert abs(share - 0.25) < 3 * 0.0068
    assert draw_index(np.array([1.0, 3.0]), _FixedUniform(0.3)) == 1  # 0.3 * 4 = 1.2 >= 1


def test_rewards_none_is_score_hardness_whatever_gamma_r():
    scores = [0.5, -1.0, 2.0]
    assert np.array_equal(policy_hardness_probs(scores, None, 1.5, 3.0), hardness_probs(scores, 1.5))
