"""Preference groups (one per prompt, ranked), the plan of optimizer steps, and the negatives drawn for it.

The step plan and the negatives are made here, once, before training, from generators seeded by (seed,
epoch): every optimizer step is a uniform random batch of the epoch's groups (no length sorting across
steps, so steps are independent samples; the trainer only orders a step's own examples by length to cut
padding), the gamma schedule is evaluated at the step each negative trains in, the run is reproducible,
the draw is auditable (every negative is stored with its step, gamma and probability), and a resumed or
distributed trainer replays exactly the same pairs. On-policy hardness (``rule = "online"``) needs the
policy of the moment: the plan is made here and the trainer draws the negatives as it reaches each step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hps_core.common.digests import json_digest
from hps_core.sampling.hardness import GammaSchedule, hardness_probs, rank_group, select_negative

ONLINE_RULE = "online"  # negatives drawn by the trainer at their step (on-policy hardness)

GROUP_COLUMNS = (
    "prompt_id",
    "prompt",
    "split",
    "n",
    "response_ids",  # ranked, best first
    "responses",  # ranked, best first
    "scores",  # ranked, best first
    "is_harmful",  # ranked, best first (None where unknown)
    "preferred_id",
    "dispreferred_ids",
    "score_gap",  # best score minus the best dispreferred score
    "n_top_ties",
)


NEGATIVE_COLUMNS = ("epoch", "step", "prompt_id", "negative_rank", "negative_id", "gamma", "q", "n_dispreferred")


def build_groups(table: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt: responses ranked best first by score (ties: earlier rows first, see
    :func:`hps_core.sampling.rank_group`). Prompts repeated across rows merge into one group."""
    records = []
    for pid, rows in table.groupby("prompt_id", sort=True):
        scores = rows["score"].to_numpy(dtype=np.float64)
        if len(rows) < 2:
            raise ValueError(f"prompt {pid} has {len(rows)} response(s); a preference group needs at least 2")
        best, rest = rank_group(scores)
        rest = sorted(rest, key=lambda j: (-scores[j], j))  # stable: ties keep input order
        order = [best, *rest]
        harmful = rows["is_harmful"].astype(object).to_numpy()
        ranked_scores = scores[order]
        records.append(
            {
                "prompt_id": pid,
                "prompt": rows["prompt"].iloc[0],
                "split": rows["split"].iloc[0],
                "n": len(rows),
                "response_ids": rows["response_id"].to_numpy()[order].tolist(),
                "responses": rows["response"].to_numpy()[order].tolist(),
                "scores": ranked_scores.tolist(),
                "is_harmful": [None if pd.isna(h) else bool(h) for h in harmful[order]],
                "preferred_id": rows["response_id"].iloc[best],
                "dispreferred_ids": rows["response_id"].to_numpy()[rest].tolist(),
                "score_gap": float(ranked_scores[0] - ranked_scores[1]),
                "n_top_ties": int((ranked_scores[1:] == ranked_scores[0]).sum()),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(GROUP_COLUMNS))


def plan_steps(n_groups: int, n_epochs: int, examples_per_step: int, seed: int) -> list[tuple[int, int, np.ndarray]]:
    """The run's optimizer steps: per epoch a seeded permutation of the ``n_groups`` training groups cut
    into steps of ``examples_per_step`` (the global batch: batch size x gradient accumulation; an epoch's
    last step may be smaller). Returns ``(epoch, global step, group indices)`` in training order.

    >>> [(e, k, idx.tolist()) for e, k, idx in plan_steps(3, 2, 2, seed=0)]  # doctest: +SKIP
    [(0, 0, [2, 0]), (0, 1, [1]), (1, 2, [0, 2]), (1, 3, [1])]
    """
    if examples_per_step < 1 or n_epochs < 1:
        raise ValueError(f"plan_steps needs examples_per_step >= 1 and n_epochs >= 1, got {examples_per_step}, {n_epochs}")
    plan, step = [], 0
    for epoch in range(n_epochs):
        order = np.random.default_rng([seed, epoch, 1]).permutation(n_groups)
        for start in range(0, n_groups, examples_per_step):
            plan.append((epoch, step, order[start : start + examples_per_step]))
            step += 1
    return plan


def draw_epoch_negatives(
    groups: pd.DataFrame, *, rule: str, schedule: GammaSchedule, n_epochs: int, seed: int, examples_per_step: int
) -> pd.DataFrame:
    """One dispreferred response per group per epoch, for the steps of :func:`plan_steps`.

    Each negative is drawn at ``schedule.value(step, total_steps)``, the gamma of the optimizer step it
    trains in, so a ``linear`` schedule reaches ``gamma_end`` on the last step and ``step`` stages change
    within an epoch. ``rule = "online"`` returns the plan only (``negative_rank = -1``, no id, ``q`` NaN):
    the trainer draws those negatives by the policy of the moment (on-policy hardness).

    Returns one row per (epoch, group) in training order: ``epoch``, ``step`` (the global optimizer step),
    ``prompt_id``, ``negative_rank`` (position in the ranked group: 0 is the preferred response, so 1 is
    the top-scored negative), ``negative_id``, ``gamma`` (the schedule's value at the step), ``q`` (the
    probability the negative had under q_gamma; for baseline rules, that of the hardness distribution at
    this gamma, for comparison) and ``n_dispreferred``.
    """
    steps = plan_steps(len(groups), n_epochs, examples_per_step, seed)
    total = len(steps)
    rows, rng, rng_epoch = [], None, None
    for epoch, step, idx in steps:  # in training order, epoch by epoch
        if epoch != rng_epoch:  # one stream per epoch, drawn in step order
            rng, rng_epoch = np.random.default_rng([seed, epoch]), epoch
        gamma = float(schedule.value(step, total))
        for gi in idx:
            group = groups.iloc[int(gi)]
            dispreferred_scores = np.asarray(group["scores"][1:], dtype=np.float64)
            row = {"epoch": epoch, "step": step, "prompt_id": group["prompt_id"], "gamma": gamma,
                   "n_dispreferred": len(dispreferred_scores)}
            if rule == ONLINE_RULE:
                rows.append({**row, "negative_rank": -1, "negative_id": "", "q": float("nan")})
                continue
            choice = select_negative(rule, dispreferred_scores, rng, gamma=gamma)
            rows.append({**row, "negative_rank": choice + 1, "negative_id": group["response_ids"][choice + 1],
                         "q": float(hardness_probs(dispreferred_scores, gamma)[choice])})
    return pd.DataFrame.from_records(rows, columns=list(NEGATIVE_COLUMNS))


def group_stats(groups: pd.DataFrame, negatives: pd.DataFrame) -> dict[str, float]:
    """Summary numbers for logs and cards: sizes, score gaps, how hard the drawn negatives were."""
    stats = {
        "groups": float(len(groups)),
        "groups_train": float((groups["split"] == "train").sum()),
        "groups_eval": float((groups["split"] == "eval").sum()),
        "groups_reward": float((groups["split"] == "reward").sum()),  # the reward model's own (data.reward_fraction)
        "responses_per_group_mean": float(groups["n"].mean()),
        "score_gap_mean": float(groups["score_gap"].mean()),
        "groups_with_top_ties": float((groups["n_top_ties"] > 0).sum()),
    }
    if len(negatives) and (negatives["negative_rank"] >= 1).all():  # drawn before training (not online)
        stats["negative_rank_mean"] = float(negatives["negative_rank"].mean())
        stats["negative_is_hardest_share"] = float((negatives["negative_rank"] == 1).mean())
    return stats


def groups_digest(groups: pd.DataFrame, negatives: pd.DataFrame) -> str:
    """Digest of the groups and every drawn negative: two runs that trained on the same pairs share it."""
    return json_digest(
        {
            "groups": groups[["prompt_id", "split", "response_ids", "scores"]].to_dict(orient="list"),
            "negatives": negatives.to_dict(orient="list") if len(negatives) else {},
        }
    )


class SplitError(ValueError):
    """The data's groups cannot make a run (a split is empty, or training has not one batch)."""


def check_splits(groups: pd.DataFrame, cfg) -> None:
    """Refuse, before any training, groups that cannot make a run: no training groups, no held-out groups
    (the evaluation has nothing to measure), or fewer training groups than one preference batch.
    ``cfg``: the PipelineConfig (the split fractions and ``hps.batch_size`` it names in the fix)."""
    counts = groups["split"].value_counts().to_dict()
    n_train, n_eval = counts.get("train", 0), counts.get("eval", 0)
    d = cfg.data
    fractions = f"data.eval_fraction = {d.eval_fraction:g}, data.reward_fraction = {d.reward_fraction:g}"
    where = f"{len(groups)} prompt group(s) ({n_train} training, {n_eval} held out, {counts.get('reward', 0)} for the reward model)"
    if n_train == 0:
        raise SplitError(f"{where}: no training groups. With {fractions}, add prompts to the data or lower the "
                         "fractions so some prompts stay for training")
    if n_eval == 0:
        raise SplitError(f"{where}: no held-out groups, so the evaluation would have nothing to measure. With "
                         f"{fractions}, add prompts or raise data.eval_fraction")
    if n_train < cfg.hps.batch_size:
        raise SplitError(f"{where}: fewer training groups than one preference batch (hps.batch_size = "
                         f"{cfg.hps.batch_size}); lower hps.batch_size to at most {n_train} or add prompts")
