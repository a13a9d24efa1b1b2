"""Choosing the negative of a preference group: hardness sampling, BT baselines, gamma schedules.

Hard Preference Sampling (HPS; Zou, Lin, Li, Zhou, ICML 2025, arXiv 2502.14400) turns a group of
``n >= 2`` scored responses into ONE training pair ``(y+, y_s)``: ``y+`` is the best-scored response and
``y_s`` is drawn from the dispreferred set with the hardness distribution
``q_gamma(y_j) = softmax_j(gamma * s_j)`` (docs/HPS_METHOD.md, section 2). The BT baselines pick the
negative by a fixed rule instead (``random``, ``max_min``, ``max_max``).

Assumptions
-----------
- Scores are finite real numbers, higher is better (raw reward-model scores of any scale; the
  reference recipe's Skywork scores reach tens, tests go to 1e4).
- Everything here is pure numpy. Randomness comes only from the ``np.random.Generator`` the caller
  passes, never from numpy's global RNG (the reference sampler's unseeded global RNG is a defect we avoid).
- Gamma schedules are functions of training progress (optimizer step or epoch), never of the row
  position: the reference code's row-position schedule becomes a uniform mix once the trainer shuffles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hps_core.config.vocab import BT_RULES, REFERENCE_GAMMA_STAGES, SCHEDULE_KINDS  # noqa: F401  (re-exported: the rules and kinds implemented here)

SELECTION_RULES = ("hps",) + BT_RULES
# The reference code's stages: gamma -5, -3, -1, +1, +3, each held for 20 % of training (never reaches +5).
REFERENCE_STAGES = REFERENCE_GAMMA_STAGES


def _finite_scores(scores, what: str, min_len: int = 1) -> np.ndarray:
    """Return ``scores`` as a 1-D float64 array, or raise ValueError naming what was wrong."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D list of scores, got shape {arr.shape}.")
    if arr.size < min_len:
        raise ValueError(f"{what}: expected at least {min_len} score(s), got {arr.size}.")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{what}: scores must be finite; found {float(arr[bad[0]])!r} at position {int(bad[0])} "
            f"({bad.size} non-finite in total). Drop or re-score those responses."
        )
    return arr


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), got {type(rng).__name__}; "
            "the global numpy RNG is never used so that every draw is reproducible."
        )


def hardness_probs(scores, gamma: float) -> np.ndarray:
    """Hardness distribution ``q_gamma = softmax(gamma * scores)`` over the dispreferred responses.

    HPS paper, section 2 of docs/HPS_METHOD.md. ``gamma > 0`` favours hard negatives (high score, close to
    ``y+``), ``gamma = 0`` is uniform, ``gamma < 0`` favours easy ones. Computed in log space with a
    max-shift (a hand-written logsumexp), so scores of magnitude 1e4 with gamma up to 1e3 neither overflow
    nor underflow to an all-zero vector (the reference sampler exponentiated raw rewards and overflowed).

    Raises ValueError for empty input or non-finite scores/gamma.
    """
    return policy_hardness_probs(scores, None, gamma, 0.0)


def policy_hardness_probs(scores, rewards, gamma_s: float, gamma_r: float) -> np.ndarray:
    """On-policy hardness ``q(j) = softmax_j(gamma_s * s_j + gamma_r * r_j)`` (HPS_METHOD.md, section 7b).

    ``scores`` are the reward-model scores, ``rewards`` the policy's implicit rewards
    ``r_j = beta * (log pi_theta - log pi_ref)(y_j | x)`` (treated as constants: no gradient flows through
    the draw). ``gamma_r = 0`` (or ``rewards=None``) is score hardness, ``gamma_s = 0`` purely on-policy.
    """
    s = _finite_scores(scores, "hardness_probs")
    for name, g in (("gamma", gamma_s), ("gamma_r", gamma_r)):
        if not math.isfinite(float(g)):
            raise ValueError(f"hardness_probs: {name} must be finite, got {g!r}.")
    logits = float(gamma_s) * s
    if rewards is not None and float(gamma_r) != 0.0:
        r = _finite_scores(rewards, "hardness_probs (policy rewards)")
        if r.shape != s.shape:
            raise ValueError(f"hardness_probs: {r.size} policy rewards for {s.size} scores; give one per response.")
        logits = logits + float(gamma_r) * r
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"hardness_probs: gamma * score overflows float64 (gamma={gamma_s!r}, gamma_r={gamma_r!r}, "
                         f"max |score|={np.abs(s).max():g}).")
    shifted = logits - logits.max()
    log_q = shifted - np.log(np.exp(shifted).sum())  # the max term contributes exp(0)=1, so the sum is >= 1
    return np.exp(log_q)


def draw_index(q: np.ndarray, rng: np.random.Generator) -> int:
    """One index drawn from the probabilities ``q`` by inverse CDF: exactly one uniform per call, so a
    seeded stream stays aligned whatever the probabilities are."""
    _check_rng(rng)
    cdf = np.cumsum(q)
    idx = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    # u * cdf[-1] can round up to cdf[-1]; fall back to the last response with non-zero probability.
    return idx if idx < q.size else int(np.flatnonzero(q)[-1])


def rank_group(scores) -> tuple[int, list[int]]:
    """Split one group into ``(preferred_index, dispreferred_indices)``.

    Rule: the highest score is preferred. Ties at the top are broken by the earliest position in the input
    (stable, like ``np.argmax``); the other responses tied at the top are KEPT in the dispreferred set, in
    input order, so nothing is dropped silently (the reference sampler dropped them). A tied negative is the
    hardest possible one; ``count_top_ties`` lets callers record how often that happens.

    Raises ValueError for fewer than 2 responses or non-finite scores.
    """
    s = _finite_scores(scores, "rank_group", min_len=2)
    best = int(np.argmax(s))
    return best, [i for i in range(s.size) if i != best]


