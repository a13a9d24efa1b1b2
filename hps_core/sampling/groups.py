"""Preference groups (one per prompt, ranked) and the negatives drawn for every epoch.

Negatives are drawn here, once, before training, from a generator seeded by (seed, epoch): the run is
reproducible, the draw is auditable (every negative is stored with the gamma and probability it was
drawn with), and a resumed or distributed trainer replays exactly the same pairs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hps_core.common.digests import json_digest
from hps_core.sampling.hardness import GammaSchedule, hardness_probs, rank_group, select_negative

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


NEGATIVE_COLUMNS = ("epoch", "part", "prompt_id", "negative_rank", "negative_id", "gamma", "q", "n_dispreferred")


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


def draw_epoch_negatives(
    groups: pd.DataFrame, *, rule: str, schedule: GammaSchedule, n_epochs: int, seed: int, updates_per_epoch: int = 1
) -> pd.DataFrame:
    """Draw one dispreferred response per group per epoch.

    With ``updates_per_epoch = k > 1`` each epoch's groups are split (a seeded permutation, near-equal
    sizes) into ``k`` parts that the trainer runs one after the other; part ``p`` of epoch ``e`` draws at
    ``schedule.value(e * k + p, n_epochs * k)``, so the schedule advances within an epoch by training
    progress (``k = 1`` is one gamma per epoch, :func:`hps_core.sampling.epoch_gamma`).

    Returns one row per (epoch, group), in group order within an epoch: ``epoch``, ``part``,
    ``prompt_id``, ``negative_rank`` (position in the ranked group: 0 is the preferred response, so 1 is
    the hardest negative), ``negative_id``, ``gamma`` (the schedule's value the negative was drawn at),
    ``q`` (the probability the negative had under q_gamma; for baseline rules, that of the hardness
    distribution at this gamma, for comparison) and ``n_dispreferred``.
    """
    if int(updates_per_epoch) < 1:
        raise ValueError(f"updates_per_epoch must be >= 1, got {updates_per_epoch}")
    k = int(updates_per_epoch)
    rows = []
    for epoch in range(n_epochs):
        rng = np.random.default_rng([seed, epoch])
        part = np.zeros(len(groups), dtype=int)
        if k > 1:  # its own generator, so k = 1 draws exactly what it always drew
            order = np.random.default_rng([seed, epoch, 1]).permutation(len(groups))
            part[order] = np.arange(len(groups)) * k // max(len(groups), 1)
        gammas = [float(schedule.value(epoch * k + p, n_epochs * k)) for p in range(k)]
        for group, p in zip(groups.itertuples(index=False), part):
            gamma = gammas[p]
            dispreferred_scores = np.asarray(group.scores[1:], dtype=np.float64)
            choice = select_negative(rule, dispreferred_scores, rng, gamma=gamma)
            rows.append(
                {
                    "epoch": epoch,
                    "part": int(p),
                    "prompt_id": group.prompt_id,
                    "negative_rank": choice + 1,
                    "negative_id": group.response_ids[choice + 1],
                    "gamma": gamma,
                    "q": float(hardness_probs(dispreferred_scores, gamma)[choice]),
                    "n_dispreferred": len(dispreferred_scores),
                }
            )
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
    if len(negatives):
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
