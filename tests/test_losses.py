"""Tests for hps_core.train.losses: hand-derived values, the identities that tie BT/PL/HPS together, and TRL parity."""
import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from hps_core.train.losses import (
    ALL_METHODS,
    PAIR_FRAMEWORKS,
    hps_exact_loss,
    hps_importance_loss,
    hps_loss,
    listwise_loss,
    pair_loss,
    parse_method,
    pl_loss,
    reward_metrics,
    weighted_hps_loss,
)
from hps_core.sampling.hardness import hardness_probs

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


# ---------------------------------------------------------------- pair losses, by hand
def test_dpo_and_cdpo_hand_values():
    """beta 0.5, a = 1, b = 0: z = 0.5. DPO = log(1 + e^-0.5) = 0.4740770.
    cDPO eps 0.1: 0.9 * log(1+e^-0.5) + 0.1 * log(1+e^0.5); log(1+e^0.5) = 0.5 + log(1+e^-0.5), so
    cDPO = 0.4740770 + 0.1 * 0.5 = 0.5240770."""
    assert_close(pair_loss("dpo", T(1.0), T(0.0), beta=0.5), T(0.4740770), atol=1e-7, rtol=0)
    assert_close(pair_loss("dpo", T(1.0), T(0.0), beta=0.5, label_smoothing=0.1), T(0.5240770), atol=1e-7, rtol=0)


def test_ipo_sppo_nca_exo_hand_values():
    """ipo, beta 0.5: h = 1 - 0.5 = 0.5, (0.5 - 1/(2*0.5))^2 = 0.25.
    sppo_hard, beta 0.5: a = 2, b = 0 -> (2 - 1)^2 + (0 + 1)^2 = 2; a = 1, b = -1 -> 0.
    nca_pair at a = b = 0: log 2 + 0.5 log 2 + 0.5 log 2 = 2 log 2 = 1.3862944.
    exo_pair at h = 0 (both sigmoids 1/2), eps 1e-3: log(1/2) - 0.5 log(1e-3 * 0.999)
      = -0.6931472 + 0.5 * 6.9087558 = 2.7612307."""
    assert_close(pair_loss("ipo", T(1.0), T(0.5), beta=0.5), T(0.25))
    assert_close(pair_loss("sppo_hard", T(2.0, 1.0), T(0.0, -1.0), beta=0.5), T(2.0, 0.0))
    assert_close(pair_loss("nca_pair", T(0.0), T(0.0), beta=0.3), T(1.3862944), atol=1e-7, rtol=0)
    exo = T(2.7612307)
    assert_close(pair_loss("exo_pair", T(0.7), T(0.7), beta=0.1, label_smoothing=1e-3), exo, atol=1e-7, rtol=0)
    assert_close(pair_loss("exo_pair", T(0.7), T(0.7), beta=0.1), exo, atol=1e-7, rtol=0)  # eps 0 -> 1e-3


def test_pair_losses_are_stable_for_huge_log_ratios():
    a = torch.tensor([1e4, -1e4, 5e3], requires_grad=True)
    b = torch.tensor([-1e4, 1e4, 5e3])
    for fw in PAIR_FRAMEWORKS:
        loss = pair_loss(fw, a, b, beta=0.25, label_smoothing=0.1 if fw in ("dpo", "exo_pair") else 0.0)
        assert torch.isfinite(loss).all(), fw
        loss.sum().backward()
        assert torch.isfinite(a.grad).all(), fw
        a.grad = None


