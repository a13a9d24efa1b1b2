"""The routing report: the four mixes compared on held-out gold pairs, the PPM's cross-validated fit, and
which tags the chosen mix sends to humans. Markdown for the Metaflow card, a figure, stable metric names
for MLflow (``routing/acc_all_human``, ``routing/acc_all_ai``, ``routing/acc_random``, ``routing/acc_hyper``,
``ppm/cv_spearman``, ``ppm/cv_rmse``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MIX_ORDER = ("all_human", "all_ai", "random", "hyper")
MIX_LABELS = {"all_human": "100 % human", "all_ai": "100 % AI", "random": "random mix (same budget)",
              "hyper": "HyPER mix (routed)", "gain": "per-instance gain rule's mix",
              "best_simulated": "best simulated candidate"}


def comparison_table(acc: dict[str, float], human_share: dict[str, float], label_acc: dict[str, float] | None,
                     random_sd: float) -> pd.DataFrame:
    rows = []
    for mix in [m for m in (*MIX_ORDER, "gain", "best_simulated") if m in acc]:
        rows.append({"mix": mix, "description": MIX_LABELS[mix], "human_share": human_share[mix],
                     "gold_accuracy": acc[mix], "gold_accuracy_sd": random_sd if mix == "random" else np.nan,
                     "label_accuracy": (label_acc or {}).get(mix, np.nan)})
    return pd.DataFrame(rows)


def tag_table(tag_names: list[str], tags: np.ndarray, mask: np.ndarray, tag_gains: dict[str, float]) -> pd.DataFrame:
    """Per tag: carriers, how many the chosen mix gives humans, that share, and the PPM's gain of one more
    human label on a carrier (at all-AI). Sorted by the human share, so the top rows are what goes to humans."""
    carriers = tags.sum(axis=0)
    to_humans = tags[mask].sum(axis=0)
    table = pd.DataFrame({"tag": tag_names, "carriers": carriers, "to_humans": to_humans,
                          "human_share": np.where(carriers > 0, to_humans / np.maximum(carriers, 1), np.nan),
                          "ppm_gain": [tag_gains[t] for t in tag_names]})
    return table.sort_values(["human_share", "ppm_gain"], ascending=False, na_position="last").reset_index(drop=True)


def figure(cv_actual: np.ndarray, cv_predicted: np.ndarray, kinds: list[str], comparison: pd.DataFrame,
           cv: dict[str, float], sweep: pd.DataFrame | None = None):
    """Left: PPM out-of-fold predicted vs actual accuracy per training mix. Middle: accuracy of the mixes.
    Right (with a sweep): HyPER vs random across budgets, the single sources as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_sweep = sweep is not None and len(sweep) > 0
    fig, axes = plt.subplots(1, 3 if with_sweep else 2, figsize=(16 if with_sweep else 11, 4.4))
    ax1, ax2 = axes[0], axes[1]
    kinds = np.asarray(kinds)
    for kind, marker in (("tag_fill", "o"), ("random", "s"), ("anchor", "*")):
        sel = kinds == kind
        if sel.any():
            ax1.scatter(cv_actual[sel], cv_predicted[sel], s=60 if kind == "anchor" else 14, marker=marker,
                        alpha=0.7, label=kind)
    lo = float(min(cv_actual.min(), cv_predicted.min()))
    hi = float(max(cv_actual.max(), cv_predicted.max()))
    ax1.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax1.set(xlabel="actual gold accuracy (dev pairs)", ylabel="PPM prediction (out of fold)",
            title=f"PPM, {len(cv_actual)} mixes: Spearman {cv['spearman']:.2f}, RMSE {cv['rmse']:.4f}")
    ax1.legend(fontsize=8)
    names = [MIX_LABELS[m] for m in comparison["mix"]]
    err = comparison["gold_accuracy_sd"].to_numpy()  # NaN (no bar) except the random mixes
    bars = ax2.bar(range(len(names)), comparison["gold_accuracy"], yerr=err, capsize=4,
                   color=["#4c72b0", "#dd8452", "#8c8c8c", "#55a868", "#8172b3", "#937860"][: len(names)])
    for bar, value, share in zip(bars, comparison["gold_accuracy"], comparison["human_share"]):
        ax2.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.3f}\n{share:.0%} human", ha="center",
                 va="bottom", fontsize=8)
    ax2.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    low = float(comparison["gold_accuracy"].min())
    ax2.set_ylim(max(0.0, low - 0.08), min(1.0, float(comparison["gold_accuracy"].max()) + 0.06))
    ax2.set(ylabel="reward-model accuracy (held-out gold test pairs)", title="Label mixes")
    if with_sweep:
        ax3 = axes[2]
        acc = dict(zip(comparison["mix"], comparison["gold_accuracy"]))
        ax3.plot(sweep["budget_share"], sweep["acc_hyper"], "o-", color="#55a868", label="HyPER")
        ax3.plot(sweep["budget_share"], sweep["acc_random"], "s--", color="#8c8c8c", label="random mix")
        ax3.axhline(acc["all_human"], color="#4c72b0", lw=1, label="100 % human")
        ax3.axhline(acc["all_ai"], color="#dd8452", lw=1, label="100 % AI")
        ax3.set(xlabel="human-label budget (share of instances)", ylabel="gold test accuracy", title="Budgets")
        ax3.legend(fontsize=8)
    fig.tight_layout()
    return fig