def count_top_ties(scores) -> int:
    """Number of responses sharing the maximum score besides the preferred one (0 when the top is unique)."""
    s = _finite_scores(scores, "count_top_ties", min_len=2)
    return int(np.count_nonzero(s == s.max()) - 1)


def draw_negative(dispreferred_scores, gamma: float, rng: np.random.Generator) -> int:
    """Draw ONE index (into ``dispreferred_scores``) from ``q_gamma``: the single-sample HPS estimate."""
    _check_rng(rng)
    return draw_index(hardness_probs(dispreferred_scores, gamma), rng)


def pick_negative(rule: str, dispreferred_scores, rng: np.random.Generator) -> int:
    """BT baseline negative: ``random`` (uniform), ``max_min`` (lowest score: best vs worst, the
    Online-RLHF recipe) or ``max_max`` (highest dispreferred score: best vs second best).
    Ties in ``max_min``/``max_max`` go to the earliest index."""
    if rule not in BT_RULES:
        raise ValueError(f"Unknown BT negative rule {rule!r}; valid rules: {', '.join(BT_RULES)}.")
    s = _finite_scores(dispreferred_scores, f"pick_negative({rule!r})")
    if rule == "random":
        _check_rng(rng)
        return int(rng.integers(s.size))
    return int(np.argmin(s)) if rule == "max_min" else int(np.argmax(s))


def select_negative(rule: str, dispreferred_scores, rng: np.random.Generator, gamma: float | None = None) -> int:
    """One dispatcher for the group builder: ``rule`` in ``SELECTION_RULES`` = hps, random, max_min, max_max.

    ``hps`` needs ``gamma``; the BT rules ignore it (so a call site may always pass the scheduled gamma).
    Returns an index into ``dispreferred_scores``.
    """
    if rule == "hps":
        if gamma is None:
            raise ValueError("select_negative('hps', ...) needs gamma (the hardness temperature of q_gamma).")
        return draw_negative(dispreferred_scores, gamma, rng)
    if rule not in BT_RULES:
        raise ValueError(f"Unknown negative-selection rule {rule!r}; valid rules: {', '.join(SELECTION_RULES)}.")
    return pick_negative(rule, dispreferred_scores, rng)


@dataclass(frozen=True)
class GammaSchedule:
    """Gamma at optimizer step ``step`` (0-based) of a run of ``total_steps`` steps.

    Kinds:
    - ``constant``: ``gamma`` throughout.
    - ``linear``: ``gamma_start + (gamma_end - gamma_start) * step / (total_steps - 1)``: ``gamma_start`` on
      the first step and ``gamma_end`` on the last one (clamped after; a one-step run uses ``gamma_start``).
    - ``step``: ``stages[k]`` with ``k = floor(len(stages) * step / total_steps)``: each stage holds an equal
      share of the steps. With the default ``REFERENCE_STAGES`` this is the reference code's -5, -3, -1,
      +1, +3 at 20 % quantiles, applied by progress instead of row position (HPS_METHOD.md, section 4).
    """

    kind: str = "constant"
    gamma: float = 1.0
    gamma_start: float = 0.0
    gamma_end: float = 1.0
    stages: tuple[float, ...] = REFERENCE_STAGES

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"Unknown gamma schedule kind {self.kind!r}; valid kinds: {', '.join(SCHEDULE_KINDS)}.")
        values = (self.gamma, self.gamma_start, self.gamma_end, *self.stages)
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"GammaSchedule values must be finite, got {self!r}.")
        if self.kind == "step" and len(self.stages) == 0:
            raise ValueError("GammaSchedule(kind='step') needs at least one stage in `stages`.")

    def value(self, step: int, total_steps: int) -> float:
        """Gamma at optimizer step ``step`` (0-based) of ``total_steps``."""
        step, total_steps = int(step), int(total_steps)
        if total_steps < 1 or step < 0:
            raise ValueError(f"GammaSchedule.value needs step >= 0 and total_steps >= 1, got step={step}, total_steps={total_steps}.")
        if self.kind == "constant":
            return float(self.gamma)
        if self.kind == "linear":
            frac = min(step / max(total_steps - 1, 1), 1.0)
            return float(self.gamma_start + (self.gamma_end - self.gamma_start) * frac)
        # Integer arithmetic so that e.g. step 3 of 5 lands exactly on stage 3 (no 0.6*5 rounding surprises).
        k = min(len(self.stages) * step // total_steps, len(self.stages) - 1)
        return float(self.stages[k])


_KIND_FIELDS = {"constant": ("gamma",), "linear": ("gamma_start", "gamma_end"), "step": ("stages",)}


def make_gamma_schedule(kind: str = "constant", **kw) -> GammaSchedule:
    """Build a validated ``GammaSchedule``; unknown kinds or fields that the kind does not use are errors."""
    if kind not in _KIND_FIELDS:
        raise ValueError(f"Unknown gamma schedule kind {kind!r}; valid kinds: {', '.join(SCHEDULE_KINDS)}.")
    extra = sorted(set(kw) - set(_KIND_FIELDS[kind]))
    if extra:
        raise ValueError(
            f"Gamma schedule kind {kind!r} takes fields {', '.join(_KIND_FIELDS[kind])}; "
            f"got unexpected {', '.join(extra)}."
        )
    if "stages" in kw:
        kw["stages"] = tuple(float(v) for v in kw["stages"])
    return GammaSchedule(kind=kind, **kw)