def test_pair_loss_rejects_bad_arguments():
    x = T(0.0)
    with pytest.raises(ValueError, match="dpo, ipo"):
        pair_loss("kto", x, x, beta=0.1)
    with pytest.raises(ValueError, match="beta"):
        pair_loss("dpo", x, x, beta=0.0)
    with pytest.raises(ValueError, match="no meaning for 'ipo'"):
        pair_loss("ipo", x, x, beta=0.1, label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        pair_loss("dpo", x, x, beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        pair_loss("exo_pair", x, x, beta=0.1, label_smoothing=1.0)


# ---------------------------------------------------------------- HPS single-sample
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_hps_with_two_responses_equals_dpo(eps):
    """n = 2 -> N = 1 and log 1 = 0: the offset vanishes, HPS (either form) is the DPO pair loss."""
    a, b = T(0.3, -1.2, 4.0), T(0.1, 0.5, -2.0)
    dpo = pair_loss("dpo", a, b, beta=0.25, label_smoothing=eps)
    for offset in (False, True):
        assert_close(hps_loss(a, b, n_dispreferred=1, beta=0.25, label_smoothing=eps, log_n_offset=offset), dpo)


def test_hps_log_n_offset_hand_value_and_per_example_n():
    """beta 1, a = 1, b = 0, N = 3: -log sig(1 - log 3) = log(1 + 3/e) = log(2.1036383) = 0.7436684."""
    assert_close(hps_loss(T(1.0), T(0.0), n_dispreferred=3, beta=1.0, log_n_offset=True), T(0.7436684),
                 atol=1e-7, rtol=0)
    a, b, n = T(1.0, 1.0), T(0.0, 0.0), torch.tensor([3, 1])
    got = hps_loss(a, b, n_dispreferred=n, beta=1.0, log_n_offset=True)
    assert_close(got, torch.stack([T(0.7436684)[0], pair_loss("dpo", T(1.0), T(0.0), beta=1.0)[0]]), atol=1e-7, rtol=0)


def test_hps_without_offset_is_the_pair_loss_for_every_framework():
    a, b = T(0.4, -0.3), T(-0.2, 0.6)
    for fw in PAIR_FRAMEWORKS:
        assert_close(hps_loss(a, b, n_dispreferred=9, beta=0.5, framework=fw), pair_loss(fw, a, b, beta=0.5))
    with pytest.raises(ValueError, match="dpo"):
        hps_loss(a, b, n_dispreferred=9, beta=0.5, framework="ipo", log_n_offset=True)
    with pytest.raises(ValueError, match=">= 1"):
        hps_loss(a, b, n_dispreferred=0, beta=0.5, log_n_offset=True)


def test_weighted_hps():
    """w1 = 0.7: 0.7 * L(y1) + 0.3 * L(y2); w1 = 1 is plain HPS on y1; w1 outside [0.5, 1] is rejected."""
    y1, y2, ys = T(1.0, 0.2), T(0.5, 0.1), T(0.0, 0.3)
    l1 = hps_loss(y1, ys, n_dispreferred=4, beta=0.5, log_n_offset=True)
    l2 = hps_loss(y2, ys, n_dispreferred=4, beta=0.5, log_n_offset=True)
    got = weighted_hps_loss(y1, y2, ys, w1=0.7, n_dispreferred=4, beta=0.5, log_n_offset=True)
    assert_close(got, 0.7 * l1 + 0.3 * l2)
    assert_close(weighted_hps_loss(y1, y2, ys, w1=1.0, n_dispreferred=4, beta=0.5), hps_loss(y1, ys, n_dispreferred=4, beta=0.5))
    for bad in (0.4, 1.2):
        with pytest.raises(ValueError, match=r"\[0.5, 1\]"):
            weighted_hps_loss(y1, y2, ys, w1=bad, n_dispreferred=4, beta=0.5)


# ---------------------------------------------------------------- Plackett-Luce and listwise
def test_pl_hand_value():
    """r = (2, 1, 0) (beta 1): stage 1: 2 - log(e^2 + e + 1) = 2 - 2.4076059 = -0.4076059;
    stage 2: 1 - log(e + 1) = 1 - 1.3132617 = -0.3132617; L = 0.7208676."""
    assert_close(pl_loss(T(2.0, 1.0, 0.0)[None], beta=1.0), T(0.7208676), atol=1e-7, rtol=0)


def test_pl_with_two_responses_equals_dpo():
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_close(pl_loss(x, beta=0.3), pair_loss("dpo", x[:, 0], x[:, 1], beta=0.3))


def test_pl_mask_drops_padding_and_keeps_gradients_finite():
    """Row 0 has 2 real responses (2, 1) + padding: -log sig(1) = 0.3132617; row 1 is the 3-response value."""
    x = torch.tensor([[2.0, 1.0, 1e4], [2.0, 1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss = pl_loss(x, beta=1.0, mask=mask)
    assert_close(loss, T(0.3132617, 0.7208676), atol=1e-7, rtol=0)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, 2] == 0
    assert torch.isfinite(pl_loss(torch.tensor([[1e4, 0.0, -1e4]]), beta=1.0)).all()
    with pytest.raises(ValueError, match="at least 2"):
        pl_loss(x.detach(), beta=1.0, mask=torch.tensor([[True, False, False], [True, True, True]]))


def test_listwise_generalisation():
    """n = 2: every framework's listwise loss is its pair loss. ipo, beta 0.5, x = (1, 0.5, 0): stage 1 =
    mean((0.5 - 1)^2, (1 - 1)^2) = 0.125, stage 2 = (0.5 - 1)^2 = 0.25, total 0.375. dpo-pl is pl_loss."""
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for fw in PAIR_FRAMEWORKS:
        assert_close(listwise_loss(fw, x, beta=0.5), pair_loss(fw, x[:, 0], x[:, 1], beta=0.5))
    assert_close(listwise_loss("ipo", T(1.0, 0.5, 0.0)[None], beta=0.5), T(0.375))
    padded = torch.tensor([[1.0, 0.5, 0.0, 99.0]], dtype=torch.float64)
    assert_close(listwise_loss("ipo", padded, beta=0.5, mask=torch.tensor([[True, True, True, False]])), T(0.375))
    with pytest.raises(ValueError, match="label smoothing"):
        listwise_loss("dpo", x, beta=0.5, label_smoothing=0.1)


# ---------------------------------------------------------------- full HPS objective and its K-sample estimate
def test_hps_exact_hand_value_and_special_cases():
    """r+ = 1, two negatives with r = 0 (any gamma, q uniform over equal r): -log(e / (e + 2)) = log(1 + 2/e)
    = 0.5514447. N = 1: DPO. gamma = 0: softmax cross-entropy over the whole group."""
    got = hps_exact_loss(T(1.0), T(0.0, 0.0)[None], T(3.0, -1.0)[None], beta=1.0, gamma=2.0)
    assert_close(got, T(0.5514447), atol=1e-7, rtol=0)
    a, b = T(0.3, -1.0), T(0.1, 0.4)
    assert_close(hps_exact_loss(a, b[:, None], T(5.0, 1.0)[:, None], beta=0.5, gamma=1.0), pair_loss("dpo", a, b, beta=0.5))
    c, d = T(0.5), T(0.2, -0.4, 1.0)[None]
    ce = -torch.log_softmax(torch.cat([0.5 * c, 0.5 * d[0]]), 0)[0]
    assert_close(hps_exact_loss(c, d, T(9.0, 1.0, 2.0)[None], beta=0.5, gamma=0.0)[0], ce)


def test_hps_exact_mask_and_large_gamma():
    """Padding is ignored; gamma -> inf puts all of q on the top-scored negative: -log sig(r+ - log N - r_top)."""
    c, d, s = T(0.5), T(0.2, -0.4, 1.0, 7.0)[None], T(9.0, 1.0, 2.0, 50.0)[None]
    mask = torch.tensor([[True, True, True, False]])
    full = hps_exact_loss(c, d[:, :3], s[:, :3], beta=0.5, gamma=0.3)
    assert_close(hps_exact_loss(c, d, s, beta=0.5, gamma=0.3, mask=mask), full)
    hard = hps_exact_loss(c, d[:, :3], s[:, :3], beta=0.5, gamma=1e3)
    assert_close(hard, -torch.nn.functional.logsigmoid(0.5 * c - math.log(3) - 0.5 * 0.2))


def test_importance_estimator_k1_is_single_sample_hps():
    a, b = T(0.8, -0.2), T(0.1, 0.3)
    assert_close(hps_importance_loss(a, b[:, None], n_dispreferred=5, beta=0.5),
                 hps_loss(a, b, n_dispreferred=5, beta=0.5, log_n_offset=True))


def test_importance_estimator_converges_to_exact():
    """K = 200 000 seeded draws from q_gamma (and, importance-weighted, from a uniform proposal): the plug-in
    estimate is within 5e-3 of hps_exact_loss (its O(1/K) bias and O(1/sqrt K) noise are ~1e-3 here)."""
    beta, gamma = 0.5, 0.8
    logr = np.array([0.4, -0.3, 1.5, 0.0, -2.0])
    scores = np.array([1.0, 0.2, 2.5, -1.0, 0.7])
    exact = hps_exact_loss(T(1.0), torch.tensor(logr)[None], torch.tensor(scores)[None], beta=beta, gamma=gamma)
    rng = np.random.default_rng(2025)
    q = hardness_probs(scores, gamma)
    K = 200_000
    idx = rng.choice(len(q), size=K, p=q)
    est = hps_importance_loss(T(1.0), torch.tensor(logr[idx])[None], n_dispreferred=5, beta=beta)
    assert_close(est, exact, atol=5e-3, rtol=0)
    idx = rng.integers(len(q), size=K)
    log_w = torch.tensor(np.log(q[idx] * len(q)))[None]
    est_iw = hps_importance_loss(T(1.0), torch.tensor(logr[idx])[None], n_dispreferred=5, beta=beta, log_weights=log_w)
    assert_close(est_iw, exact, atol=5e-3, rtol=0)
    small = hps_importance_loss(T(1.0), torch.tensor(logr[idx[:10]])[None], n_dispreferred=5, beta=beta)
    assert not torch.allclose(small, exact, atol=5e-3)  # the test can tell a poor estimate from a good one


# ---------------------------------------------------------------- method names and metrics
@pytest.mark.parametrize("name, expected", [
    ("dpo-hps", ("dpo", "hps")), ("IPO-PL", ("ipo", "pl")), ("nca-bt", ("nca_pair", "bt")),
    ("nca_pair-bt", ("nca_pair", "bt")), ("exo-hps", ("exo_pair", "hps")), ("sppo-pl", ("sppo_hard", "pl")),
])
def test_parse_method_accepts(name, expected):
    assert parse_method(name) == expected


@pytest.mark.parametrize("name", ["dpo", "kto-hps", "dpo-listwise", "", "dpo_hps"])
def test_parse_method_rejects_with_all_valid_names(name):
    with pytest.raises(ValueError) as err:
        parse_method(name)
    assert all(m in str(err.value) for m in ALL_METHODS) and repr(name) in str(err.value)


def test_all_methods_lists_fifteen():
    assert len(ALL_METHODS) == 15
    assert ALL_METHODS["dpo-pl"].startswith("implemented")
    assert ALL_METHODS["ipo-pl"].startswith("generalised")


def test_reward_metrics_hand_values():
    """beta 0.5; chosen (2, 0) -> rewards (1, 0), rejected (0, 2) -> (0, 1): chosen 0.5, rejected 0.5,
    margins mean(1, -1) = 0, accuracies mean(1, 0) = 0.5."""
    m = reward_metrics(T(2.0, 0.0), T(0.0, 2.0), beta=0.5)
    assert m == {"rewards/chosen": 0.5, "rewards/rejected": 0.5, "rewards/margins": 0.0, "rewards/accuracies": 0.5}


def test_reward_metrics_at_the_reference_point_a_tie_is_not_a_win():
    """Before the first update the policy is the reference: every log-ratio is 0, chosen and rejected
    rewards tie, and no pair is won (accuracy 0, not 1). Equal non-zero rewards are ties too:
    chosen (1, 3) vs rejected (1, 1), beta 0.5 -> rewards (0.5, 1.5) vs (0.5, 0.5): one tie, one win -> 0.5."""
    m = reward_metrics(T(0.0, 0.0, 0.0), T(0.0, 0.0, 0.0), beta=0.1)
    assert m == {"rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/margins": 0.0, "rewards/accuracies": 0.0}
    assert reward_metrics(T(1.0, 3.0), T(1.0, 1.0), beta=0.5)["rewards/accuracies"] == 0.5


# ---------------------------------------------------------------- parity with TRL 1.16 DPOTrainer
def _trl_loss(loss_type, beta, label_smoothing, chosen_lr, rejected_lr, lengths=(4, 4)):
    """Run TRL's own DPOTrainer._compute_loss on one (chosen, rejected) pair without building a trainer.

    TRL 1.16 computes its losses inline in ``_compute_loss``; we call it unbound with a stub ``self`` (the
    attributes it reads) and a stub model whose per-token log-probs sum to the wanted sequence log-probs.
    ``lengths`` are the completion token counts, which TRL's ipo divides by."""
    from trl import DPOTrainer

    seq = max(lengths) + 2
    completion_mask = torch.zeros(2, seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        completion_mask[row, 1:1 + n] = 1
    ref = torch.tensor([-3.0, -5.0], dtype=torch.float64)
    log_probs = torch.zeros(2, seq - 1, dtype=torch.float64)
    log_probs[:, 0] = ref + torch.tensor([chosen_lr, rejected_lr], dtype=torch.float64)

    def model(**_):
        return SimpleNamespace(log_probs=log_probs, entropy=torch.zeros(2, seq - 1), mean_logits=torch.zeros(2, seq - 1),
                               is_top1=torch.zeros(2, seq - 1, dtype=torch.bool))

    model.training = True
    ident = lambda t: t  # noqa: E731
    stub = SimpleNamespace(
        model=model, accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=ident, gather=ident),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1,
    )
    inputs = {"input_ids": torch.zeros(2, seq, dtype=torch.long), "attention_mask": torch.ones(2, seq, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": ref[:1], "ref_rejected_logps": ref[1:]}
    return DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)


TRL_CASES = [("dpo", "sigmoid", 0.0), ("ipo", "ipo", 0.0), ("exo_pair", "exo_pair", 1e-3), ("exo_pair", "exo_pair", 0.2),
             ("nca_pair", "nca_pair", 0.0), ("sppo_hard", "sppo_hard", 0.0)]
TRL_LENGTHS = (5, 3)  # completion tokens of chosen and rejected: TRL's ipo divides the log-ratios by them

# The TRL parity points by hand, so the pair losses stay guarded where trl is not installed.
# beta = 0.25; sequence log-ratios (a, b) = (0.5, -0.25) and (-1.3, 2.0); z = beta (a - b) = 0.1875 and -0.825;
# log sig(z) = -log(1 + e^-z): log sig(0.1875) = -0.6037853, log sig(-0.1875) = -0.7912853,
# log sig(-0.825) = -1.1884167, log sig(0.825) = -0.3634167; sig(0.1875) = 0.5467382, sig(-0.825) = 0.3047033.
# - dpo: -log sig(z) = 0.6037853 and 1.1884167.
# - ipo on token-averaged ratios (a/5, b/3): h = 0.1 + 0.0833333 = 0.1833333 and -0.26 - 0.6666667 = -0.9266667;
#   (h - 1/(2 beta))^2 = (0.1833333 - 2)^2 = 3.3002778 and (-0.9266667 - 2)^2 = 8.5653778.
# - exo_pair: sig(z)(log sig(z) - log(1-eps)) + sig(-z)(log sig(-z) - log eps):
#   eps 1e-3, z 0.1875: 0.5467382 (-0.6037853 + 0.0010005) + 0.4532618 (-0.7912853 + 6.9077553) = 2.4427970;
#   eps 0.2, z 0.1875: 0.5467382 (-0.6037853 + 0.2231436) + 0.4532618 (-0.7912853 + 1.6094379) = 0.1627260;
#   eps 1e-3, z -0.825: 0.3047033 (-1.1884167 + 0.0010005) + 0.6952967 (-0.3634167 + 6.9077553) = 4.1884472;
#   eps 0.2, z -0.825: 0.3047033 (-1.1884167 + 0.2231436) + 0.6952967 (-0.3634167 + 1.6094379) = 0.5722325.
# - nca_pair: -log sig(beta a) - 0.5 log sig(-beta a) - 0.5 log sig(-beta b):
#   beta a = 0.125, beta b = -0.0625: 0.6325990 + 0.5 * 0.7575990 + 0.5 * 0.6623854 = 1.3425912;
#   beta a = -0.325, beta b = 0.5: 0.8687926 + 0.5 * 0.5437926 + 0.5 * 0.9740770 = 1.6277274.
# - sppo_hard: (a - 0.5/beta)^2 + (b + 0.5/beta)^2 = (0.5 - 2)^2 + (-0.25 + 2)^2 = 2.25 + 3.0625 = 5.3125
#   and (-1.3 - 2)^2 + (2 + 2)^2 = 10.89 + 16 = 26.89.
TRL_HAND = {  # (framework, eps) -> [(a, b, loss)] at beta = 0.25; a, b are sequence log-ratios (TRL's inputs)
    ("dpo", 0.0): [(0.5, -0.25, 0.6037853), (-1.3, 2.0, 1.1884167)],
    ("ipo", 0.0): [(0.5, -0.25, 3.3002778), (-1.3, 2.0, 8.5653778)],
    ("exo_pair", 1e-3): [(0.5, -0.25, 2.4427970), (-1.3, 2.0, 4.1884472)],
    ("exo_pair", 0.2): [(0.5, -0.25, 0.1627260), (-1.3, 2.0, 0.5722325)],
    ("nca_pair", 0.0): [(0.5, -0.25, 1.3425912), (-1.3, 2.0, 1.6277274)],
    ("sppo_hard", 0.0): [(0.5, -0.25, 5.3125), (-1.3, 2.0, 26.89)],
}


def _ours_at_trl_point(framework, a, b, beta, eps):
    ours_a, ours_b = (a / TRL_LENGTHS[0], b / TRL_LENGTHS[1]) if framework == "ipo" else (a, b)
    return pair_loss(framework, T(ours_a), T(ours_b), beta=beta, label_smoothing=eps)[0]


@pytest.mark.parametrize("framework, trl_name, eps", TRL_CASES)
def test_pair_loss_at_the_trl_parity_points_by_hand(framework, trl_name, eps):
    """Runs without trl: the values TRL's DPOTrainer gives at these points, derived by hand above (the
    parity test below checks TRL against the same numbers when it is installed)."""
    for a, b, expected in TRL_HAND[(framework, eps)]:
        assert_close(_ours_at_trl_point(framework, a, b, 0.25, eps), torch.tensor(expected, dtype=torch.float64), atol=2e-7, rtol=0)


@pytest.mark.parametrize("framework, trl_name, eps", TRL_CASES)
def test_pair_loss_matches_trl(framework, trl_name, eps):
    pytest.importorskip("trl")
    pairs = [(0.5, -0.25), (-1.3, 2.0), (3.0, 3.0), (12.0, -7.5)]
    for beta in (0.1, 0.25):
        for a, b in pairs:
            ours = _ours_at_trl_point(framework, a, b, beta, eps)
            trl = _trl_loss(trl_name, beta, eps, a, b, TRL_LENGTHS)
            assert_close(ours, trl.to(ours.dtype), atol=1e-5, rtol=1e-5)
    for a, b, expected in TRL_HAND[(framework, eps)]:  # TRL agrees with the hand values too
        assert_close(_trl_loss(trl_name, 0.25, eps, a, b, TRL_LENGTHS).double(), torch.tensor(expected, dtype=torch.float64), atol=2e-6, rtol=0)


# ---------------------------------------------------------------- unbiased single-draw estimator (7b)
@pytest.mark.parametrize("gamma_s,gamma_r", [(1.0, 0.0), (0.5, 3.0)])
def test_unbiased_estimator_expectation_is_the_exact_gradient(gamma_s, gamma_r):
    """Three responses: y+ and two dispreferred (N = 2), log-ratios a = 0.4, x = (0.2, -0.6), beta = 0.5,
    scores s = (1, -0.5). q = softmax(gamma_s s + gamma_r r) with r = beta x held fixed (no gradient).
    Exact loss L = softplus(z), z = log N + log sum_j q_j e^{r_j} - beta a, so by hand
    dL/da = -beta sig(z) and dL/dx_j = beta sig(z) p_j, p_j = q_j e^{r_j} / sum_k q_k e^{r_k}.
    Enumerating the draw j ~ p (the trainer's softmax(gamma_s s + (1 + gamma_r) r)) and weighting each
    single-draw gradient by p_j gives exactly that gradient; each draw's loss VALUE is L itself. The plain
    pair loss with the log N offset, averaged over j ~ q, has another gradient (it lacks the e^{r_j} weight)."""
    import math

    from hps_core.sampling.hardness import policy_hardness_probs
    from hps_core.train.losses import hps_unbiased_loss

    beta, a0, x0, s = 0.5, 0.4, [0.2, -0.6], [1.0, -0.5]
    r = [beta * v for v in x0]
    q = policy_hardness_probs(s, r, gamma_s, gamma_r)
    mass = sum(qj * math.exp(rj) for qj, rj in zip(q, r))
    p_hand = [qj * math.exp(rj) / mass for qj, rj in zip(q, r)]
    assert policy_hardness_probs(s, r, gamma_s, gamma_r + 1.0) == pytest.approx(p_hand, rel=1e-12)
    z = math.log(2) + math.log(mass) - beta * a0
    sig = 1 / (1 + math.exp(-z))
    hand = [-beta * sig, beta * sig * p_hand[0], beta * sig * p_hand[1]]

    def grads(loss_of):
        a = torch.tensor([a0], dtype=torch.float64, requires_grad=True)
        x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
        loss = loss_of(a, x)
        loss.sum().backward()
        return float(loss), [float(a.grad[0]), float(x.grad[0, 0]), float(x.grad[0, 1])]

    log_q = torch.log(torch.tensor([q], dtype=torch.float64))
    # the exact loss written out (q a constant): -log sig(beta a - log N - logsumexp_j(log q_j + beta x_j))
    exact_value, exact = grads(lambda a, x: -torch.nn.functional.logsigmoid(
        beta * a - math.log(2) - torch.logsumexp(log_q + beta * x, dim=1)))
    assert exact == pytest.approx(hand, rel=1e-10)
    assert exact_value == pytest.approx(math.log1p(math.exp(z)), rel=1e-12)
    log_mass = torch.tensor([math.log(mass)], dtype=torch.float64)
    expected = [0.0, 0.0, 0.0]
    for j in (0, 1):
        value, g = grads(lambda a, x: hps_unbiased_loss(a, x[:, j], log_mass, n_dispreferred=2, beta=beta))
        assert value == pytest.approx(exact_value, rel=1e-12)
        expected = [e + p_hand[j] * gj for e, gj in zip(expected, g)]
    assert expected == pytest.approx(hand, rel=1e-10)
    biased = [0.0, 0.0, 0.0]
    for j in (0, 1):
        _, g = grads(lambda a, x: hps_loss(a, x[:, j], n_dispreferred=2, beta=beta, log_n_offset=True))
        biased = [b + q[j] * gj for b, gj in zip(biased, g)]
    assert biased != pytest.approx(hand, rel=1e-3)


# ---------------------------------------------------------------- arguments reach the loss, errors name the function
def test_weighted_hps_passes_framework_and_smoothing_and_accepts_w1_one_half():
    """w1 = 0.5 (two equally good answers) is allowed; framework and label_smoothing reach both terms:
    ipo and cDPO (eps 0.2) values differ from plain DPO's."""
    y1, y2, ys = T(1.0, 0.2), T(0.5, 0.1), T(0.0, 0.3)
    for kw in ({"framework": "ipo"}, {"framework": "dpo", "label_smoothing": 0.2}, {"framework": "exo_pair", "label_smoothing": 0.3}):
        want = 0.5 * pair_loss(kw["framework"], y1, ys, beta=0.5, label_smoothing=kw.get("label_smoothing", 0.0)) \
            + 0.5 * pair_loss(kw["framework"], y2, ys, beta=0.5, label_smoothing=kw.get("label_smoothing", 0.0))
        assert_close(weighted_hps_loss(y1, y2, ys, w1=0.5, n_dispreferred=4, beta=0.5, **kw), want)
        assert not torch.allclose(want, weighted_hps_loss(y1, y2, ys, w1=0.5, n_dispreferred=4, beta=0.5))
    with pytest.raises(ValueError) as exc:
        weighted_hps_loss(y1, y2, ys, w1=0.49, n_dispreferred=4, beta=0.5)
    assert str(exc.value) == "w1 must lie in [0.5, 1] (the better answer weighs at least as much), got 0.49."


def test_listwise_takes_framework_aliases_and_the_mask_for_plackett_luce():
    """"sigmoid" is DPO's TRL name: its listwise loss is Plackett-Luce, with the padding masked out."""
    x = torch.tensor([[2.0, 1.0, 1e4], [2.0, 1.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert_close(listwise_loss("sigmoid", x, beta=1.0, mask=mask), T(0.3132617, 0.7208676), atol=1e-7, rtol=0)
    with pytest.raises(ValueError) as exc:
        listwise_loss("sigmoid", x, beta=1.0, label_smoothing=0.1)
    assert str(exc.value) == "dpo-pl (Plackett-Luce) has no label smoothing; set label_smoothing=0."
    # exo_pair's smoothing reaches each stage's pair loss: x = (1, 0.5, 0), stages mean(l(0.5), l(1)) + l(0.5)
    x3 = T(1.0, 0.5, 0.0)[None]
    for eps in (0.0, 0.2):
        l = lambda a, b: pair_loss("exo_pair", T(a), T(b), beta=0.5, label_smoothing=eps)  # noqa: E731
        assert_close(listwise_loss("exo", x3, beta=0.5, label_smoothing=eps), (l(1.0, 0.5) + l(1.0, 0.0)) / 2 + l(0.5, 0.0))


@pytest.mark.parametrize("name, call", [
    ("pl_loss", lambda x, m: pl_loss(x, beta=1.0, mask=m)),
    ("listwise_loss", lambda x, m: listwise_loss("ipo", x, beta=1.0, mask=m)),
    ("hps_exact_loss", lambda x, m: hps_exact_loss(x[..., 0], x, x, beta=1.0, gamma=1.0, mask=m)),
    ("hps_importance_loss", lambda x, m: hps_importance_loss(x[..., 0], x, n_dispreferred=2, beta=1.0, mask=m)),
])
def test_shape_errors_name_the_loss_and_both_shapes(name, call):
    with pytest.raises(ValueError) as exc:
        call(torch.zeros(3, dtype=torch.float64), None)
    assert str(exc.value) == f"{name}: expected a (batch, n) tensor, got shape (3,)."
    with pytest.raises(ValueError) as exc:
        call(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 2, dtype=torch.bool))
    assert str(exc.value) == f"{name}: mask shape (2, 2) != values shape (2, 3)."
    with pytest.raises(ValueError) as exc:
        call(torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[True] * 3, [False] * 3]))
    min_valid = 2 if name in ("pl_loss", "listwise_loss") else 1
    assert str(exc.value) == f"{name}: every row needs at least {min_valid} unmasked response(s)."


def _exact_by_hand(r_plus, rs, scores, gamma):
    """-log sig(r+ - log(N sum_j q_j e^{r_j})) with q = softmax(gamma s), in Python floats."""
    w = [math.exp(gamma * s) for s in scores]
    q = [x / sum(w) for x in w]
    z = r_plus - math.log(len(rs) * sum(qj * math.exp(r) for qj, r in zip(q, rs)))
    return math.log1p(math.exp(-z))


def test_hps_exact_per_example_gamma_in_float64_by_hand():
    """Two rows, two negatives each (so a gamma vector that is not reshaped to a column would broadcast
    across negatives instead of rows); gamma 0.1 and 0.7 are not float32 numbers, and in float64 they stay
    exact: the loss matches the Python-float formula to 1e-13. The loss comes back in the log-ratios' dtype
    whatever the scores' dtype."""
    chosen, neg = T(0.4, -0.2), T(0.1, 0.3, -0.5, 0.2).reshape(2, 2)
    scores = T(1.3, 0.2, -0.7, 2.9).reshape(2, 2)
    got = hps_exact_loss(chosen, neg, scores, beta=0.9, gamma=torch.tensor([0.1, 0.7], dtype=torch.float64))
    want = [_exact_by_hand(0.9 * c, [0.9 * x for x in n], sc, g)
            for c, n, sc, g in zip(chosen.tolist(), neg.tolist(), scores.tolist(), (0.1, 0.7))]
    assert got.dtype == torch.float64 and got.tolist() == pytest.approx(want, rel=1e-13, abs=0)
    scalar = hps_exact_loss(chosen, neg, scores, beta=0.9, gamma=0.1)
    want_scalar = [_exact_by_hand(0.9 * c, [0.9 * x for x in n], sc, 0.1)
                   for c, n, sc in zip(chosen.tolist(), neg.tolist(), scores.tolist())]
    assert scalar.tolist() == pytest.approx(want_scalar, rel=1e-13, abs=0)
    three = hps_exact_loss(T(0.5), T(0.2, -0.4, 1.0)[None], T(9.0, 1.0, 2.0)[None], beta=0.5, gamma=0.3)
    assert three.item() == pytest.approx(_exact_by_hand(0.25, [0.1, -0.2, 0.5], [9.0, 1.0, 2.0], 0.3), rel=1e-13)
    low = hps_exact_loss(chosen.float(), neg.float(), scores, beta=0.9, gamma=0.1)
    assert low.dtype == torch.float32 and low.tolist() == pytest.approx(want_scalar, rel=1e-6)


def test_masks_may_be_integers():
    x = torch.tensor([[2.0, 1.0, 1e4], [2.0, 1.0, 0.0]], dtype=torch.float64)
    as_int = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert_close(pl_loss(x, beta=1.0, mask=as_int), pl_loss(x, beta=1.0, mask=as_int.bool()))
    assert_close(hps_importance_loss(x[:, 0], x, n_dispreferred=3, beta=0.5, mask=as_int),
                 hps_importance_loss(x[:, 0], x, n_dispreferred=3, beta=0.5, mask=as_int.bool()))
    assert torch.isfinite(hps_importance_loss(x[:, 0], x, n_dispreferred=3, beta=0.5, mask=as_int)).all()



def test_pair_loss_takes_trl_names_and_refuses_a_beta_that_is_no_number():
    a, b = T(0.3, -1.0), T(0.1, 0.4)
    for alias, name in (("sigmoid", "dpo"), ("exo", "exo_pair"), ("nca", "nca_pair"), ("sppo", "sppo_hard")):
        assert_close(pair_loss(alias, a, b, beta=0.5), pair_loss(name, a, b, beta=0.5))
    for bad in ("abc", None, float("nan"), 0.0):
        with pytest.raises(ValueError) as exc:
            pair_loss("dpo", a, b, beta=bad)
        assert str(exc.value) == f"beta must be a finite number > 0, got {bad!r}."


def test_single_draw_losses_keep_the_log_ratios_dtype_and_the_offset_checks():
    """Log-ratios in float32 with log-mass / log-weights in float64: the loss stays float32 (the dtype the
    trainer computes in). hps_loss's offset form takes TRL's "sigmoid" name for dpo and refuses a cDPO rate
    of 0.5 (the bound is open: at 0.5 the loss no longer prefers either response)."""
    from hps_core.train.losses import hps_unbiased_loss

    a, b = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4])
    assert hps_unbiased_loss(a, b, torch.tensor([0.2, 0.1], dtype=torch.float64), n_dispreferred=3, beta=0.5).dtype == torch.float32
    assert hps_importance_loss(a, b[:, None], n_dispreferred=3, beta=0.5,
                               log_weights=torch.zeros(2, 1, dtype=torch.float64)).dtype == torch.float32
    assert_close(hps_loss(a, b, n_dispreferred=4, beta=0.5, framework="sigmoid", log_n_offset=True),
                 hps_loss(a, b, n_dispreferred=4, beta=0.5, framework="dpo", log_n_offset=True))
    with pytest.raises(ValueError) as exc:
        hps_loss(a, b, n_dispreferred=4, beta=0.5, label_smoothing=0.5, log_n_offset=True)
    assert str(exc.value) == "dpo label_smoothing must lie in [0, 0.5), got 0.5."


def test_importance_estimate_in_float64_by_hand():
    """K = 3 samples r = beta x = 0.5 * (0.2, -0.4, 1.0), weights 1: Z_K = mean(e^r); N = 5, r+ = 0.25:
    L = -log sig(r+ - log 5 - log Z_K), matched to 1e-13 (the sample count must not drop to float32)."""
    r = [0.1, -0.2, 0.5]
    z = 0.25 - math.log(5) - math.log(sum(math.exp(x) for x in r) / 3)
    got = hps_importance_loss(T(0.5), T(0.2, -0.4, 1.0)[None], n_dispreferred=5, beta=0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-z)), rel=1e-13, abs=0)
