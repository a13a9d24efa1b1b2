"""Preference losses: 5 pairwise frameworks x {BT, PL, HPS} (HPS paper, Zou et al., ICML 2025, arXiv 2502.14400).

Every function takes *log-ratios* ``log pi_theta(y|x) - log pi_ref(y|x)`` summed over response tokens (for
IPO the caller passes token-averaged ones, as TRL does) and returns a per-example loss; the implicit reward is
``r = beta * log-ratio`` (docs/HPS_METHOD.md, sections 1-3). ``-log sigmoid`` is always ``-logsigmoid`` and
every log-sum of exponentials is a logsumexp, so nothing overflows for large rewards.

Methods are named ``"<framework>-<model>"`` (``parse_method``); ``ALL_METHODS`` gives the status of the 15:
- ``*-bt``: ``pair_loss`` on ``(y+, y-)`` with ``y-`` picked by a fixed rule (``hps_core.sampling``).
- ``*-hps``: ``hps_loss``, the single-draw HPS loss: ``pair_loss`` on ``(y+, y_s)``, ``y_s ~ q``;
  optionally with the ``-log N`` offset (DPO only). In expectation over the draw it is the q-weighted pair
  loss ``E_q[l(r+ - r_j)]``, NOT the exact objective: its expected gradient lacks the ``exp(r_j)`` weight of
  the exact loss's. ``hps_unbiased_loss`` is the single-draw estimator whose expected gradient IS the exact
  loss's (draw ``j`` with probability proportional to ``q_j exp(r_j)``). ``hps_exact_loss`` is the full
  objective, ``hps_importance_loss`` a K-sample estimate of it (tests and diagnostics).
- ``dpo-pl``: the Plackett-Luce loss ``pl_loss`` (exact).
- ``{ipo,exo_pair,nca_pair,sppo_hard}-pl``: the paper does not spell out a listwise form for these, so this
  project defines one and says so (status "generalised"): PL's stage decomposition with the framework's pair
  loss as the stage term, ``L = sum_{k<n} mean_{j>k} pair_loss(y_(k), y_(j))`` over valid (unmasked) ranks.
  Each stage weighs like one PL stage, and with ``n = 2`` it is exactly the BT pair loss. It costs ``n``
  sequences per prompt, like PL, which is the comparison the paper's cost table makes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hps_core.config.methods import (  # noqa: F401  (re-exported: the names were born here)
    ALL_METHODS,
    FRAMEWORK_ALIASES,
    PAIR_FRAMEWORKS,
    PREFERENCE_MODELS,
    parse_method,
)

EXO_DEFAULT_EPS = 1e-3  # TRL refuses eps=0 for exo_pair; the EXO paper recommends 1e-3
_SMOOTHED = ("dpo", "exo_pair")  # frameworks where label_smoothing means something


def _check_beta(beta: float) -> None:
    try:
        ok = math.isfinite(float(beta)) and float(beta) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}.")


def _dpo_from_logits(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """cDPO: ``-(1-eps) log sig(z) - eps log sig(-z)``; ``eps = 0`` is plain DPO."""
    loss = -F.logsigmoid(logits)
    return loss if eps == 0 else (1 - eps) * loss - eps * F.logsigmoid(-logits)


def pair_loss(framework: str, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, *,
              beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-example pair loss of ``framework`` (HPS_METHOD.md, section 3), ``a`` chosen, ``b`` rejected, ``h = a - b``.

    - dpo: ``-(1-eps) log sig(beta h) - eps log sig(-beta h)`` (cDPO for eps in (0, 0.5)).
    - ipo: ``(h - 1/(2 beta))^2`` on the log-ratios as given (pass token-averaged ones).
    - exo_pair: ``sig(bh)(log sig(bh) - log(1-eps)) + sig(-bh)(log sig(-bh) - log eps)``, ``0 < eps < 1``;
      ``eps = 0`` means the EXO default 1e-3 (TRL instead raises).
    - nca_pair: ``-log sig(beta a) - 0.5 log sig(-beta a) - 0.5 log sig(-beta b)``.
    - sppo_hard: ``(a - 0.5/beta)^2 + (b + 0.5/beta)^2``.
    Nonzero ``label_smoothing`` is rejected for ipo, nca_pair and sppo_hard, which have no such parameter.
    """
    framework = FRAMEWORK_ALIASES.get(framework, framework)
    if framework not in PAIR_FRAMEWORKS:
        raise ValueError(f"Unknown pair framework {framework!r}; valid: {', '.join(PAIR_FRAMEWORKS)}.")
    _check_beta(beta)
    eps = float(label_smoothing)
    if eps != 0 and framework not in _SMOOTHED:
        raise ValueError(f"label_smoothing={eps} has no meaning for {framework!r}; set it to 0 (only dpo, exo_pair use it).")
    if framework == "dpo" and not 0 <= eps < 0.5:
        raise ValueError(f"dpo label_smoothing (cDPO flip rate) must lie in [0, 0.5), got {eps}.")
    a, b = chosen_logratios, rejected_logratios
    if framework == "dpo":
        return _dpo_from_logits(beta * (a - b), eps)
    if framework == "ipo":
        return (a - b - 1 / (2 * beta)) ** 2
    if framework == "exo_pair":
        eps = EXO_DEFAULT_EPS if eps == 0 else eps
        if not 0 < eps < 1:
            raise ValueError(f"exo_pair label_smoothing must lie in (0, 1), got {eps}.")
        z = beta * (a - b)
        return (torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))
                + torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps)))
    if framework == "nca_pair":
        ra, rb = beta * a, beta * b
        return -F.logsigmoid(ra) - 0.5 * F.logsigmoid(-ra) - 0.5 * F.logsigmoid(-rb)
    return (a - 0.5 / beta) ** 2 + (b + 0.5 / beta) ** 2  # sppo_hard


