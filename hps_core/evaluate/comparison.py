"""Means and 95 % intervals over seeds, the paper-style markdown table, the claims check and the plot.

The interval of a metric is the t interval of the mean over seeds: mean +- t(0.975, k-1) * sd / sqrt(k)
(sd with k-1 in the denominator); with one seed there is none (shown as "—"). Each seed is one full
training run, so this is the run-to-run spread the paper's "over seeds" means, not the per-prompt bootstrap
interval of one run (that one is in each branch's evaluate run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hps_core.config.metric_names import COST_METRICS, QUALITY_METRICS, SFT_METRICS



COLUMNS = {  # metric -> table header, format
    "bleu": ("BLEU", "{:.1f}"),
    "reward_mean": ("reward", "{:.2f}"),
    "margin_hardest": ("margin_hardest", "{:.3f}"),
    "margin_top_scored": ("margin_top_scored", "{:.3f}"),
    "margin_mean": ("margin_mean", "{:.3f}"),
    "harmful_rate": ("harmful_rate", "{:.3f}"),
    "win_rate_vs_sft": ("win rate vs SFT", "{:.2f}"),
    "step_time_ms": ("time/step (ms)", "{:.0f}"),
    "peak_memory_mb": ("peak memory (MB)", "{:.0f}"),
}
REFERENCE_LABEL = "sft (reference)"


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t interval of the mean of ``values`` (NaNs dropped); low/high NaN for one value."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def aggregate(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, n, metric): mean, ci_low, ci_high, seeds; plus the SFT reference's rows
    (``label = "sft (reference)"``: its BLEU, reward and harmful rate, one value per seed)."""
    rows = []
    for (n, label), sub in per_seed.groupby(["n", "label"], sort=False):
        slug = _slug(label)
        for metric in (*QUALITY_METRICS, *COST_METRICS):
            mean, low, high = mean_ci(sub[metric])
            rows.append({"label": label, "slug": slug, "n": int(n), "metric": metric, "mean": mean, "ci_low": low,
                         "ci_high": high, "seeds": int(sub[metric].notna().sum())})
    for n, sub in per_seed.groupby("n", sort=False):
        per_seed_sft = sub.drop_duplicates("seed")  # every method of a seed shares SFT's generations
        for metric in SFT_METRICS:
            mean, low, high = mean_ci(per_seed_sft[f"sft_{metric}"])
            rows.append({"label": REFERENCE_LABEL, "slug": "sft", "n": int(n), "metric": metric, "mean": mean,
                         "ci_low": low, "ci_high": high, "seeds": int(per_seed_sft[f"sft_{metric}"].notna().sum())})
    return pd.DataFrame(rows, columns=["label", "slug", "n", "metric", "mean", "ci_low", "ci_high", "seeds"])


def _slug(label: str) -> str:
    return label.replace(" (", "-").replace(")", "").replace(" ", "-")


def cell(agg: pd.DataFrame, label: str, n: int, metric: str) -> str:
    row = agg[(agg["label"] == label) & (agg["n"] == n) & (agg["metric"] == metric)]
    if row.empty or not np.isfinite(row["mean"].iloc[0]):
        return "—"
    fmt = COLUMNS[metric][1]
    r = row.iloc[0]
    if not np.isfinite(r.ci_low):
        return fmt.format(r["mean"])
    return f"{fmt.format(r['mean'])} [{fmt.format(r.ci_low)}, {fmt.format(r.ci_high)}]"


