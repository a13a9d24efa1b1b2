"""What the comparison flow does around one (method, n, seed) branch.

Every branch starts from the same SFT checkpoint (also the frozen reference) and is judged by the same
reward model and harm judge; what a seed changes is the negative draws, the training init/shuffle and the
evaluation sampling (``run.seed`` of the branch's config copy). What a branch measures about cost: the
mean optimizer-step time over the whole run (from the trainer's logged windows) and the peak memory of
training (CPU: growth of this process's peak RSS; GPU: ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hps_core.config.compare_spec import parse_method_spec
from hps_core.sampling.negatives import draw_negatives
from hps_core.config.schema import PipelineConfig
from hps_core.tracking.handoff import Ref, local, publish
from hps_core.config.metric_names import COST_METRICS, QUALITY_METRICS, SFT_METRICS

if TYPE_CHECKING:
    from hps_core.tracking.step_context import StepContext

# What one branch reports, in table order (evaluate metrics of the policy, then the cost of training).


def plan_runs(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """One branch per (group size, method, seed), in table order."""
    return [
        {"entry": spec.entry, "label": spec.label, "slug": spec.slug, "method": spec.method, "bt_rule": spec.bt_rule,
         "n": int(n), "seed": int(seed), "name": f"{spec.slug}_n{n}_s{seed}"}
        for n in cfg.compare.group_sizes
        for spec in map(parse_method_spec, cfg.compare.methods)
        for seed in cfg.compare.seeds
    ]


def branch_config(cfg: PipelineConfig, run: dict[str, Any]) -> PipelineConfig:
    """The base config with this branch's method, bt rule or hardness, [hps] overrides and seed."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=int(run["seed"])),
                               hps=parse_method_spec(run["entry"]).apply_to(cfg.hps))


def branch_context(ctx: "StepContext", run: dict[str, Any], parent_run_id: str | None) -> "StepContext":
    """The branch's own config copy, output directory (``compare/<name>/``) and MLflow parent run."""
    return dataclasses.replace(ctx, cfg=branch_config(ctx.cfg, run), run_dir=ctx.run_dir / "compare" / run["name"],
                               parent_run_id=parent_run_id)