def _log_n(n_dispreferred, like: torch.Tensor) -> torch.Tensor:
    n = torch.as_tensor(n_dispreferred, dtype=like.dtype, device=like.device)
    if torch.any(n < 1):
        raise ValueError(f"n_dispreferred must be >= 1 for every example, got min {n.min().item()}.")
    return torch.log(n)


def hps_loss(chosen_logratios: torch.Tensor, sampled_logratios: torch.Tensor, *, n_dispreferred, beta: float,
             framework: str = "dpo", label_smoothing: float = 0.0, log_n_offset: bool = False) -> torch.Tensor:
    """Single-draw HPS loss on ``(y+, y_s)``, ``y_s ~ q`` drawn by ``hps_core.sampling`` (or the trainer).

    Without the offset this is ``pair_loss(framework, ...)`` (the reference code's form). With
    ``log_n_offset=True`` (dpo only) it is ``-log sig(beta h - log N)``: ``N e^{r(y_s)}`` plugged in for
    ``N E_q[e^r]`` of ``hps_exact_loss``. Either way its expectation over ``y_s ~ q`` is the q-weighted pair
    loss, a biased estimate of the exact loss (see ``hps_unbiased_loss``). ``n_dispreferred`` (N) is an int
    or a per-example tensor; with ``N = 1`` (n = 2) the offset vanishes and HPS equals DPO.
    """
    if not log_n_offset:
        return pair_loss(framework, chosen_logratios, sampled_logratios, beta=beta, label_smoothing=label_smoothing)
    if FRAMEWORK_ALIASES.get(framework, framework) != "dpo":
        raise ValueError(f"log_n_offset=True is defined for framework 'dpo' only, got {framework!r}.")
    _check_beta(beta)
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo label_smoothing must lie in [0, 0.5), got {label_smoothing}.")
    logits = beta * (chosen_logratios - sampled_logratios) - _log_n(n_dispreferred, chosen_logratios)
    return _dpo_from_logits(logits, float(label_smoothing))


def hps_unbiased_loss(chosen_logratios: torch.Tensor, sampled_logratios: torch.Tensor, log_mass: torch.Tensor, *,
                      n_dispreferred, beta: float) -> torch.Tensor:
    """Single-draw HPS loss whose gradient is, in expectation, the exact loss's (HPS_METHOD.md 7b).

    The exact loss is ``L = softplus(z)``, ``z = log N + log sum_j q_j e^{r_j} - r+`` (``q`` without gradient),
    so ``grad L = sig(z) (sum_j p_j grad r_j - grad r+)`` with ``p_j = q_j e^{r_j} / sum_k q_k e^{r_k}``. Draw
    ``y_s ~ p`` (the trainer does: ``softmax(gamma_s s + (1 + gamma_r) r)``) and this returns
    ``softplus(z)`` in value, with gradient ``sg[sig(z)] (grad r_s - grad r+)``: unbiased for ``grad L``.
    ``log_mass`` is ``log sum_j q_j e^{r_j}`` over the dispreferred responses, computed from the implicit
    rewards the draw used (no gradient); ``r = beta * log-ratio``.
    """
    _check_beta(beta)
    r_chosen, r_sampled = beta * chosen_logratios, beta * sampled_logratios
    z = _log_n(n_dispreferred, chosen_logratios) + log_mass.to(r_chosen.dtype).detach() - r_chosen
    weight = torch.sigmoid(z).detach()
    pair = weight * (r_sampled - r_chosen)
    return F.softplus(z).detach() + pair - pair.detach()