def markdown_table(agg: pd.DataFrame, n: int) -> str:
    """The paper-style table for one group size: one row per method (SFT first), mean [95 % CI] per cell."""
    labels = [REFERENCE_LABEL] + [lb for lb in dict.fromkeys(agg.loc[agg["n"] == n, "label"]) if lb != REFERENCE_LABEL]
    lines = ["| method | " + " | ".join(h for h, _ in COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(cell(agg, label, n, m) for m in COLUMNS) + " |")
    return "\n".join(lines)


def _value(agg: pd.DataFrame, label: str, n: int, metric: str) -> tuple[float, float, float]:
    row = agg[(agg["label"] == label) & (agg["n"] == n) & (agg["metric"] == metric)]
    if row.empty:
        return float("nan"), float("nan"), float("nan")
    r = row.iloc[0]
    return float(r["mean"]), float(r.ci_low), float(r.ci_high)


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two intervals overlap (no interval, one seed: treated as overlapping, i.e. not resolved)."""
    if not all(np.isfinite([a[1], a[2], b[1], b[2]])):
        return True
    return a[1] <= b[2] and b[1] <= a[2]


def _why(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    return "intervals overlap" if all(np.isfinite([a[1], a[2], b[1], b[2]])) else "no interval with one seed"


TARGET_GAIN, TARGET_REWARD_LOSS, TARGET_STEP_RATIO = 0.20, 0.05, 1.5


def target_check(agg: pd.DataFrame, n: int, baseline: str = "dpo-bt (random)") -> list[str]:
    """The issue-16 target, stated before any run: an HPS variant beats ``baseline`` by >= 20 % on BOTH
    margin_hardest and margin_top_scored with the intervals apart, with reward_mean within 5 % of the
    baseline's and step time <= 1.5x. One line per HPS variant."""
    labels = list(dict.fromkeys(agg.loc[agg["n"] == n, "label"]))
    if baseline not in labels:
        return [f"- Target check needs `{baseline}` in `compare.methods`."]
    out = []
    for hps in (lb for lb in labels if "-hps" in lb):
        parts, ok = [], True
        for metric in ("margin_hardest", "margin_top_scored"):
            h, b = _value(agg, hps, n, metric), _value(agg, baseline, n, metric)
            gain = (h[0] - b[0]) / abs(b[0]) if b[0] else float("nan")
            apart = h[0] > b[0] and not _overlap(h, b)
            ok &= bool(gain >= TARGET_GAIN and apart)
            parts.append(f"{metric} {gain:+.0%}{' (apart)' if apart else ''}")
        h, b = _value(agg, hps, n, "reward_mean")[0], _value(agg, baseline, n, "reward_mean")[0]
        within = h >= b - TARGET_REWARD_LOSS * abs(b)
        ratio = _value(agg, hps, n, "step_time_ms")[0] / _value(agg, baseline, n, "step_time_ms")[0]
        ok &= bool(within and ratio <= TARGET_STEP_RATIO)
        parts += [f"reward {(h - b) / abs(b):+.0%}" if b else "reward n/a", f"step time {ratio:.2f}x"]
        out.append(f"- **{hps}** vs {baseline}: {', '.join(parts)} -> {'MEETS the target' if ok else 'misses the target'}.")
    return out


def claims_check(agg: pd.DataFrame, n: int) -> list[str]:
    """The paper's claims (HPS_METHOD.md section 6) against this table, one plain line each:
    HPS raises the reward margin over BT, keeps reward and BLEU, and costs like BT, not like PL."""
    labels = list(dict.fromkeys(agg.loc[agg["n"] == n, "label"]))
    hps = next((lb for lb in labels if lb.startswith("dpo-hps")), None)
    bt = next((lb for lb in labels if lb == "dpo-bt (random)"), None) or next((lb for lb in labels if lb.startswith("dpo-bt")), None)
    pl = next((lb for lb in labels if lb.startswith("dpo-pl")), None)
    out = []
    if hps is None or bt is None:
        return ["- Claims check needs both `dpo-hps` and a `dpo-bt` method in `compare.methods`."]
    for metric in ("margin_hardest", "margin_top_scored", "margin_mean"):
        h, b = _value(agg, hps, n, metric), _value(agg, bt, n, metric)
        rel = (h[0] - b[0]) / abs(b[0]) * 100 if b[0] else float("nan")
        verdict = ("holds" if h[0] > b[0] and not _overlap(h, b) else f"direction holds, {_why(h, b)}" if h[0] > b[0]
                   else "does not hold")
        out.append(f"- **{metric} up** ({hps} vs {bt}): {h[0]:.3f} vs {b[0]:.3f} ({rel:+.0f} %; paper: +89 % average "
                   f"reward margin on HH-RLHF) -> {verdict}.")
    for metric, name in (("reward_mean", "reward kept"), ("bleu", "BLEU kept")):
        h, b = _value(agg, hps, n, metric), _value(agg, bt, n, metric)
        verdict = ("holds (HPS not lower)" if h[0] >= b[0] else f"holds (lower, {_why(h, b)})" if _overlap(h, b)
                   else "does not hold (lower, intervals apart)")
        out.append(f"- **{name}** ({hps} vs {bt}): {h[0]:.3f} vs {b[0]:.3f} -> {verdict}.")
    h, b = _value(agg, hps, n, "harmful_rate"), _value(agg, bt, n, "harmful_rate")
    verdict = ("holds" if h[0] < b[0] and not _overlap(h, b) else f"direction holds, {_why(h, b)}" if h[0] < b[0]
               else "does not hold")
    out.append(f"- **fewer harmful generations** ({hps} vs {bt}): harmful_rate {h[0]:.3f} vs {b[0]:.3f} -> {verdict}.")
    for metric, name in (("step_time_ms", "time per step"), ("peak_memory_mb", "peak memory")):
        h, b = _value(agg, hps, n, metric)[0], _value(agg, bt, n, metric)[0]
        line = f"- **{name} like BT, not PL**: HPS/BT = {h / b:.2f}x"
        if pl is not None:
            p = _value(agg, pl, n, metric)[0]
            line += f", PL/HPS = {p / h:.2f}x"
            like_bt = abs(h / b - 1) < abs(p / b - 1)
            line += " -> holds" if like_bt and p > h else " -> does not hold"
        out.append(line + ".")
    return out


def report_markdown(agg: pd.DataFrame, per_seed: pd.DataFrame, sizes: dict[str, dict[str, float]], *,
                    wall_s: float | None = None) -> str:
    """Tables per group size, the claims check, and how to read them."""
    seeds = sorted(per_seed["seed"].unique().tolist())
    out = []
    for n in dict.fromkeys(agg["n"]):
        shown = n if n else f"{_data_n(sizes.get(str(n), {}))} (groups as in the data)"
        out += [f"### n = {shown}: {len(seeds)} seed(s) {seeds}", "", markdown_table(agg, n), "", "Claims check:", "",
                *claims_check(agg, n), "", "Target (>= 20 % on both margins, intervals apart; reward within 5 %; "
                "step time <= 1.5x):", "", *target_check(agg, n), ""]
    out += [
        "Each cell: mean over seeds [95 % t interval over seeds]; one seed gives no interval. Every method starts "
        "from the same SFT checkpoint (its reference) and is scored by the same reward model and harm judge; a "
        "seed changes the negative draws, training shuffle and evaluation sampling.",
        "- `margin_hardest` / `margin_top_scored` / `margin_mean`: implicit-reward margin of the preferred response "
        "over the dispreferred response the POLICY rates highest / the one the reward-model SCORES rank highest / "
        "the mean dispreferred response, on every held-out group. The paper's sources do not define its \"reward "
        "margin\" exactly, so both hardest-negative margins are reported. `reward`: reward-model score of the policy's "
        "generations; `harmful_rate`: judged harmful share on safety prompts; `win rate vs SFT`: prompts whose "
        "mean reward beats SFT's.",
        "- `time/step`: mean optimizer-step time over training; `peak memory`: growth of the training process's "
        "peak RSS during training (CPU) or the CUDA allocator's peak (GPU).",
    ]
    if wall_s is not None:
        out.append(f"- Wall time of the comparison (start to report): {wall_s / 60:.1f} min.")
    return "\n".join(out)


def _data_n(size: dict[str, float]) -> str:
    """The training groups' size as ``group_size_files`` measured it: "8", or "7.6 on average" when sizes differ."""
    mean = size.get("responses_per_train_group")
    if mean is None:
        return "?"
    return f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f} on average"


def comparison_figure(agg: pd.DataFrame):
    """Bars with 95 % intervals: both margins, reward, time per step and memory, per method and group size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("margin_hardest", "margin_top_scored", "reward_mean", "step_time_ms", "peak_memory_mb")
    sizes = list(dict.fromkeys(agg["n"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics):
        labels = [lb for lb in dict.fromkeys(agg["label"]) if lb != "sft (reference)"]
        width = 0.8 / len(sizes)
        for j, n in enumerate(sizes):
            vals = [_value(agg, lb, n, metric) for lb in labels]
            means = np.array([v[0] for v in vals])
            err = np.array([[m - v[1] if np.isfinite(v[1]) else 0 for m, v in zip(means, vals)],
                            [v[2] - m if np.isfinite(v[2]) else 0 for m, v in zip(means, vals)]])
            ax.bar(np.arange(len(labels)) + j * width, means, width, yerr=err, capsize=3, label=f"n={n}" if n else "n=data")
        ax.set_xticks(np.arange(len(labels)) + width * (len(sizes) - 1) / 2, labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(COLUMNS[metric][0])
    if len(sizes) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig

