"""What each step of the flow does, as plain functions: the flow file only orchestrates them.

Every function takes a :class:`StepContext` (config, run directory, tracker, parent MLflow run) and
returns small JSON-able results (paths, digests, metrics); models and tables move between steps as files,
never as pickled artifacts: each producer publishes what it hands on to its MLflow run and returns a
reference (:mod:`hps_core.tracking.handoff`), which a consumer on another machine downloads by URI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from hps_core.recipes.stage_checkpoints import checkpoint_dir, drop_checkpoints, restore_checkpoints
from hps_core.tracking.handoff import Ref, local, publish
from hps_core.sampling.negatives import draw_negatives
from hps_core.tracking.step_context import StepContext


def validate(ctx: StepContext) -> dict[str, Any]:
    """Raw data -> canonical table -> data contracts. On a violation, ``data.on_invalid = "fail"`` raises
    ContractViolation (after logging the report) so nothing downstream runs on data that broke a contract;
    ``"quarantine"`` removes the failing rows/groups (kept in contracts/quarantine.parquet, counted) and
    goes on if at least ``data.min_keep_fraction`` of the rows remain."""
    from hps_core.data import load_canonical, table_digest
    from hps_core.data.validation import card_markdown
    from hps_core.registry.lineage import upstream_lineage

    data_cfg = ctx.cfg.data
    raw = load_canonical(data_cfg, ctx.cfg.run.seed, ctx.path("data"))
    with ctx.child("validate") as run_id:
        outcome, paths = enforce_and_log(ctx, run_id, raw.table, raw.load_report, ctx.run_dir / "contracts")
        report, table = outcome.report, outcome.table
        canonical_path = ctx.path("data", "canonical.parquet")
        table.to_parquet(canonical_path, index=False)
        canonical = publish(ctx, run_id, canonical_path, "canonical")
    return {
        "canonical": canonical,
        "canonical_path": str(canonical_path),
        "raw_files": raw.raw_files,
        "canonical_digest": table_digest(table),
        "contract": {"success": report.success, "suites": report.suites, "statistics": report.statistics,
                     "quarantined": bool(len(outcome.quarantined))},
        "counts": outcome.counts,
        "contract_files": paths,
        "report_markdown": card_markdown(report, outcome.counts, raw.load_report),
        # who labelled the data (prompts per label_source) and what produced the raw files (sidecars)
        "label_sources": {str(k): int(v) for k, v in table.groupby("label_source")["prompt_id"].nunique().items()},
        "upstream": upstream_lineage(raw.raw_files),
    }


def enforce_and_log(ctx: StepContext, run_id: str, table: pd.DataFrame, load_report: dict[str, Any] | None, out_dir: Path):
    """The data contracts on ``table`` with the configured bounds and ``data.on_invalid``; the report, counts and
    quarantined rows are written under ``out_dir`` and logged to ``run_id`` whether the contracts pass or not.
    Returns (ContractOutcome, written paths); raises ContractViolation when nothing may go on."""
    from data_contracts import ContractViolation, enforce_contracts
    from hps_core.data.validation import contract_bounds, write_and_log

    data_cfg = ctx.cfg.data
    try:
        outcome = enforce_contracts(table, on_invalid=data_cfg.on_invalid,
                                    min_keep_fraction=data_cfg.min_keep_fraction, **contract_bounds(data_cfg))
    except ContractViolation as err:
        counts = {"rows_read": float(len(table)), "contract_failures": float(len(err.report.failures))}
        write_and_log(ctx.tracker, run_id, out_dir, err.report, counts, load_report)
        raise
    paths = write_and_log(ctx.tracker, run_id, out_dir, outcome.report, outcome.counts, load_report, outcome.quarantined)
    return outcome, paths


def _groups_with_negatives(ctx: StepContext, table: pd.DataFrame, folder: str) -> dict[str, Any]:
    """Groups of a canonical table, checked to make a run, and the run's negatives drawn from them; both
    written under ``<run dir>/<folder>/``. Returns their paths, digest and stats (JSON-able)."""
    from hps_core.sampling import groups as G

    groups = G.build_groups(table)
    G.check_splits(groups, ctx.cfg)  # data that cannot make a run stops here, before any training
    negatives = draw_negatives(ctx.cfg, groups)
    groups_path, negatives_path = ctx.path(folder, "groups.parquet"), ctx.path(folder, "negatives.parquet")
    groups.to_parquet(groups_path, index=False)
    negatives.to_parquet(negatives_path, index=False)
    return {"groups_path": str(groups_path), "negatives_path": str(negatives_path),
            "groups_digest": G.groups_digest(groups, negatives), "stats": G.group_stats(groups, negatives)}


def _hand_on_groups(ctx: StepContext, run_id: str, made: dict[str, Any]) -> dict[str, Any]:
    """Log the groups' stats to ``run_id`` and publish groups and negatives for the next steps."""
    ctx.tracker.log_metrics(run_id, {f"groups/{k}": v for k, v in made["stats"].items()})
    return {"groups": publish(ctx, run_id, made["groups_path"], "groups"),
            "negatives": publish(ctx, run_id, made["negatives_path"], "negatives")}