def markdown(comparison: pd.DataFrame, tags: pd.DataFrame, cv: dict[str, float], info: dict[str, Any],
             sweep: pd.DataFrame | None = None) -> str:
    acc = dict(zip(comparison["mix"], comparison["gold_accuracy"]))
    best_single = max(acc["all_human"], acc["all_ai"])
    verdict = (f"HyPER beats both single-source baselines by {acc['hyper'] - best_single:+.3f}"
               if acc["hyper"] > best_single else
               f"HyPER does **not** beat the better single source ({acc['hyper'] - best_single:+.3f})")
    lines = [
        "# HyPER routing: human or AI label per instance", "",
        f"Target: {info['n_target']} instances, budget {info['budget']} human labels ({info['budget'] / info['n_target']:.0%}); "
        f"rule `{info['rule']}`; PPM `{info['ppm_uri']}` (fitted on {info['n_mixes']} mixes, ridge alpha {info['alpha']:g}). "
        f"Reward models scored on {info['n_gold_test']} held-out gold test pairs. {verdict}.", "",
        "| mix | human labels | gold accuracy | label accuracy (held-back gold) |", "|---|---|---|---|",
    ]
    for row in comparison.itertuples(index=False):
        sd = f" (sd {row.gold_accuracy_sd:.3f}, {info['n_random']} mixes)" if row.mix == "random" else ""
        lab = "" if pd.isna(row.label_accuracy) else f"{row.label_accuracy:.3f}"
        lines.append(f"| {MIX_LABELS[row.mix]} | {row.human_share:.0%} | {row.gold_accuracy:.3f}{sd} | {lab} |")
    lines += ["", f"**PPM** ({info['cv_folds']}-fold cross-validation over the training mixes): Spearman "
              f"{cv['spearman']:.3f}, RMSE {cv['rmse']:.4f} (accuracy units). Predicted gold-dev accuracy: HyPER mix "
              f"{info['predicted']['hyper']:.4f}, gain rule {info['predicted']['gain']:.4f}, best simulated candidate "
              f"{info['predicted']['best_simulated']:.4f}"
              + (" (the routed mix is the higher of the last two)." if info["rule"] == "best_predicted" else "."), "",
              "**Tags the HyPER mix sends to humans** (share of each tag's carriers given the human label; "
              f"overall share {info['budget'] / info['n_target']:.0%}; PPM gain: predicted change of accuracy per "
              "extra human label on a carrier, at all-AI):", "",
              "| tag | carriers | to humans | share | PPM gain |", "|---|---|---|---|---|"]
    shown = pd.concat([tags.head(8), tags.dropna(subset=["human_share"]).tail(4)]).drop_duplicates("tag")
    for row in shown.itertuples(index=False):
        lines.append(f"| `{row.tag}` | {row.carriers} | {row.to_humans} | {row.human_share:.0%} | {row.ppm_gain:+.2e} |")
    if sweep is not None and len(sweep):
        lines += ["", "**Budgets** (one random mix per budget; the routed rule at each):", "",
                  "| budget | HyPER human share | HyPER accuracy | random accuracy |", "|---|---|---|---|"]
        lines += [f"| {r.budget_share:.0%} | {r.hyper_human_share:.0%} | {r.acc_hyper:.3f} | {r.acc_random:.3f} |"
                  for r in sweep.itertuples(index=False)]
    return "\n".join(lines)


def metrics(comparison: pd.DataFrame, cv: dict[str, float], budget: int, n_target: int) -> dict[str, float]:
    out = {f"routing/acc_{row.mix}": float(row.gold_accuracy) for row in comparison.itertuples(index=False)}
    random_row = comparison[comparison["mix"] == "random"]
    if len(random_row):
        out["routing/acc_random_sd"] = float(random_row["gold_accuracy_sd"].iloc[0])
    out.update({f"routing/label_acc_{row.mix}": float(row.label_accuracy)
                for row in comparison.itertuples(index=False) if not pd.isna(row.label_accuracy)})
    out.update({"routing/budget": float(budget), "routing/human_share": budget / n_target,
                "ppm/cv_spearman": float(cv["spearman"]), "ppm/cv_rmse": float(cv["rmse"])})
    return out
