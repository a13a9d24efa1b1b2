"""Evaluation metrics (HPS_METHOD.md section 7): generations scored by the reward model and a harm judge,
BLEU against the best reference, implicit-reward margins on held-out groups; every metric with a
bootstrap 95 % interval over prompts and the number of prompts behind it.

Pure functions of tables and arrays (no MLflow, no flow): ``hps_core.evaluate.report`` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hps_core.evaluate.bleu import char_sentence_bleu, corpus_bleu_with_ci
from hps_core.config.metric_names import MARGIN_METRICS




def bootstrap_ci(values, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per prompt)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarise(name: str, per_prompt, *, n_boot: int, seed: int) -> dict[str, float]:
    """``name``, ``name_ci_low``, ``name_ci_high`` and ``name_n`` from one value per prompt."""
    values = np.asarray(per_prompt, dtype=np.float64)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {name: float(values.mean()) if values.size else float("nan"), f"{name}_ci_low": low, f"{name}_ci_high": high, f"{name}_n": float(values.size)}


@dataclass(frozen=True)
class GenerationResult:
    table: pd.DataFrame  # one row per generation
    per_prompt: pd.DataFrame  # one row per prompt (index prompt_id): reward, best, harmful, bleu_char, ...
    metrics: dict[str, float]


def score_generations(
    policy_name: str,
    prompt_ids: list[str],
    prompts: list[str],
    generations: list[list[str]],
    reward_fn,
    judge,
    *,
    references: list[str],
    n_boot: int,
    seed: int,
    safety_prompts: list[bool] | None = None,
    sft_reward_per_prompt: pd.Series | None = None,
) -> GenerationResult:
    """Reward, harm label and BLEU of each generation, and the policy's metrics:

    * ``reward_mean`` (per prompt: mean over its k samples) and ``reward_best_of_k`` (per prompt: max);
    * ``harmful_rate``: per prompt, the share of its k samples ``judge`` flags, averaged over the safety
      prompts (``safety_prompts``; all prompts when None);
    * ``bleu`` (sacrebleu corpus BLEU, 0-100) and ``bleu_char`` (the reference code's character BLEU, 0-1,
      mean over prompts) of the best-of-k generation (highest reward, first on ties) against
      ``references`` (the preferred response of each prompt's held-out group);
    * ``win_rate_vs_sft``, when the SFT policy's per-prompt mean rewards are given (Series by prompt id):
      share of prompts whose mean reward is strictly above SFT's (a tie is not a win).
    """
    rows = [
        {"policy": policy_name, "prompt_id": pid, "prompt": p, "sample": j, "generation": text}
        for pid, p, texts in zip(prompt_ids, prompts, generations)
        for j, text in enumerate(texts)
    ]
    table = pd.DataFrame(rows, columns=["policy", "prompt_id", "prompt", "sample", "generation"])
    table["reward"] = np.asarray(reward_fn(table["prompt"].tolist(), table["generation"].tolist()), dtype=np.float64)
    table["harmful"] = judge.flag(table["prompt"].tolist(), table["generation"].tolist(), table["reward"].to_numpy())
    table["harmful"] = table["harmful"].astype(bool)
    best_rows = table.groupby("prompt_id", sort=False)["reward"].idxmax()  # first maximum on ties
    table["is_best_of_k"] = table.index.isin(best_rows.to_numpy())
    reference_of = dict(zip(prompt_ids, references))
    table["reference_response"] = table["prompt_id"].map(reference_of)
    safety_of = dict(zip(prompt_ids, safety_prompts)) if safety_prompts is not None else {}
    table["safety_prompt"] = table["prompt_id"].map(lambda pid: safety_of.get(pid, True))
    best = table.loc[best_rows.to_numpy()].set_index("prompt_id")
    bleu_char = [char_sentence_bleu(h, r) for h, r in zip(best["generation"], best["reference_response"])]
    table["bleu_char"] = np.nan
    table.loc[best_rows.to_numpy(), "bleu_char"] = bleu_char

    per_prompt = table.groupby("prompt_id", sort=False).agg(
        reward=("reward", "mean"), best=("reward", "max"), harmful=("harmful", "mean"), safety=("safety_prompt", "first")
    )
    per_prompt["bleu_char"] = pd.Series(bleu_char, index=best.index)
    metrics: dict[str, float] = {}
    metrics.update(summarise("reward_mean", per_prompt["reward"], n_boot=n_boot, seed=seed))
    metrics.update(summarise("reward_best_of_k", per_prompt["best"], n_boot=n_boot, seed=seed))
    metrics.update(summarise("harmful_rate", per_prompt.loc[per_prompt["safety"].astype(bool), "harmful"], n_boot=n_boot, seed=seed))
    metrics.update(corpus_bleu_with_ci(best["generation"].tolist(), best["reference_response"].tolist(), n_boot=n_boot, seed=seed))
    metrics.update(summarise("bleu_char", per_prompt["bleu_char"], n_boot=n_boot, seed=seed))
    if sft_reward_per_prompt is not None:
        sft = sft_reward_per_prompt.reindex(per_prompt.index)
        if sft.isna().any():
            raise ValueError(f"win_rate_vs_sft: {int(sft.isna().sum())} prompt(s) of {policy_name} have no SFT generation")
        wins = (per_prompt["reward"].to_numpy() > sft.to_numpy()).astype(float)
        metrics.update(summarise("win_rate_vs_sft", wins, n_boot=n_boot, seed=seed))
    return GenerationResult(table, per_prompt, metrics)


def safety_prompts(groups: pd.DataFrame) -> list[bool] | None:
    """Which groups are safety prompts (at least one response labelled harmful), or None when no response
    of ``groups`` carries a harm label (then every prompt counts for ``harmful_rate``)."""
    labels = [[h for h in g if h is not None and not pd.isna(h)] for g in groups["is_harmful"]]
    if not any(labels):
        return None
    return [any(bool(h) for h in g) for g in labels]


def implicit_reward_table(
    groups: pd.DataFrame, policy_logps, reference_logps, beta: float, *, policy: str = "hps", reference: str = "sft"
) -> pd.DataFrame:
    """One row per held-out response: r = beta * (log pi - log pi_ref) with both log-probs kept, so anyone
    can recompute the margins from this table (:func:`check_margins_match`).

    ``policy_logps``/``reference_logps`` are flat, in group order then rank order (best first).
    """
    policy_logps, reference_logps = np.asarray(policy_logps, np.float64), np.asarray(reference_logps, np.float64)
    expected = int(groups["n"].sum())
    if policy_logps.shape != (expected,) or reference_logps.shape != (expected,):
        raise ValueError(f"expected {expected} log-probs (one per held-out response), got {policy_logps.shape} and {reference_logps.shape}")
    rows = []
    for g in groups.itertuples(index=False):
        harmful = list(g.is_harmful) if g.is_harmful is not None else [None] * g.n
        rows.extend(
            {"prompt_id": g.prompt_id, "rank": k, "response_id": g.response_ids[k], "response": g.responses[k],
             "score": float(g.scores[k]), "is_harmful": harmful[k]}
            for k in range(g.n)
        )
    table = pd.DataFrame(rows)
    table.insert(0, "policy", policy)
    table.insert(1, "reference_policy", reference)
    table["beta"] = float(beta)
    table["logp_policy"] = policy_logps
    table["logp_reference"] = reference_logps
    table["implicit_reward"] = beta * (policy_logps - reference_logps)
    return table


def per_group_margins(table: pd.DataFrame, reward_column: str = "implicit_reward") -> pd.DataFrame:
    """Per group (table order): ``margin_hardest`` = r(y+) - max_j r(y_j), ``margin_mean`` = r(y+) - mean_j
    r(y_j) over the dispreferred responses j, ``ranking_accuracy`` = 1 when r(y+) beats every r(y_j),
    ``margin_top_scored`` = r(y+) - r(y_1), y_1 the dispreferred response with the highest score (rank 1)."""
    out = []
    for pid, g in table.groupby("prompt_id", sort=False):
        g = g.sort_values("rank")
        r = g[reward_column].to_numpy(dtype=np.float64)
        if g["rank"].iloc[0] != 0 or len(r) < 2:
            raise ValueError(f"group {pid}: needs the preferred response (rank 0) and at least one dispreferred one")
        out.append({"prompt_id": pid, "margin_hardest": r[0] - r[1:].max(), "margin_mean": r[0] - r[1:].mean(),
                    "ranking_accuracy": float(r[0] > r[1:].max()), "margin_top_scored": r[0] - r[1]})
    return pd.DataFrame(out, columns=["prompt_id", *MARGIN_METRICS])


def margin_metrics(table: pd.DataFrame, *, n_boot: int, seed: int) -> dict[str, float]:
    """Every metric of :data:`MARGIN_METRICS` (means over groups) with intervals."""
    per_group = per_group_margins(table)
    metrics: dict[str, float] = {}
    for name in MARGIN_METRICS:
        metrics.update(summarise(name, per_group[name], n_boot=n_boot, seed=seed))
    return metrics


def implicit_margins(
    groups: pd.DataFrame, policy_logps: np.ndarray, reference_logps: np.ndarray, beta: float, *, n_boot: int, seed: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Implicit-reward table of every held-out response and the margin metrics computed from it."""
    table = implicit_reward_table(groups, policy_logps, reference_logps, beta)
    return table, margin_metrics(table, n_boot=n_boot, seed=seed)


def check_margins_match(implicit_rewards: pd.DataFrame | str, logged: dict[str, float], *, rel_tol: float = 1e-9) -> int:
    """Recompute every margin metric from the per-example implicit-rewards table (``eval/implicit_rewards.parquet``,
    from its ``logp_policy``, ``logp_reference`` and ``beta`` columns) and compare with ``logged`` metrics
    (names as logged on the evaluate run: ``[<eval_set>/]<policy>/margin_hardest``, ...).

    Raises AssertionError naming every mismatch or missing metric; returns the number of values checked.
    """
    table = pd.read_parquet(implicit_rewards) if isinstance(implicit_rewards, str) else implicit_rewards
    table = table.assign(recomputed=table["beta"] * (table["logp_policy"] - table["logp_reference"]))
    sets = table["eval_set"] if "eval_set" in table.columns else pd.Series("", index=table.index)
    problems, checked = [], 0
    for (eval_set, policy), sub in table.groupby([sets.fillna(""), table["policy"]], sort=False):
        per_group = per_group_margins(sub, "recomputed")
        prefix = f"{eval_set}/{policy}/" if eval_set else f"{policy}/"
        for name in MARGIN_METRICS:
            key, value = prefix + name, float(per_group[name].mean())
            if key not in logged:
                problems.append(f"{key}: not logged")
            elif not np.isclose(logged[key], value, rtol=rel_tol, atol=1e-12):
                problems.append(f"{key}: logged {logged[key]!r}, recomputed from the table {value!r}")
            checked += 1
            if logged.get(f"{key}_n") is not None and int(logged[f"{key}_n"]) != len(per_group):
                problems.append(f"{key}_n: logged {logged[f'{key}_n']}, table has {len(per_group)} groups")
    if problems:
        raise AssertionError("margins logged != margins recomputed from the implicit-rewards table:\n" + "\n".join(problems))
    return checked