def build_groups(ctx: StepContext, canonical: Ref) -> dict[str, Any]:
    """Groups per prompt, negatives drawn per epoch (seeded), and the base model resolved (the tiny one
    is built here, once, before the training branches start)."""

    table = pd.read_parquet(local(ctx, canonical))
    made = _groups_with_negatives(ctx, table, "groups")
    base = resolve_base_model(ctx, table)
    with ctx.child("build_groups") as run_id:
        handed = {**_hand_on_groups(ctx, run_id, made),
                  # the tiny model is built here, so later steps on other machines fetch it; hub ids and GGUF
                  # sources pass as they are (each machine fetches or converts its own copy, cached)
                  "base": publish(ctx, run_id, base, "base_model") if ctx.cfg.model.base == "tiny" else ctx.cfg.model.base}
    return {
        **handed,
        **made,
        "base_model": base if ctx.cfg.model.base == "tiny" else ctx.cfg.model.base,
    }


def model_dir(ctx: StepContext, ref, key: str = "model.base") -> str:
    """A loadable model for a handed-on reference or configured source: a local path (downloaded when
    another machine produced it), a hub id, or a GGUF source's converted directory (cached by digest, so
    each machine converts once)."""
    from hps_core.models.sources import materialize

    return materialize(local(ctx, ref), ctx.cache_dir / "models", key)


def resolve_base_model(ctx: StepContext, table: pd.DataFrame) -> str:
    """The configured base model (a GGUF file converted here, once, before the training branches start),
    or the tiny default built from the corpus (cached by digest)."""
    if ctx.cfg.model.base != "tiny":
        return model_dir(ctx, ctx.cfg.model.base)
    from hps_core.models.loading import build_tiny_model, tiny_corpus

    corpus = tiny_corpus(table["prompt"], table["response"])
    return str(build_tiny_model(corpus, ctx.cfg.model.tiny, seed=ctx.cfg.run.seed, cache_dir=ctx.cache_dir / "models"))


def train_sft(ctx: StepContext, groups: Ref, base_model: Ref) -> dict[str, Any]:
    from hps_core.train.launch import train_stage

    groups_path, base_model = local(ctx, groups), model_dir(ctx, base_model)
    out, mirror = ctx.path("models", "sft"), None
    with ctx.child("train_sft") as run_id:
        if ctx.cfg.sft.epochs == 0:  # the base is already an SFT model: it is the SFT checkpoint as it is
            from hps_core.train.sft import adopt_base_as_sft

            metrics = adopt_base_as_sft(base_model, ctx.cfg.model, out)
        else:
            mirror = restore_checkpoints(ctx, "sft", keep=ctx.cfg.sft.save_total_limit)
            metrics = train_stage(  # in this process, or data-parallel under torchrun ([resources.train_sft])
                "sft", ctx.cfg, base_model, groups_path, out, work_dir=ctx.run_dir / "torchrun" / "sft",
                seed=ctx.cfg.run.seed, log_fn=ctx.metric_logger(run_id, "sft/"), checkpoint_dir=checkpoint_dir(ctx, "sft"),
                on_checkpoint=mirror.push if mirror else None,
            )
        ctx.tracker.log_metrics(run_id, {f"sft/final_{k}" if "/" not in k else k: v for k, v in metrics.items()})
        model = publish(ctx, run_id, out, "sft")
    drop_checkpoints(ctx, "sft", mirror)
    return {"model": model, "model_dir": str(out), "metrics": metrics}


def train_on_other_node(ctx: StepContext, name: str, stage: str, model: str, groups_path, out, keep: int, **stage_args) -> None:
    """A gang's node other than 0 (``[resources.train_hps] nodes > 1``): its ranks train beside node 0's, from the
    same checkpoint when the stage resumes (a fresh pod fetches it as node 0 does); node 0 alone logs to
    MLflow, copies checkpoints, saves and publishes the model."""
    from hps_core.train.launch import train_stage

    restore_checkpoints(ctx, name, keep=keep)
    train_stage(stage, ctx.cfg, model, groups_path, out, **stage_args)


def train_reward_model(ctx: StepContext, groups: Ref, base_model: Ref) -> dict[str, Any]:
    """Train a Bradley-Terry reward model when none is configured; otherwise just name the configured one."""
    if ctx.cfg.reward_model.path:  # handed on as configured: each machine fetches or converts it itself
        path = ctx.cfg.reward_model.path
        return {"model": path, "model_dir": path, "metrics": {}, "trained": False}
    from hps_core.train.launch import train_stage

    groups_path, base_model = local(ctx, groups), model_dir(ctx, base_model)
    out = ctx.path("models", "reward_model")
    with ctx.child("train_reward_model") as run_id:
        metrics = train_stage(  # in this process, or data-parallel under torchrun ([resources.train_reward_model])
            "reward", ctx.cfg, base_model, groups_path, out, work_dir=ctx.run_dir / "torchrun" / "reward_model",
            seed=ctx.cfg.run.seed, log_fn=ctx.metric_logger(run_id, "reward_model/"),
        )
        ctx.tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if "/" in k})
        model = publish(ctx, run_id, out, "reward_model")
    return {"model": model, "model_dir": str(out), "metrics": metrics, "trained": True}


def train_hps(ctx: StepContext, groups: Ref, negatives: Ref, sft_model: Ref) -> dict[str, Any]:
    from hps_core.train.launch import train_stage

    groups_path, negatives_path, sft_dir = local(ctx, groups), local(ctx, negatives), local(ctx, sft_model)
    out = ctx.path("models", "hps")
    drawn = ctx.path("groups", "negatives_drawn.parquet")  # on-policy hardness: what the trainer drew
    stage = dict(negatives_path=negatives_path, work_dir=ctx.run_dir / "torchrun" / "hps", seed=ctx.cfg.run.seed,
                 cache_dir=ctx.cache_dir / "reference", checkpoint_dir=checkpoint_dir(ctx, "hps"),
                 drawn_negatives_path=drawn, gang=ctx.gang)
    if not ctx.gang.is_main:
        train_on_other_node(ctx, "hps", "preference", sft_dir, groups_path, out, ctx.cfg.hps.save_total_limit, **stage)
        return {"node": ctx.gang.node_index}
    with ctx.child("train_hps") as run_id:
        mirror = restore_checkpoints(ctx, "hps", keep=ctx.cfg.hps.save_total_limit)
        metrics = train_stage(  # in this process, or data-parallel under torchrun ([resources.train_hps])
            "preference", ctx.cfg, sft_dir, groups_path, out, log_fn=ctx.metric_logger(run_id, ""),
            on_checkpoint=mirror.push if mirror else None, **stage)
        if drawn.is_file():
            ctx.tracker.log_artifact(run_id, str(drawn), "groups")
        model = publish(ctx, run_id, out, "hps")
    drop_checkpoints(ctx, "hps", mirror)
    return {"model": model, "model_dir": str(out), "metrics": metrics}


