"""On-policy hardness (hps_core.train.online_hardness): which steps refresh which implicit rewards, and
what the draw uses, on hand-made groups with a fake policy pass (no model)."""

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from hps_core.sampling.hardness import policy_hardness_probs
from hps_core.train.online_hardness import OnlineHardness


def _groups():
    """Two groups of 4 ranked responses (ranks 1..3 dispreferred, scores descending)."""
    return pd.DataFrame({
        "prompt_id": ["a", "b"], "n": [4, 4],
        "scores": [[3.0, 2.0, 1.0, 0.0], [1.0, 0.5, 0.0, -0.5]],
        "response_ids": [["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"]],
    })


def _hardness(**kw):
    cfg = SimpleNamespace(**({"hardness": "mix", "gamma_r": 2.0, "beta": 0.5, "refresh_every": 1, "refresh_top_m": 0,
                              "estimator": "pair"} | kw))
    slot = {(g, r): 4 * g + r for g in range(2) for r in range(4)}
    calls = []
    # The fake policy: log-prob of slot i is i / 10 + the number of the pass; the reference's is 0.
    def logps(slots):
        calls.append(list(slots))
        return torch.tensor([i / 10 + len(calls) for i in slots], dtype=torch.float64)
    return OnlineHardness(_groups(), cfg, seed=0, logps_fn=logps, ref_logps=torch.zeros(8, dtype=torch.float64), slot=slot), calls


def test_refresh_every_step_recomputes_the_steps_groups_after_step_0():
    """refresh_every = 1: step 0 runs no pass (the policy is the reference, every r = 0); each later
    step recomputes exactly the dispreferred responses (ranks 1-3) of its own groups, once."""
    h, calls = _hardness()
    h.refresh(0, [0, 1])
    assert calls == [] and all((r == 0).all() for r in h.rewards)
    h.refresh(1, [1])
    assert calls == [[5, 6, 7]]
    # r = beta * (log pi - log pi_ref) = 0.5 * (slot / 10 + 1)
    assert h.rewards[1] == pytest.approx([0.5 * 1.5, 0.5 * 1.6, 0.5 * 1.7]) and (h.rewards[0] == 0).all()
    h.refresh(2, [0, 1, 0])  # a group named twice is refreshed once
    assert calls[-1] == [1, 2, 3, 5, 6, 7] and h.refreshed == 9


def test_refresh_cadence_top_m_and_write_back():
    """refresh_every = 3: entries computed at step 0 (the reference values) are due at step 3, not at
    steps 1-2; top_m = 2 refreshes ranks 1-2 only (rank 3 keeps its value); a write-back from the training
    forward at step 4 resets that entry's age, so step 6 refreshes rank 2 but not rank 1 (written at 4)."""
    h, calls = _hardness(refresh_every=3, refresh_top_m=2)
    for step in (1, 2):
        h.refresh(step, [0])
    assert calls == []
    h.refresh(3, [0])
    assert calls == [[1, 2]] and h.rewards[0][2] == 0.0
    h.write_back(0, 1, logp=0.9, step=4)
    assert h.rewards[0][0] == pytest.approx(0.45)
    h.refresh(5, [0])
    assert len(calls) == 1  # rank 1 written at 4, rank 2 computed at 3: both younger than 3 steps
    h.refresh(6, [0])
    assert calls[-1] == [2]


def test_draw_uses_both_gammas_and_records_them():
    """Group a, r = (1, 0, 0) after a write-back, scores s = (2, 1, 0), gamma_s = ln 2 (the plan's), gamma_r = 2:
    q = softmax(ln2 * (2, 1, 0) + 2 * (1, 0, 0)) = (4 e^2, 2, 1) / (4 e^2 + 3). The recorded q of the drawn
    rank matches; hardness "policy" ignores the scores: q = softmax(2 r) = (e^2, 1, 1) / (e^2 + 2)."""
    h, _ = _hardness()
    h.write_back(0, 1, logp=2.0, step=1)  # r = 0.5 * 2 = 1
    examples = [{"group": 0, "gamma": math.log(2), "seqs": [(0, 0), (0, -1)]}]
    h.draw(1, 0, examples)
    q = np.array([4 * math.e**2, 2, 1]) / (4 * math.e**2 + 3)
    assert policy_hardness_probs([2.0, 1.0, 0.0], [1.0, 0.0, 0.0], math.log(2), 2.0) == pytest.approx(q)
    row = h.drawn[-1]
    j = row["negative_rank"] - 1
    assert examples[0]["seqs"] == [(0, 0), (0, j + 1)] and row["q"] == pytest.approx(q[j]) and row["p_draw"] == row["q"]
    assert row["gamma"] == pytest.approx(math.log(2)) and row["gamma_r"] == 2.0 and row["negative_id"] == f"a{j + 1}"
    p, _ = _hardness(hardness="policy")
    p.write_back(0, 1, logp=2.0, step=1)
    p.draw(1, 0, [{"group": 0, "gamma": 5.0, "seqs": []}])
    assert p.drawn[-1]["gamma"] == 0.0
    assert p.drawn[-1]["q"] == pytest.approx(np.array([math.e**2, 1, 1])[p.drawn[-1]["negative_rank"] - 1] / (math.e**2 + 2))


def test_unbiased_draw_tilts_by_exp_r_and_hands_the_loss_its_log_mass():
    """estimator = unbiased: p(j) ∝ q(j) e^{r_j}, and log_mass = log sum_j q_j e^{r_j}; with r = (1, 0, 0),
    gamma_s = 0, gamma_r = 2: q = (e^2, 1, 1) / (e^2 + 2), p = (e^3, 1, 1) / (e^3 + 2),
    log_mass = log((e^3 + 2) / (e^2 + 2)). Draws are seeded by (seed, 3, step): repeatable."""
    h, _ = _hardness(hardness="policy", estimator="unbiased")
    h.write_back(0, 1, logp=2.0, step=1)
    ex = {"group": 0, "gamma": 0.0, "seqs": []}
    h.draw(1, 0, [ex])
    row = h.drawn[-1]
    j = row["negative_rank"] - 1
    assert row["p_draw"] == pytest.approx(np.array([math.e**3, 1, 1])[j] / (math.e**3 + 2))
    assert ex["log_mass"] == pytest.approx(math.log((math.e**3 + 2) / (math.e**2 + 2)))
    again, _ = _hardness(hardness="policy", estimator="unbiased")
    again.write_back(0, 1, logp=2.0, step=1)
    again.draw(1, 0, [{"group": 0, "gamma": 0.0, "seqs": []}])
    assert again.drawn[-1]["negative_rank"] == row["negative_rank"]


def test_top_m_draws_among_the_top_scored_only():
    """refresh_top_m = 2: candidates are ranks 1-2 (the two top-scored dispreferred responses); rank 3 is
    never drawn, even when it alone keeps the reference reward 0 while the others were pushed down."""
    h, _ = _hardness(hardness="policy", gamma_r=50.0, refresh_top_m=2)
    h.write_back(0, 1, logp=-4.0, step=1)
    h.write_back(0, 2, logp=-2.0, step=1)  # r = (-2, -1, 0): rank 3 is the policy's favourite
    for step in range(1, 21):
        h.draw(step, 0, [{"group": 0, "gamma": 0.0, "seqs": []}])
    ranks = {row["negative_rank"] for row in h.drawn}
    assert ranks == {2} and all(row["candidates"] == 2 for row in h.drawn)
