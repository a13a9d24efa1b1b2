"""The evaluate step: run every policy through the same generation, reward model and harm judge, compute
implicit margins on held-out groups, and write the side-by-side table, the per-example table and plots."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hps_core.evaluate import generate, implicit_margins, score_generations

if TYPE_CHECKING:
    from hps_core.pipeline import StepContext

POLICY_METRICS = ("reward_mean", "reward_best_of_k", "win_rate_vs_sft", "harmful_rate", "margin_hardest", "margin_mean", "ranking_accuracy")


def harm_judge(name: str):
    if name != "rule":
        raise ValueError(f"evaluate.harm_judge = {name!r} is not supported; valid: 'rule'")
    from hps_core.harm_judge import RuleHarmJudge

    return RuleHarmJudge()


def run_evaluation(ctx: "StepContext", groups: pd.DataFrame, sft_dir: str, hps_dir: str, reward_dir: str) -> dict[str, Any]:
    from hps_core.models import load_causal_lm
    from hps_core.reward import RewardScorer
    from hps_core.train.batching import Encoder
    from hps_core.train.preference import sequence_logps

    cfg, ev = ctx.cfg, ctx.cfg.evaluate
    seed, n_boot = cfg.run.seed, ev.bootstrap_samples
    heldout = groups[groups["split"] == "eval"].reset_index(drop=True)
    if heldout.empty:
        raise ValueError("no held-out groups to evaluate on; raise data.eval_fraction")
    gen_groups = heldout.head(ev.max_prompts)
    scorer = RewardScorer.load(reward_dir, cfg.model, batch_size=ev.batch_size)
    judge = harm_judge("rule")

    def reward_fn(prompts, responses):
        return scorer.score(prompts, responses, desc="reward model")

    results, logps = {}, {}
    sft_per_prompt = None
    for name, model_dir in (("sft", sft_dir), ("hps", hps_dir)):
        model, tok = load_causal_lm(model_dir, trust_remote_code=cfg.model.trust_remote_code)
        encoder = Encoder(tok, cfg.model.max_prompt_tokens, cfg.model.max_length)
        encoded = [encoder.encode(g.prompt, r) for g in heldout.itertuples() for r in g.responses]
        logps[name] = sequence_logps(model, encoded, tok.pad_token_id, ev.batch_size, f"{name} held-out log-probs")[0].numpy()
        texts = generate(model, tok, gen_groups["prompt"].tolist(), cfg.model, ev, seed=seed, desc=f"{name} generation")
        results[name] = score_generations(
            name, gen_groups["prompt_id"].tolist(), gen_groups["prompt"].tolist(), texts, reward_fn, judge,
            n_boot=n_boot, seed=seed, sft_reward_per_prompt=sft_per_prompt,
        )
        if name == "sft":
            sft_per_prompt = results[name].table.groupby("prompt_id", sort=False)["reward"].mean().to_numpy()
        del model

    margins_table, margin_metrics = implicit_margins(heldout, logps["hps"], logps["sft"], cfg.hps.beta, n_boot=n_boot, seed=seed)
    metrics = {"sft": dict(results["sft"].metrics), "hps": {**results["hps"].metrics, **margin_metrics}}

    examples = pd.concat([results["sft"].table, results["hps"].table], ignore_index=True)
    margins_table["logp_policy"] = logps["hps"]
    margins_table["logp_reference"] = logps["sft"]
    examples_path = ctx.path("eval", "generations.parquet")
    margins_path = ctx.path("eval", "implicit_rewards.parquet")
    examples.to_parquet(examples_path, index=False)
    margins_table.to_parquet(margins_path, index=False)
    side_by_side = comparison_table(metrics)
    side_by_side.to_parquet(ctx.path("eval", "comparison.parquet"))
    markdown = comparison_markdown(side_by_side)
    figures = make_figures(examples, margins_table, metrics)

    with ctx.child("evaluate") as run_id:
        ctx.tracker.log_metrics(run_id, {f"{p}/{k}": v for p, m in metrics.items() for k, v in m.items()})
        ctx.tracker.log_text(run_id, markdown, "eval/comparison.md")
        ctx.tracker.log_artifact(run_id, str(examples_path), "eval")
        ctx.tracker.log_artifact(run_id, str(margins_path), "eval")
        for fname, fig in figures.items():
            ctx.tracker.log_figure(run_id, fig, f"eval/{fname}")
    for fname, fig in figures.items():
        fig.savefig(ctx.path("eval", fname), dpi=110, bbox_inches="tight")
    return {
        "metrics": metrics,
        "comparison_markdown": markdown,
        "figures": [str(ctx.path("eval", k)) for k in figures],
        "examples_path": str(examples_path),
        "implicit_rewards_path": str(margins_path),
        "heldout_groups": len(heldout),
        "generation_prompts": len(gen_groups),
    }


def comparison_table(metrics: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = []
    for policy, m in metrics.items():
        for k in POLICY_METRICS:
            if k in m:
                rows.append({"policy": policy, "metric": k, "value": m[k], "ci_low": m[f"{k}_ci_low"], "ci_high": m[f"{k}_ci_high"], "n": m[f"{k}_n"]})
    return pd.DataFrame(rows)


def comparison_markdown(table: pd.DataFrame) -> str:
    lines = ["| metric | SFT | HPS |", "|---|---|---|"]
    for metric in POLICY_METRICS:
        cells = []
        for policy in ("sft", "hps"):
            row = table[(table["policy"] == policy) & (table["metric"] == metric)]
            if row.empty:
                cells.append("0 by construction (its own reference)" if metric.startswith(("margin", "ranking")) else "n/a")
            else:
                r = row.iloc[0]
                cells.append(f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] (n={int(r.n)})")
        lines.append(f"| {metric} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def make_figures(examples: pd.DataFrame, margins: pd.DataFrame, metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for policy, sub in examples.groupby("policy"):
        ax.hist(sub["reward"], bins=30, alpha=0.55, label=policy.upper())
    ax.set(xlabel="reward-model score of generations", ylabel="count", title="Reward of generations")
    ax.legend()
    figs["reward_hist.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.5))
    best = margins[margins["rank"] == 0].set_index("prompt_id")["implicit_reward"]
    hardest = margins[margins["rank"] > 0].groupby("prompt_id")["implicit_reward"].max()
    ax.hist((best - hardest).to_numpy(), bins=30, color="tab:green")
    ax.axvline(0.0, color="k", lw=1)
    ax.set(xlabel="r(y+) - max_j r(y_j)", ylabel="held-out groups", title="HPS implicit margin vs hardest negative")
    figs["margin_hist.png"] = fig

    fig, ax = plt.subplots(figsize=(4, 3.5))
    names = list(metrics)
    vals = np.array([metrics[p]["harmful_rate"] for p in names])
    err = np.array([[vals[i] - metrics[p]["harmful_rate_ci_low"], metrics[p]["harmful_rate_ci_high"] - vals[i]] for i, p in enumerate(names)]).T
    ax.bar([n.upper() for n in names], vals, yerr=err, capsize=6, color=["tab:gray", "tab:blue"][: len(names)])
    ax.set(ylabel="share of generations flagged", title="Harmful rate (95% CI)")
    figs["harmful_rate.png"] = fig
    return figs