def expand(ctx: StepContext, canonical: Ref, groups: dict[str, Any], sft_model: Ref, reward_model: Ref) -> dict[str, Any]:
    """``expand.k > 0``: each training prompt's group grows to ``k`` responses sampled from the SFT model (the
    policy's starting point and reference), every response in it scored by the flow's reward model (one
    scale); the expanded table passes the data contracts like any input, and groups and negatives are built
    again from it. With ``expand.k = 0`` the flow's expand step passes the groups through without calling
    this (nor building a step context), so that is the one place the pass-through lives."""
    if ctx.cfg.expand.k == 0:
        raise ValueError("expand() grows groups to [expand] k responses; k = 0 means no expansion: pass "
                         "build_groups' result on as it is (flows/hps_flow.py's expand step does)")
    from hps_core.data import table_digest
    from hps_core.data.validation import card_markdown
    from hps_core.recipes.expansion import expand_training_prompts

    cfg = ctx.cfg
    table = pd.read_parquet(local(ctx, canonical))
    expanded, load_report, jsonl = expand_training_prompts(
        table, model_dir(ctx, sft_model), model_dir(ctx, reward_model, "reward_model.path"), cfg,
        ctx.path("expansion", "expanded.jsonl"))
    with ctx.child("expand") as run_id:
        outcome, _ = enforce_and_log(ctx, run_id, expanded, load_report, ctx.run_dir / "contracts_expanded")
        table = outcome.table
        table_path = ctx.path("data", "expanded.parquet")
        table.to_parquet(table_path, index=False)
        made = _groups_with_negatives(ctx, table, "expansion")
        ctx.tracker.log_artifact(run_id, str(jsonl), "expansion")
        handed = _hand_on_groups(ctx, run_id, made)
    return {
        **groups,
        **handed,
        **made,
        "expanded": True,
        "expanded_digest": table_digest(table),
        "expanded_path": str(table_path),
        "report_markdown": card_markdown(outcome.report, outcome.counts, load_report),
    }


def evaluate(ctx: StepContext, groups: Ref, sft_model: Ref, hps_model: Ref, reward_model: Ref) -> dict[str, Any]:
    """SFT and HPS side by side: generations scored by the reward model and the harm judge; implicit
    margins of the HPS policy (the SFT policy is its own reference, so its margins are 0 by construction
    and are not reported)."""
    from hps_core.evaluate.report import run_evaluation

    return run_evaluation(ctx, pd.read_parquet(local(ctx, groups)), local(ctx, sft_model), local(ctx, hps_model),
                          model_dir(ctx, reward_model, "reward_model.path"))


def register(ctx: StepContext, sft_model: Ref, hps_model: Ref, metrics: dict[str, dict[str, float]], lineage: dict[str, str],
             validation: dict[str, Any] | None = None, groups: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both checkpoints become model versions with metrics, lineage tags, datasets, ``lineage.json`` and a
    model card; the new HPS version gets ``challenger``, and ``champion`` if the promotion gate passes
    (``hps_core.registry``; aliases move last, so a failure leaves them where they were)."""
    from hps_core.registry.register import register_models

    if validation and validation.get("canonical"):  # the canonical table is logged as a dataset input
        validation = {**validation, "canonical_path": local(ctx, validation["canonical"])}
    return register_models(ctx, local(ctx, sft_model), local(ctx, hps_model), metrics, lineage,
                           validation=validation, groups=groups)