def subsample_groups(groups: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Training groups cut to ``n`` responses: the preferred one plus ``n - 1`` of the others drawn
    uniformly (seeded per prompt, so every method and seed sees the same groups); held-out groups and groups
    with at most ``n`` responses are kept whole. ``n = 0`` returns ``groups`` unchanged."""
    if n == 0:
        return groups
    out = groups.copy()
    for i, g in enumerate(groups.itertuples(index=False)):
        if g.split != "train" or g.n <= n:
            continue
        rng = np.random.default_rng([seed, int.from_bytes(str(g.prompt_id).encode()[:8].ljust(8, b"\0"), "big") >> 1])
        keep = [0, *sorted(rng.choice(np.arange(1, g.n), size=n - 1, replace=False).tolist())]
        scores = [g.scores[k] for k in keep]
        harmful = list(g.is_harmful) if g.is_harmful is not None else [None] * g.n
        out.at[i, "n"] = n
        for col, values in (("response_ids", g.response_ids), ("responses", g.responses), ("scores", g.scores)):
            out.at[i, col] = [values[k] for k in keep]
        out.at[i, "is_harmful"] = [harmful[k] for k in keep]
        out.at[i, "dispreferred_ids"] = [g.response_ids[k] for k in keep[1:]]
        out.at[i, "score_gap"] = float(scores[0] - scores[1])
        out.at[i, "n_top_ties"] = int(sum(s == scores[0] for s in scores[1:]))
    return out


def group_size_files(ctx: "StepContext", groups: Ref) -> dict[str, Any]:
    """The groups of every ``compare.group_sizes`` entry, written and handed on by reference (``str(n)`` keys)."""
    table = pd.read_parquet(local(ctx, groups))
    refs, sizes = {}, {}
    with ctx.child("compare_groups") as run_id:
        for n in ctx.cfg.compare.group_sizes:
            sub = subsample_groups(table, int(n), ctx.cfg.run.seed)
            path = ctx.path("compare", "groups", f"groups_n{n}.parquet")
            sub.to_parquet(path, index=False)
            refs[str(n)] = publish(ctx, run_id, path, f"groups_n{n}")
            train = sub[sub["split"] == "train"]
            sizes[str(n)] = {"train_groups": int(len(train)), "responses_per_train_group": float(train["n"].mean())}
        ctx.tracker.log_metrics(run_id, {f"n{n}/responses_per_train_group": v["responses_per_train_group"] for n, v in sizes.items()})
    return {"groups": refs, "sizes": sizes}


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class StepTimes:
    """A trainer ``log_fn`` wrapper that keeps every logged window's ``step_time_s``, weighted by the
    optimizer steps in the window, so the mean covers the whole run (not only the last window)."""

    def __init__(self, inner=None):
        self.inner, self.total_s, self.steps, self._last = inner, 0.0, 0, 0

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        if "step_time_s" in metrics and step > self._last:
            self.total_s += float(metrics["step_time_s"]) * (step - self._last)
            self.steps += step - self._last
            self._last = step
        if self.inner is not None:
            self.inner(metrics, step)

    @property
    def mean_ms(self) -> float:
        return 1000.0 * self.total_s / self.steps if self.steps else float("nan")


def train_method(ctx: "StepContext", run: dict[str, Any], groups: Ref, sft_model: Ref) -> dict[str, Any]:
    """Draw this branch's negatives and train its method from the SFT checkpoint; returns the model
    reference and the cost of training (mean step time, peak memory)."""
    import torch

    from hps_core.train.launch import train_stage

    spec = parse_method_spec(run["entry"])
    groups_path, sft_dir = local(ctx, groups), local(ctx, sft_model)
    with ctx.child(f"{spec.label} n={run['n']} seed={run['seed']}") as branch_run:
        ctx.tracker.log_params(branch_run, {"method": spec.method, "bt_negative_rule": spec.bt_rule or "-",
                                            "group_size": run["n"], "seed": run["seed"]})
    bctx = branch_context(ctx, run, branch_run)
    cfg = bctx.cfg
    negatives = draw_negatives(cfg, pd.read_parquet(groups_path))
    negatives_path, drawn = bctx.path("groups", "negatives.parquet"), bctx.path("groups", "negatives_drawn.parquet")
    negatives.to_parquet(negatives_path, index=False)
    out = bctx.path("models", "policy")
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    rss_before = peak_memory_mb()
    with bctx.child("train") as run_id:
        times = StepTimes(bctx.metric_logger(run_id, ""))
        started = time.perf_counter()
        metrics = train_stage(
            "preference", cfg, sft_dir, groups_path, out, negatives_path=negatives_path,
            work_dir=bctx.run_dir / "torchrun", seed=cfg.run.seed, cache_dir=ctx.cache_dir / "reference",
            log_fn=times, checkpoint_dir=bctx.path("checkpoints", "policy"), drawn_negatives_path=drawn,
        )
        wall = time.perf_counter() - started
        cost = {
            "step_time_ms": times.mean_ms,
            # CPU: how far training raised this process's peak RSS; GPU: the allocator's peak during training
            "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else peak_memory_mb() - rss_before,
            "peak_rss_mb": peak_memory_mb(),
            "train_wall_s": wall,
            "steps": float(metrics.get("steps", float("nan"))),
        }
        bctx.tracker.log_metrics(run_id, {f"cost/{k}": v for k, v in cost.items()})
        if drawn.is_file():  # on-policy hardness: the negatives the trainer drew replace the plan
            negatives = pd.read_parquet(drawn)
            negatives_path = drawn
        bctx.tracker.log_artifact(run_id, str(negatives_path), "groups")
        model = publish(bctx, run_id, out, "policy")
    return {"model": model, "branch_run_id": branch_run, "cost": cost, "memory_kind": "cuda_max_allocated" if on_gpu else "rss_growth",
            "negative_is_hardest_share": float((negatives["negative_rank"] == 1).mean()) if len(negatives) else float("nan")}


def evaluate_method(ctx: "StepContext", run: dict[str, Any], groups: Ref, sft_model: Ref, policy_model: Ref,
                    reward_model: Ref, branch_run_id: str | None) -> dict[str, Any]:
    """SFT and this branch's policy through the evaluate step's code (same reward model and judge); the
    policy's metrics and the SFT's (the reference row of the table) with their per-prompt intervals."""
    from hps_core.evaluate.report import evaluate_policies

    bctx = branch_context(ctx, run, branch_run_id)
    result = evaluate_policies(bctx, pd.read_parquet(local(ctx, groups)),
                               {"sft": local(ctx, sft_model), "policy": local(ctx, policy_model)}, local(ctx, reward_model))
    return {"policy": result["metrics"]["policy"], "sft": result["metrics"]["sft"],
            "comparison_markdown": result["comparison_markdown"]}


def result_row(run: dict[str, Any], trained: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
    """One row of the per-seed table: the branch's identity, quality metrics, cost, and SFT's numbers."""
    row = {k: run[k] for k in ("label", "method", "bt_rule", "n", "seed")}
    row.update({k: float(evaluated["policy"].get(k, float("nan"))) for k in QUALITY_METRICS})
    row.update({k: float(trained["cost"][k]) for k in COST_METRICS})
    row.update({f"sft_{k}": float(evaluated["sft"].get(k, float("nan"))) for k in SFT_METRICS})
    row["negative_is_hardest_share"] = trained.get("negative_is_hardest_share", float("nan"))
    return row


def write_outputs(ctx: "StepContext", rows: list[dict[str, Any]], sizes: dict[str, dict[str, float]], *,
                  wall_s: float | None = None) -> dict[str, Any]:
    """The per-seed table, the aggregated table, markdown and plot under ``compare/``, logged to a
    ``compare_report`` MLflow run (artifacts ``compare/*`` and one metric per method, n and column).
    ``sizes``: :func:`group_size_files`' measured sizes per group size (``str(n)`` keys)."""
    from hps_core.evaluate.comparison import aggregate, comparison_figure, report_markdown

    per_seed = pd.DataFrame(rows).sort_values(["n", "seed"], kind="stable").reset_index(drop=True)
    order = {parse_method_spec(e).label: i for i, e in enumerate(ctx.cfg.compare.methods)}
    per_seed = per_seed.sort_values(["n", "label", "seed"], key=lambda c: c.map(order) if c.name == "label" else c,
                                    kind="stable").reset_index(drop=True)
    agg = aggregate(per_seed)
    markdown = report_markdown(agg, per_seed, sizes, wall_s=wall_s)
    paths = {"per_seed": ctx.path("compare", "per_seed.csv"), "aggregate": ctx.path("compare", "aggregate.csv"),
             "markdown": ctx.path("compare", "comparison.md"), "figure": ctx.path("compare", "comparison.png")}
    per_seed.to_csv(paths["per_seed"], index=False)
    agg.to_csv(paths["aggregate"], index=False)
    paths["markdown"].write_text(markdown)
    fig = comparison_figure(agg)
    fig.savefig(paths["figure"], dpi=110, bbox_inches="tight")
    with ctx.child("compare_report") as run_id:
        flat = {}
        for r in agg.itertuples(index=False):
            key = f"{r.slug}/n{r.n}/{r.metric}"
            flat.update({f"{key}_mean": r.mean, f"{key}_ci_low": r.ci_low, f"{key}_ci_high": r.ci_high, f"{key}_seeds": float(r.seeds)})
        ctx.tracker.log_metrics(run_id, {k: v for k, v in flat.items() if np.isfinite(v)})
        for path in paths.values():
            ctx.tracker.log_artifact(run_id, str(path), "compare")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {"markdown": markdown, "paths": {k: str(v) for k, v in paths.items()}}

