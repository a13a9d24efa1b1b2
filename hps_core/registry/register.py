"""The register step: SFT and HPS checkpoints become model versions, the gate decides the champion.

Order matters for "no alias moves when anything failed": the register step runs only after every other
step succeeded, and inside it the aliases move last, after both versions exist with their tags, lineage
record and model card. If moving an alias fails, the aliases already moved are put back.

Each version is registered from its own child run: MLflow's compare-versions page shows the metrics of
each version's run, so two versions from one run would show the same numbers. Both runs carry the
datasets (raw files and canonical table, with our sha256) and ``lineage.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hps_core.registry.lineage import RECORD_FILE, lineage_record
from hps_core.registry.promotion import GateDecision, judge
from hps_core.config.rules import parse_rules
from hps_core.tracking.base import RegisteredVersion, Tracker
from hps_core.config.metric_names import CARD_METRICS

if TYPE_CHECKING:
    from hps_core.config.schema import PipelineConfig
    from hps_core.tracking.step_context import StepContext

log = logging.getLogger(__name__)

MAX_REASONS_TAG = 5000


def register_models(ctx: "StepContext", sft_dir: str, hps_dir: str, metrics: dict[str, dict[str, float]],
                    lineage: dict[str, str], *, validation: dict[str, Any] | None = None,
                    groups: dict[str, Any] | None = None) -> dict[str, Any]:
    reg, tracker = ctx.cfg.register, ctx.tracker
    champion = tracker.get_version_by_alias(reg.policy_name, reg.champion_alias) if reg.champion_alias else None
    champion_metrics = tracker.version_metrics(champion) if champion else None
    decision = judge(metrics["hps"], champion_metrics, gate=parse_rules(reg.gate, relative=True),
                     floors=parse_rules(reg.floors, relative=False),
                     champion_uri=champion.model_uri if champion else None)
    common = {"mlflow_parent_run_id": ctx.parent_run_id}

    sft_tags = {**lineage, "stage": "sft", "method": "sft"}
    sft_record = lineage_record(lineage, validation=validation, groups=groups, method="sft",
                                parent_version=None, **common)
    sft = _register_one(ctx, "register-sft", sft_dir, reg.sft_name, metrics["sft"], sft_tags, sft_record,
                        model_card("SFT", ctx.cfg, metrics["sft"], lineage, sft_record), validation)

    hps_tags = {**lineage, "stage": "preference", "method": ctx.cfg.hps.method, "parent_version": sft.model_uri}
    if reg.champion_alias:
        hps_tags.update(gate_tags(decision, reg.champion_alias))
    hps_record = lineage_record(lineage, validation=validation, groups=groups, method=ctx.cfg.hps.method,
                                parent_version=sft.model_uri, gate=_decision_dict(decision), **common)
    card = model_card(ctx.cfg.hps.method, ctx.cfg, metrics["hps"], lineage, hps_record, parent=sft.model_uri,
                      champion=champion, champion_metrics=champion_metrics,
                      decision=decision if reg.champion_alias else None, champion_alias=reg.champion_alias)
    hps = _register_one(ctx, "register-hps", hps_dir, reg.policy_name, metrics["hps"], hps_tags, hps_record,
                        card, validation)

    moves = {reg.alias: hps.version}
    if reg.champion_alias and decision.promote:
        moves[reg.champion_alias] = hps.version
    move_aliases(tracker, reg.policy_name, moves)
    print(f"promotion gate for {hps.model_uri}: {decision.summary()}")
    return {"sft": sft.model_uri, "hps": hps.model_uri, "alias": f"models:/{reg.policy_name}@{reg.alias}"}


def _register_one(ctx: "StepContext", run_name: str, model_dir: str, name: str, metrics: dict[str, float],
                  tags: dict[str, str], record: dict[str, Any], description: str,
                  validation: dict[str, Any] | None) -> RegisteredVersion:
    # A resumed run whose register step failed after this model was registered must not register it twice.
    key = {k: tags[k] for k in ("metaflow.pathspec", "stage") if k in tags}
    if len(key) == 2 and (done := ctx.tracker.find_version(name, key)) is not None:
        print(f"{done.model_uri} was already registered by {key['metaflow.pathspec']}; not registering it again")
        return done
    with ctx.child(run_name) as run_id:
        ctx.tracker.log_params(run_id, {"config": ctx.cfg.to_dict()})
        log_datasets(ctx.tracker, run_id, validation)
        ctx.tracker.log_dict(run_id, record, RECORD_FILE)
        return ctx.tracker.register_hf_model(run_id, model_dir, name, metrics=metrics, tags=tags,
                                             description=description)


def log_datasets(tracker: Tracker, run_id: str, validation: dict[str, Any] | None) -> None:
    """Raw files and the canonical table as dataset inputs of ``run_id`` (context ``training``)."""
    if not validation:
        return
    for path, digest in sorted((validation.get("raw_files") or {}).items()):
        tracker.log_file_dataset(run_id, path, digest, name=f"raw:{Path(path).name}", context="training")
    canonical_path = validation.get("canonical_path")
    if canonical_path and Path(canonical_path).is_file():
        import pandas as pd

        tracker.log_table_dataset(run_id, pd.read_parquet(canonical_path), name="canonical",
                                  sha256=validation["canonical_digest"], source=canonical_path, context="training")


def move_aliases(tracker: Tracker, name: str, moves: dict[str, int]) -> None:
    """Point each alias at its version; on a failure, put back the aliases already moved, then raise."""
    before = {alias: tracker.get_version_by_alias(name, alias) for alias in moves}
    done: list[str] = []
    try:
        for alias, version in moves.items():
            tracker.set_alias(name, alias, version)
            done.append(alias)
    except Exception:
        for alias in reversed(done):
            try:
                previous = before[alias]
                if previous is None:
                    tracker.delete_alias(name, alias)
                else:
                    tracker.set_alias(name, alias, previous.version)
            except Exception as err:  # keep the original error; say what is left to fix by hand
                log.error("could not restore alias %s of %s (was %s): %s", alias, name, before[alias], err)
        raise


def gate_tags(decision: GateDecision, champion_alias: str) -> dict[str, str]:
    reasons = "; ".join(decision.reasons)
    return {"gate.decision": decision.outcome, "gate.champion_alias": champion_alias,
            "gate.judged_against": decision.champion or "none (first version)",
            "gate.reasons": reasons[:MAX_REASONS_TAG]}


def _decision_dict(decision: GateDecision) -> dict[str, Any]:
    return {"decision": decision.outcome, "judged_against": decision.champion, "reasons": decision.reasons}


def model_card(what: str, cfg: "PipelineConfig", metrics: dict[str, float], lineage: dict[str, str],
               record: dict[str, Any], *, parent: str | None = None, champion: RegisteredVersion | None = None,
               champion_metrics: dict[str, float] | None = None, decision: GateDecision | None = None,
               champion_alias: str = "champion") -> str:
    """The version description: a short model card in Markdown (the registry UI renders it)."""
    raw = ", ".join(f"`{Path(f['path']).name}` (sha256 `{f['sha256'][:12]}…`)" for f in record["raw_files"]) or "?"
    suites = ", ".join(f"{k}@{v}" for k, v in (record["contract"]["suites"] or {}).items()) or "?"
    origin = f"fine-tuned from SFT version `{parent}`" if parent else f"supervised fine-tuning of `{lineage.get('base_model', cfg.model.base)}`"
    lines = [
        f"**{what} policy** ({origin}), trained by the HPS pipeline.",
        "",
        f"- **Data**: source `{cfg.data.source}`; raw files {raw}; canonical table sha256 "
        f"`{str(record['canonical']['sha256'])[:12]}…`; contracts {suites}: {record['contract']['result'] or '?'}.",
        f"- **Method**: `{what if parent else 'sft'}`"
        + (f", beta {cfg.hps.beta}, gamma {cfg.hps.gamma} ({cfg.hps.gamma_schedule}), epochs {cfg.hps.epochs}"
           if parent else f", epochs {cfg.sft.epochs}")
        + f"; reward model `{lineage.get('reward_model', '?')}`.",
        f"- **Run**: Metaflow `{lineage.get('metaflow.pathspec', '?')}`, git `{lineage.get('git_commit', '?')}`.",
        "",
    ]
    against = f"{champion_alias} {champion.model_uri}" if champion else None
    header = "| metric | this version | 95% CI |" + (f" {against} | Δ |" if against else "")
    lines += [header, "|---|---|---|" + ("---|---|" if against else "")]
    for k in CARD_METRICS:
        if k not in metrics:
            continue
        row = f"| {k} | {metrics[k]:.4f} | [{metrics.get(k + '_ci_low', float('nan')):.4f}, {metrics.get(k + '_ci_high', float('nan')):.4f}] |"
        if against:
            c = (champion_metrics or {}).get(k)
            row += f" {c:.4f} | {metrics[k] - c:+.4f} |" if c is not None else " – | – |"
        lines.append(row)
    if decision is not None:
        lines += ["", f"**Promotion gate: {decision.outcome}** ({'takes' if decision.promote else 'does not take'} "
                  f"`{champion_alias}`; judged {'against ' + decision.champion if decision.champion else 'on absolute floors (first version)'})."]
        lines += [f"- {r}" for r in decision.reasons]
    lines += ["", "Lineage: `python -m hps_core.lineage models:/<name>/<this version> --verify`."]
    return "\n".join(lines)
