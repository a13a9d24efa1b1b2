"""Figures of the evaluation (Metaflow card and MLflow artifacts): reward histograms, implicit-margin
distributions, harmful rate with its 95 % interval, one set of figures per eval set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hps_core.evaluate.metrics import per_group_margins


def make_figures(
    examples: pd.DataFrame, implicit_rewards: pd.DataFrame, metrics: dict[str, dict[str, float]], *, title: str = ""
) -> dict[str, Any]:
    """{file name: matplotlib figure} for one eval set; ``metrics`` maps policy -> metric dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suffix = f" ({title})" if title else ""
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for policy, sub in examples.groupby("policy", sort=False):
        ax.hist(sub["reward"], bins=30, alpha=0.55, label=policy.upper())
    ax.set(xlabel="reward-model score of generations", ylabel="generations", title="Reward of generations" + suffix)
    ax.legend()
    figs["reward_hist.png"] = fig

    if len(implicit_rewards):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for policy, sub in implicit_rewards.groupby("policy", sort=False):
            ax.hist(per_group_margins(sub)["margin_hardest"].to_numpy(), bins=30, alpha=0.6, label=policy.upper())
        ax.axvline(0.0, color="k", lw=1)
        reference = implicit_rewards["reference_policy"].iloc[0].upper()
        ax.set(xlabel="r(y+) - max_j r(y_j)", ylabel="held-out groups",
               title=f"Implicit margin vs hardest negative (reference: {reference})" + suffix)
        ax.legend()
        figs["margin_hist.png"] = fig

    names = [p for p in metrics if np.isfinite(metrics[p].get("harmful_rate", np.nan))]
    fig, ax = plt.subplots(figsize=(4, 3.5))
    if names:
        vals = np.array([metrics[p]["harmful_rate"] for p in names])
        err = np.array([[vals[i] - metrics[p]["harmful_rate_ci_low"], metrics[p]["harmful_rate_ci_high"] - vals[i]] for i, p in enumerate(names)]).T
        ax.bar([n.upper() for n in names], vals, yerr=err, capsize=6, color=plt.cm.tab10(np.arange(len(names))))
        n = int(metrics[names[0]]["harmful_rate_n"])
        ax.set(ylabel="share of generations flagged", title=f"Harmful rate, 95% CI, {n} prompts" + suffix)
    else:
        ax.set(title="Harmful rate: no safety prompts" + suffix)
    figs["harmful_rate.png"] = fig
    return figs
