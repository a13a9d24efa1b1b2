"""The evaluate step: every policy through the same generation, reward model and harm judge, on the
held-out groups and on every configured extra eval set; implicit margins of each preference policy
against the SFT reference; the side-by-side table (parquet + markdown), the per-example tables and plots.

Logged on the ``evaluate`` MLflow run: ``[<set>/]<policy>/<metric>`` with ``_ci_low``, ``_ci_high``, ``_n``
(the main held-out set has no prefix), ``reward_model/truncated_*``, the tables under ``eval/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hps_core.evaluate.metrics import (
    MARGIN_METRICS,
    implicit_reward_table,
    margin_metrics,
    safety_prompts,
    score_generations,
)
from hps_core.evaluate.generation import generate, policy_seed
from hps_core.config.metric_names import POLICY_METRICS

if TYPE_CHECKING:
    from hps_core.tracking.step_context import StepContext

REFERENCE_POLICY = "sft"


@dataclass(frozen=True)
class EvalSet:
    name: str  # "" for the held-out split of the training data; else the configured set name (metric prefix)
    groups: pd.DataFrame  # every group here is held out: margins use all, generation the first max_prompts
    source: str
    all_safety_prompts: bool = False  # every prompt counts for harmful_rate, whatever its labels say

    @property
    def prefix(self) -> str:
        return f"{self.name}/" if self.name else ""

    @property
    def label(self) -> str:
        return self.name or "held-out"


def load_eval_sets(ctx: "StepContext", groups: pd.DataFrame) -> list[EvalSet]:
    """The held-out split, then each ``evaluate.extra_sets`` file (scored JSONL; all of it held out)."""
    from hps_core.data.loader import read_scored_jsonl
    from hps_core.sampling.groups import build_groups
    from hps_core.common.digests import file_sha256

    heldout = groups[groups["split"] == "eval"].reset_index(drop=True)
    if heldout.empty:
        raise ValueError("no held-out groups to evaluate on; raise data.eval_fraction")
    sets = [EvalSet("", heldout, ctx.cfg.data.source)]
    for extra in ctx.cfg.evaluate.extra_sets:
        source = f"{extra.name}@sha256:{file_sha256(extra.path)[:12]}"
        table = read_scored_jsonl(extra.path, source_name=source)
        table["split"] = "eval"
        sets.append(EvalSet(extra.name, build_groups(table).reset_index(drop=True), source, extra.all_safety_prompts))
    return sets


def run_evaluation(ctx: "StepContext", groups: pd.DataFrame, sft_dir: str, hps_dir: str, reward_dir: str) -> dict[str, Any]:
    """SFT and HPS side by side (see :func:`evaluate_policies`)."""
    return evaluate_policies(ctx, groups, {REFERENCE_POLICY: sft_dir, "hps": hps_dir}, reward_dir)


def evaluate_policies(ctx: "StepContext", groups: pd.DataFrame, policies: dict[str, str], reward_dir: str) -> dict[str, Any]:
    """Evaluate every policy in ``policies`` (name -> model dir; ``sft`` is the reference) on every eval set."""
    from hps_core.evaluate.plots import make_figures
    from hps_core.evaluate.harm_judge import make_harm_judge
    from hps_core.models.loading import load_causal_lm
    from hps_core.models.reward import RewardScorer
    import torch

    cfg, ev = ctx.cfg, ctx.cfg.evaluate
    seed, n_boot = cfg.run.seed, ev.bootstrap_samples
    if REFERENCE_POLICY not in policies:
        raise ValueError(f"policies must include the reference policy {REFERENCE_POLICY!r}; got {sorted(policies)}")
    # The reference first: win rates of the others are against its per-prompt rewards.
    policies = {REFERENCE_POLICY: policies[REFERENCE_POLICY], **{k: v for k, v in policies.items() if k != REFERENCE_POLICY}}
    sets = load_eval_sets(ctx, groups)
    train_ids = set(groups.loc[groups["split"].isin(["train", "reward"]), "prompt_id"])  # any model trained on them

    # Phase 1, one policy in memory at a time: held-out log-probs and generations on every set.
    logps: dict[tuple[str, str], np.ndarray] = {}
    texts: dict[tuple[str, str], list[list[str]]] = {}
    seeds: dict[str, int] = {}
    for policy, model_dir in policies.items():
        model, tok = load_causal_lm(model_dir, trust_remote_code=cfg.model.trust_remote_code)
        for es in sets:
            logps[(es.name, policy)] = heldout_logps(model, tok, es.groups, cfg, f"{es.label} {policy} log-probs")
            gen = es.groups.head(ev.max_prompts)
            seeds[f"{es.prefix}{policy}"] = s = policy_seed(seed, es.name, policy)
            texts[(es.name, policy)] = generate(model, tok, gen["prompt"].tolist(), cfg.model, ev, seed=s, desc=f"{es.label} {policy} generation")
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # Phase 2: the reward model and the judge over every generation (policies no longer in memory).
    scorer = RewardScorer.load(reward_dir, cfg.model, batch_size=ev.batch_size, reward_cfg=cfg.reward_model)
    judge = make_harm_judge(ev.harm_judge, harm_label=ev.harm_label, max_length=cfg.model.max_length,
                            batch_size=ev.batch_size, trust_remote_code=ev.harm_judge_trust_remote_code,
                            allow_pickle=ev.harm_judge_allow_pickle_weights)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    examples, implicit, figures, set_counts = [], [], {}, {}
    for es in sets:
        gen = es.groups.head(ev.max_prompts)
        metrics[es.name] = per_policy = {}
        sft_per_prompt = None
        for policy in policies:
            result = score_generations(
                policy, gen["prompt_id"].tolist(), gen["prompt"].tolist(), texts[(es.name, policy)],
                lambda p, r: scorer.score(p, r, desc=f"{es.label} reward model"), judge,
                references=[r[0] for r in gen["responses"]],
                safety_prompts=None if es.all_safety_prompts else safety_prompts(gen),
                n_boot=n_boot, seed=seed, sft_reward_per_prompt=sft_per_prompt,
            )
            per_policy[policy] = dict(result.metrics)
            if policy == REFERENCE_POLICY:
                sft_per_prompt = result.per_prompt["reward"]
            else:
                table = implicit_reward_table(es.groups, logps[(es.name, policy)], logps[(es.name, REFERENCE_POLICY)],
                                              cfg.hps.beta, policy=policy, reference=REFERENCE_POLICY)
                per_policy[policy].update(margin_metrics(table, n_boot=n_boot, seed=seed))
                implicit.append(table.assign(eval_set=es.name))
            examples.append(result.table.assign(eval_set=es.name, seed=seeds[f"{es.prefix}{policy}"]))
        if es.name:  # an extra set that shares prompts with training measures memory, not transfer
            set_counts[f"{es.prefix}overlap_with_train_prompts"] = float(es.groups["prompt_id"].isin(train_ids).sum())
        set_counts[f"{es.prefix}eval/groups"] = float(len(es.groups))
        set_examples = examples[-len(policies):]
        set_implicit = [t for t in implicit if t["eval_set"].iloc[0] == es.name]
        for fname, fig in make_figures(pd.concat(set_examples), pd.concat(set_implicit) if set_implicit else pd.DataFrame(),
                                       per_policy, title=es.name).items():
            figures[f"{es.name}_{fname}" if es.name else fname] = fig

    examples_df = _eval_set_first(pd.concat(examples, ignore_index=True))
    implicit_df = _eval_set_first(pd.concat(implicit, ignore_index=True))
    side_by_side = comparison_table(metrics)
    markdown = comparison_markdown(side_by_side, sets, ev, judge_name=judge.name, policies=list(policies))
    paths = {
        "examples": ctx.path("eval", "generations.parquet"),
        "implicit": ctx.path("eval", "implicit_rewards.parquet"),
        "comparison": ctx.path("eval", "comparison.parquet"),
    }
    examples_df.to_parquet(paths["examples"], index=False)
    implicit_df.to_parquet(paths["implicit"], index=False)
    side_by_side.to_parquet(paths["comparison"], index=False)
    ctx.path("eval", "comparison.md").write_text(markdown)
    for fname, fig in figures.items():
        fig.savefig(ctx.path("eval", fname), dpi=110, bbox_inches="tight")

    flat = flatten_metrics(metrics)
    extra_logged = {**scorer.truncation_metrics(), **set_counts}
    with ctx.child("evaluate") as run_id:
        ctx.tracker.log_metrics(run_id, {**flat, **extra_logged})
        ctx.tracker.log_params(run_id, {"harm_judge": judge.name, "reward_model": reward_dir, "sampling_seeds": seeds})
        ctx.tracker.log_text(run_id, markdown, "eval/comparison.md")
        for path in paths.values():
            ctx.tracker.log_artifact(run_id, str(path), "eval")
        for fname, fig in figures.items():
            ctx.tracker.log_figure(run_id, fig, f"eval/{fname}")
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)
    return {
        "metrics": metrics[""],  # the held-out set: what register puts on the model versions
        "eval_sets": {name: m for name, m in metrics.items() if name},
        "logged_metrics": flat,
        "comparison_markdown": markdown,
        "figures": [str(ctx.path("eval", k)) for k in figures],
        "examples_path": str(paths["examples"]),
        "implicit_rewards_path": str(paths["implicit"]),
        "comparison_path": str(paths["comparison"]),
        "heldout_groups": len(sets[0].groups),
        "generation_prompts": int(min(ev.max_prompts, len(sets[0].groups))),
        "harm_judge": judge.name,
        "reward_model_truncation": scorer.truncation_metrics(),
        "sampling_seeds": seeds,
        "set_counts": set_counts,
    }


def heldout_logps(model, tok, groups: pd.DataFrame, cfg, desc: str) -> np.ndarray:
    """Summed response log-probs of every held-out response, in group order then rank order."""
    from hps_core.data.encoding import Encoder
    from hps_core.train.preference import sequence_logps

    encoder = Encoder(tok, cfg.model.max_prompt_tokens, cfg.model.max_length)
    encoded = [encoder.encode(g.prompt, r) for g in groups.itertuples() for r in g.responses]
    return sequence_logps(model, encoded, tok.pad_token_id, cfg.evaluate.batch_size, desc)[0].numpy()


def _eval_set_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["eval_set", *[c for c in table.columns if c != "eval_set"]]]


def flatten_metrics(metrics: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """``{set: {policy: {k: v}}}`` -> ``{"[set/]policy/k": v}`` (the names logged on the evaluate run)."""
    return {f"{s}/{p}/{k}" if s else f"{p}/{k}": float(v) for s, by_policy in metrics.items() for p, m in by_policy.items() for k, v in m.items()}


def comparison_table(metrics: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """One row per (eval set, policy, metric): value, ci_low, ci_high, n."""
    rows = []
    for eval_set, by_policy in metrics.items():
        for policy, m in by_policy.items():
            for k in POLICY_METRICS:
                if k in m:
                    rows.append({"eval_set": eval_set, "policy": policy, "metric": k, "value": m[k],
                                 "ci_low": m[f"{k}_ci_low"], "ci_high": m[f"{k}_ci_high"], "n": m[f"{k}_n"]})
    return pd.DataFrame(rows, columns=["eval_set", "policy", "metric", "value", "ci_low", "ci_high", "n"])


def _cell(table: pd.DataFrame, eval_set: str, policy: str, metric: str) -> str:
    row = table[(table["eval_set"] == eval_set) & (table["policy"] == policy) & (table["metric"] == metric)]
    if row.empty:
        if policy == REFERENCE_POLICY and metric in MARGIN_METRICS:
            return "— (the reference itself: zero by construction, see note)"
        if policy == REFERENCE_POLICY and metric == "win_rate_vs_sft":
            return "— (baseline)"
        return "n/a"
    r = row.iloc[0]
    if not np.isfinite(r.value):
        return f"n/a (n={int(r.n)})"
    return f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] (n={int(r.n)})"


def comparison_markdown(table: pd.DataFrame, sets: list[EvalSet], ev, *, judge_name: str, policies: list[str]) -> str:
    """The side-by-side report: one table per eval set, then what each number means."""
    out = []
    for es in sets:
        n_gen = min(ev.max_prompts, len(es.groups))
        out += [f"### Eval set: {es.label} ({len(es.groups)} groups for margins; {n_gen} prompts x "
                f"{ev.samples_per_prompt} samples for generation; source `{es.source}`)", ""]
        out.append("| metric | " + " | ".join(p.upper() for p in policies) + " |")
        out.append("|---|" + "---|" * len(policies))
        for metric in POLICY_METRICS:
            out.append(f"| {metric} | " + " | ".join(_cell(table, es.name, p, metric) for p in policies) + " |")
        out.append("")
    out += [
        "Each cell: value [95 % bootstrap interval over prompts] (n = prompts or groups behind it).",
        "",
        f"- **Implicit margins** (`margin_hardest`, `margin_mean`, `ranking_accuracy`, `margin_top_scored`) use r = beta * (log pi - log pi_ref) "
        f"with the {REFERENCE_POLICY.upper()} checkpoint as pi_ref, on every held-out group. The {REFERENCE_POLICY.upper()} "
        "policy is its own reference, so its implicit rewards are identically zero: its margins are zero by "
        "construction and carry no information, so none is reported. Margins compare preference methods trained "
        "from the same reference. `margin_hardest` is over the dispreferred response the *policy* rates highest; "
        "`margin_top_scored` over the one the *scores* rank highest (the hard negative HPS draws most).",
        "- `reward_mean` / `reward_best_of_k`: reward-model score of the policy's own generations (mean / max over "
        "the k samples of a prompt); `win_rate_vs_sft`: share of prompts whose mean reward is strictly above SFT's.",
        f"- `harmful_rate`: share of samples the judge `{judge_name}` flags, averaged over safety prompts (groups "
        "with a response labelled harmful; every prompt when the set has no harm labels or sets `all_safety_prompts`).",
        "- `bleu`: sacrebleu corpus BLEU (0-100) of the best-of-k generation against the group's preferred response; "
        "`bleu_char`: the reference HPS code's character-level sentence BLEU (0-1, nltk semantics), mean over prompts.",
    ]
    return "\n".join(out)