def _valid_mask(x: torch.Tensor, mask, min_valid: int, what: str) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{what}: expected a (batch, n) tensor, got shape {tuple(x.shape)}.")
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    if m.shape != x.shape:
        raise ValueError(f"{what}: mask shape {tuple(m.shape)} != values shape {tuple(x.shape)}.")
    if torch.any(m.sum(dim=1) < min_valid):
        raise ValueError(f"{what}: every row needs at least {min_valid} unmasked response(s).")
    return m


def pl_loss(ranked_logratios: torch.Tensor, *, beta: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plackett-Luce loss ``-sum_k [r_(k) - logsumexp_{j>=k} r_(j)]`` (HPS_METHOD.md, section 2).

    ``ranked_logratios`` is (batch, n) with column 0 the best; ``mask`` (bool, True = real response) drops
    padding for groups with fewer than n responses. The suffix logsumexp is ``flip + logcumsumexp``; masked
    entries get the dtype's most negative finite value (not -inf) so gradients stay finite.
    """
    _check_beta(beta)
    m = _valid_mask(ranked_logratios, mask, 2, "pl_loss")
    r = (beta * ranked_logratios).masked_fill(~m, torch.finfo(ranked_logratios.dtype).min)
    suffix_lse = torch.logcumsumexp(r.flip(-1), dim=-1).flip(-1)
    # The last valid rank contributes r - r = 0, matching the sum over k = 1..n-1.
    return -torch.where(m, r - suffix_lse, torch.zeros_like(r)).sum(dim=-1)


def listwise_loss(framework: str, ranked_logratios: torch.Tensor, *, beta: float, mask: torch.Tensor | None = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """The ``<framework>-pl`` loss: ``pl_loss`` for dpo, else the stagewise generalisation (module docstring)."""
    framework = FRAMEWORK_ALIASES.get(framework, framework)
    if framework == "dpo":
        if label_smoothing != 0:
            raise ValueError("dpo-pl (Plackett-Luce) has no label smoothing; set label_smoothing=0.")
        return pl_loss(ranked_logratios, beta=beta, mask=mask)
    m = _valid_mask(ranked_logratios, mask, 2, "listwise_loss")
    n = ranked_logratios.shape[1]
    a = ranked_logratios.unsqueeze(2).expand(-1, n, n)  # a[:, k, j] = x_k
    b = ranked_logratios.unsqueeze(1).expand(-1, n, n)  # b[:, k, j] = x_j
    pairs = pair_loss(framework, a, b, beta=beta, label_smoothing=label_smoothing)
    upper = torch.ones(n, n, dtype=torch.bool, device=m.device).triu(1)
    valid = upper & m.unsqueeze(2) & m.unsqueeze(1)  # k < j, both real
    n_lower = valid.sum(dim=2)
    stage = torch.where(valid, pairs, torch.zeros_like(pairs)).sum(dim=2) / n_lower.clamp(min=1)
    return stage.sum(dim=1)


def _log_mean_negative_term(dispreferred_logratios, beta, log_q, m) -> torch.Tensor:
    """``log(N * E_q[e^r])`` with ``r = beta * x`` over valid entries."""
    neg = torch.finfo(dispreferred_logratios.dtype).min
    n_valid = m.sum(dim=1).to(dispreferred_logratios.dtype)
    terms = (log_q + beta * dispreferred_logratios).masked_fill(~m, neg)
    return torch.log(n_valid) + torch.logsumexp(terms, dim=1)


def hps_exact_loss(chosen_logratios: torch.Tensor, dispreferred_logratios: torch.Tensor,
                   dispreferred_scores: torch.Tensor, *, beta: float, gamma, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Full HPS objective ``-log(e^{r+} / (e^{r+} + N E_{q_gamma}[e^r]))`` (HPS_METHOD.md, section 2, reconstructed).

    Log space: ``-log sig(r+ - log N - logsumexp_j(log q_j + r_j))``. ``N`` counts the unmasked dispreferred
    responses per row; ``gamma`` is a float or per-example tensor. ``gamma = 0`` gives the InfoNCE/softmax
    loss over the group; ``N = 1`` gives DPO. It needs all n log-ratios, so it is for tests and diagnostics.
    """
    _check_beta(beta)
    m = _valid_mask(dispreferred_logratios, mask, 1, "hps_exact_loss")
    g = torch.as_tensor(gamma, dtype=dispreferred_scores.dtype, device=dispreferred_scores.device)
    g = g.reshape(-1, 1) if g.dim() else g
    s = (g * dispreferred_scores).masked_fill(~m, float("-inf"))
    log_q = torch.log_softmax(s, dim=1).to(dispreferred_logratios.dtype)
    log_q = log_q.masked_fill(~m, 0.0)  # masked out again below; avoids -inf arithmetic
    log_z = _log_mean_negative_term(dispreferred_logratios, beta, log_q, m)
    return -F.logsigmoid(beta * chosen_logratios - log_z)


def hps_importance_loss(chosen_logratios: torch.Tensor, sampled_logratios: torch.Tensor, *, n_dispreferred, beta: float,
                        log_weights: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """K-sample estimate of ``hps_exact_loss`` from negatives ``y_1..y_K`` (columns of ``sampled_logratios``).

    Estimator: ``E_q[e^r] ~= Z_K = (1/K) sum_k w_k e^{r_k}`` plugged into the objective,
    ``L_K = -log sig(r+ - log N - log Z_K)``. Draw the ``y_k`` i.i.d. from ``q_gamma`` and leave
    ``log_weights=None`` (w = 1), or draw them from any proposal p covering q and pass
    ``log_weights = log q(y_k) - log p(y_k)`` (importance weighting). ``Z_K`` is unbiased and ``L_K`` is a
    concave function of it, so ``E[L_K] <= L_exact`` with an O(1/K) gap; ``L_K -> L_exact`` as ``K`` grows.
    ``K = 1`` with w = 1 is ``hps_loss(..., log_n_offset=True)``. ``mask`` drops padded samples from K.
    """
    _check_beta(beta)
    m = _valid_mask(sampled_logratios, mask, 1, "hps_importance_loss")
    k = m.sum(dim=1).to(sampled_logratios.dtype)
    lw = torch.zeros_like(sampled_logratios) if log_weights is None else log_weights.to(sampled_logratios.dtype)
    terms = (lw + beta * sampled_logratios).masked_fill(~m, torch.finfo(sampled_logratios.dtype).min)
    log_z = torch.logsumexp(terms, dim=1) - torch.log(k)
    return -F.logsigmoid(beta * chosen_logratios - _log_n(n_dispreferred, chosen_logratios) - log_z)


def weighted_hps_loss(first_logratios: torch.Tensor, second_logratios: torch.Tensor, sampled_logratios: torch.Tensor, *,
                      w1: float, n_dispreferred, beta: float, framework: str = "dpo", label_smoothing: float = 0.0,
                      log_n_offset: bool = False) -> torch.Tensor:
    """Weighted HPS for two acceptable answers: ``w1 L_HPS(y_(1)) + (1 - w1) L_HPS(y_(2))``, ``0.5 <= w1 <= 1``.

    Both terms use the same negative ``y_s ~ q_gamma`` drawn from ``y_3..y_n`` (``n_dispreferred = n - 2``);
    HPS_METHOD.md, section 2 (reconstructed). ``w1 = 1`` is plain HPS on ``y_(1)``.
    """
    if not (isinstance(w1, (int, float)) and 0.5 <= w1 <= 1):
        raise ValueError(f"w1 must lie in [0.5, 1] (the better answer weighs at least as much), got {w1!r}.")
    kw = dict(n_dispreferred=n_dispreferred, beta=beta, framework=framework,
              label_smoothing=label_smoothing, log_n_offset=log_n_offset)
    return (w1 * hps_loss(first_logratios, sampled_logratios, **kw)
            + (1 - w1) * hps_loss(second_logratios, sampled_logratios, **kw))


@torch.no_grad()
def reward_metrics(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> dict[str, float]:
    """TRL-named batch means of the implicit rewards ``beta * log-ratio`` (names match DPOTrainer's logs)."""
    chosen, rejected = beta * chosen_logratios.detach().float(), beta * rejected_logratios.detach().float()
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
    }
