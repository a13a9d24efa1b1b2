"""What each step of the routing flow does (``flows/routing_flow.py`` only orchestrates).

Every function takes a :class:`~hps_core.tracking.step_context.StepContext` and returns small JSON-able results; tables, masks and the
PPM move between steps as files under the run directory, published to the step's MLflow run and handed on
by reference (:mod:`hps_core.tracking.handoff`), as in the HPS flow.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hps_core.tracking.handoff import local, publish
from hps_core.routing.config import RoutingConfig, budget_count, parse_floats, split_list
from hps_core.tracking.step_context import StepContext


# --------------------------------------------------------------------------- tables on disk
@dataclass
class Inputs:
    """What validate wrote: the pairs, the gold pairs (with their dev/test split), tags, the tag space."""

    pool: pd.DataFrame
    gold: pd.DataFrame
    target: pd.DataFrame
    pool_tags: np.ndarray
    target_tags: np.ndarray
    tag_names: list[str]
    truth: pd.DataFrame | None  # held-back gold labels of the pool (generated world only)
    target_is_pool: bool


def read_inputs(ctx: StepContext, validated: dict[str, Any]) -> Inputs:
    root = Path(local(ctx, validated["data"]))
    pool = pd.read_parquet(root / "pool.parquet")
    target_is_pool = not (root / "target.parquet").is_file()
    target = pool if target_is_pool else pd.read_parquet(root / "target.parquet")
    pool_tags = pd.read_parquet(root / "pool_tags.parquet")
    target_tags = pool_tags if target_is_pool else pd.read_parquet(root / "target_tags.parquet")
    truth = pd.read_parquet(root / "pool_truth.parquet") if (root / "pool_truth.parquet").is_file() else None
    return Inputs(pool, pd.read_parquet(root / "gold.parquet"), target, pool_tags.to_numpy(bool),
                  target_tags.to_numpy(bool), list(pool_tags.columns), truth, target_is_pool)


def _labels(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].astype(str).to_numpy(object)


# --------------------------------------------------------------------------- validate
def validate(ctx: StepContext) -> dict[str, Any]:
    """Read the pairs (generated or a file), the gold pairs and the target through the adapter, run the
    contracts (a violation stops the flow with the report), tag every instance, split the gold pairs."""
    from data_contracts import ContractReport, ContractViolation, render_data_docs, validate_pairwise
    from hps_core.data.canonical import assign_split
    from hps_core.routing import features as F
    from hps_core.routing.multipref import read_pairs, write_generated

    cfg, d = ctx.cfg, ctx.cfg.data
    out = ctx.dir("data")
    if d.source == "generated":
        paths = write_generated(out / "raw", cfg.run.seed, d.n_instances, d.n_gold)
        source, gold_source, truth_source = paths["pool"], paths["gold"], paths["pool_truth"]
    else:
        source, gold_source, truth_source = d.source, d.gold_source, None
    pool, gold = read_pairs(source, d.fields), read_pairs(gold_source, d.fields, gold=True)
    target = read_pairs(d.target_source, d.fields) if d.target_source else None
    bounds = {"max_prompt_chars": d.max_prompt_chars, "max_response_chars": d.max_response_chars}
    reports = [validate_pairwise(pool.table, **bounds), validate_pairwise(gold.table, gold=True, **bounds)]
    if target is not None:
        reports.append(validate_pairwise(target.table, **bounds))
    report = ContractReport(success=all(r.success for r in reports), suites={k: v for r in reports for k, v in r.suites.items()},
                            outcomes=[o for r in reports for o in r.outcomes], parameters=bounds,
                            gx_results=[g for r in reports for g in r.gx_results])
    raw_files = {**pool.raw_files, **gold.raw_files, **(target.raw_files if target is not None else {})}
    counts = {"pairs": len(pool.table), "gold_pairs": len(gold.table),
              "target_pairs": len(target.table) if target is not None else len(pool.table),
              "human_ties": int((pool.table["human_label"] == "tie").sum()),
              "ai_ties": int((pool.table["ai_label"] == "tie").sum()),
              "human_ai_agreement": float((pool.table["human_label"] == pool.table["ai_label"]).mean())}
    contract_md = _contract_markdown(report, counts, raw_files)
    with ctx.child("validate") as run_id:
        (out / "contracts").mkdir(exist_ok=True)
        (out / "contracts" / "validation_result.json").write_text(json.dumps(report.to_dict(), indent=2))
        (out / "contracts" / "data_docs.html").write_text(render_data_docs(report), encoding="utf-8")
        (out / "contracts" / "validation_report.md").write_text(contract_md, encoding="utf-8")
        ctx.tracker.log_artifact(run_id, out / "contracts", "contracts")
        ctx.tracker.log_metrics(run_id, {f"data/{k}": float(v) for k, v in counts.items()})
        for path, digest in raw_files.items():
            ctx.tracker.log_file_dataset(run_id, path, digest, name=Path(path).name, context="routing-input")
        if not report.success:
            raise ContractViolation(report)
        tagger = F.load_tagger(cfg.features.tagger)
        space = F.fit_tag_space(pool.table, split_list(cfg.features.stats), cfg.features.descriptive, tagger)
        tables = {"pool": pool.table, "pool_tags": F.tag_matrix(pool.table, space, cfg.features.descriptive, tagger)}
        if target is not None:
            tables["target"] = target.table
            tables["target_tags"] = F.tag_matrix(target.table, space, cfg.features.descriptive, tagger)
        g = gold.table.copy()
        g["split"] = assign_split(g["instance_id"].astype(str), d.gold_test_fraction, cfg.run.seed).map(
            {"eval": "test", "train": "dev"}).astype("string")
        n_test = int((g["split"] == "test").sum())
        if not 0 < n_test < len(g):
            raise ValueError(f"the {len(g)} gold pairs split into {n_test} test and {len(g) - n_test} dev pairs; both "
                             "are needed (dev trains the PPM, test compares the mixes): add gold pairs or change "
                             "data.gold_test_fraction")
        tables["gold"] = g
        if truth_source is not None:
            tables["pool_truth"] = pd.read_json(truth_source, lines=True, dtype={"id": str})
        for name, table in tables.items():
            table.to_parquet(out / f"{name}.parquet", index=False)
        (out / "tag_space.json").write_text(json.dumps(space.to_dict(), indent=2))
        ctx.tracker.log_metrics(run_id, {"data/tags": float(len(space.names)),
                                         "data/gold_test_pairs": float(n_test)})
        data = publish(ctx, run_id, out, "routing_data")
    return {"data": data, "raw_files": raw_files, "counts": counts, "tag_names": space.names,
            "contract_suites": report.suites, "report_markdown": contract_md}


def _contract_markdown(report, counts: dict[str, Any], raw_files: dict[str, str]) -> str:
    lines = [f"# Data contracts {'passed' if report.success else 'FAILED'}", "", "| count | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in counts.items()]
    lines += ["", "Raw files: " + ", ".join(f"`{Path(p).name}` (sha256 {d[:12]})" for p, d in raw_files.items()), "",
              report.to_markdown()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- simulate
def _probe_kw(cfg: RoutingConfig) -> dict[str, Any]:
    return {"l2": cfg.probe.l2, "ties": cfg.probe.ties, "max_iter": cfg.probe.max_iter}


def _diffs(cfg: RoutingConfig, *tables: pd.DataFrame):
    from hps_core.routing.reward_probe import featurizer, pair_differences

    vec = featurizer(cfg.probe.n_features, cfg.probe.ngram_max)
    return [pair_differences(vec, t["response_a"], t["response_b"]) for t in tables]


def simulate(ctx: StepContext, validated: dict[str, Any]) -> dict[str, Any]:
    """Training mixes of the pool (random budgets, tag-driven fills), a reward model trained on each
    mix's labels, scored on the gold dev pairs."""
    from hps_core.routing.candidates import tag_counts, training_mixes
    from hps_core.routing.reward_probe import score_mixes

    cfg = ctx.cfg
    inp = read_inputs(ctx, validated)
    dev = inp.gold[inp.gold["split"] == "dev"]
    masks, kinds = training_mixes(inp.pool_tags, cfg.ppm.n_mixes, cfg.ppm.random_share, cfg.run.seed)
    started = time.perf_counter()
    diff, diff_dev = _diffs(cfg, inp.pool, dev)
    accuracy = score_mixes(masks, diff, _labels(inp.pool, "human_label"), _labels(inp.pool, "ai_label"),
                           diff_dev, _labels(dev, "gold_label"), **_probe_kw(cfg))
    seconds = time.perf_counter() - started
    counts = tag_counts(masks, inp.pool_tags)
    table = pd.DataFrame({"mix": np.arange(len(masks)), "kind": kinds, "budget": masks.sum(axis=1), "accuracy": accuracy})
    table = pd.concat([table, pd.DataFrame(counts, columns=inp.tag_names)], axis=1)
    out = ctx.dir("mixes")
    table.to_parquet(out / "mixes.parquet", index=False)
    np.save(out / "masks.npy", masks, allow_pickle=False)
    anchors = {("all_ai" if m.sum() == 0 else "all_human"): a for m, a, k in zip(masks, accuracy, kinds) if k == "anchor"}
    stats = {"sim/n_mixes": float(len(masks)), "sim/seconds": seconds, "sim/seconds_per_mix": seconds / len(masks),
             "sim/acc_min": float(accuracy.min()), "sim/acc_max": float(accuracy.max()),
             **{f"sim/dev_acc_{k}": float(v) for k, v in anchors.items()}}
    with ctx.child("simulate") as run_id:
        ctx.tracker.log_metrics(run_id, stats)
        mixes = publish(ctx, run_id, out, "mixes")
    print(f"simulated {len(masks)} mixes in {seconds:.1f} s (dev accuracy {accuracy.min():.3f} .. {accuracy.max():.3f})")
    return {"mixes": mixes, "stats": stats}


# --------------------------------------------------------------------------- fit the PPM
def fit(ctx: StepContext, validated: dict[str, Any], simulated: dict[str, Any]) -> dict[str, Any]:
    """The quadratic PPM on every simulated mix, its cross-validated Spearman and RMSE, registered as a
    new version of ``output.ppm_name`` (the JSON of its coefficients and the tag space it reads)."""
    from hps_core.routing.ppm import cross_validate, fit_ppm

    cfg = ctx.cfg
    tag_names = validated["tag_names"]
    mixes = pd.read_parquet(Path(local(ctx, simulated["mixes"])) / "mixes.parquet")
    counts, scores = mixes[tag_names].to_numpy(float), mixes["accuracy"].to_numpy(float)
    alphas = parse_floats(cfg.ppm.alphas)
    ppm = fit_ppm(counts, scores, tag_names, alphas, n_instances=validated["counts"]["pairs"])
    cv = cross_validate(counts, scores, tag_names, alphas, cfg.ppm.cv_folds, cfg.run.seed)
    out = ctx.dir("ppm")
    space = json.loads((Path(local(ctx, validated["data"])) / "tag_space.json").read_text())
    digest = ppm.digest()
    (out / "ppm.json").write_text(json.dumps({
        "ppm": ppm.to_dict(), "sha256": digest, "tag_space": space,
        "features": cfg.to_dict()["features"], "probe": cfg.to_dict()["probe"],
        "cv": {"spearman": cv["spearman"], "rmse": cv["rmse"], "folds": cfg.ppm.cv_folds},
        "trained_on": {"mixes": len(scores), "pairs": validated["counts"]["pairs"], "raw_files": validated["raw_files"]},
    }, indent=2))
    pd.DataFrame({"mix": mixes["mix"], "kind": mixes["kind"], "actual": scores, "predicted": cv["predicted"]}).to_parquet(
        out / "cv_predictions.parquet", index=False)
    metrics = {"ppm/cv_spearman": cv["spearman"], "ppm/cv_rmse": cv["rmse"], "ppm/alpha": ppm.alpha,
               "ppm/n_mixes": float(len(scores)), "ppm/n_tags": float(len(tag_names))}
    with ctx.child("fit_ppm") as run_id:
        ctx.tracker.log_metrics(run_id, metrics)
        version = ctx.tracker.register_artifact_version(
            run_id, out, "ppm", cfg.output.ppm_name,
            tags={**ctx.tags, "ppm_sha256": digest, "cv_spearman": f"{cv['spearman']:.4f}", "cv_rmse": f"{cv['rmse']:.5f}"},
            description=(f"HyPER performance prediction model: quadratic ridge regression (alpha {ppm.alpha:g}) from the "
                         f"counts of human-routed instances per tag ({len(tag_names)} tags) to a Bradley-Terry reward "
                         f"model's gold accuracy, fitted on {len(scores)} mixes. {cfg.ppm.cv_folds}-fold CV: Spearman "
                         f"{cv['spearman']:.3f}, RMSE {cv['rmse']:.4f}. Files: ppm.json (coefficients, tag space), "
                         "cv_predictions.parquet."))
    print(f"PPM {version.model_uri}: CV Spearman {cv['spearman']:.3f}, RMSE {cv['rmse']:.4f}, alpha {ppm.alpha:g}")
    uri = ctx.tracker.artifact_uri(run_id, "ppm")
    return {"ppm": {"path": str(out), "uri": uri}, "model_uri": version.model_uri, "version": version.version,
            "sha256": digest, "cv": {"spearman": cv["spearman"], "rmse": cv["rmse"]}, "alpha": ppm.alpha}


def load_ppm(ctx: StepContext, fitted: dict[str, Any]):
    from hps_core.routing.ppm import QuadraticPPM

    record = json.loads((Path(local(ctx, fitted["ppm"])) / "ppm.json").read_text())
    return QuadraticPPM.from_dict(record["ppm"]), Path(local(ctx, fitted["ppm"]))


# --------------------------------------------------------------------------- route
def route(ctx: StepContext, validated: dict[str, Any], fitted: dict[str, Any], pathspec: str) -> dict[str, Any]:
    """Both routing rules on the target at the budget; the configured one is written out as scored
    JSONL with ``label_source`` per record, a lineage sidecar and an hps config."""
    from hps_core.routing.route import best_predicted, choose, route_by_gain, write_routed

    cfg = ctx.cfg
    inp = read_inputs(ctx, validated)
    ppm, _ = load_ppm(ctx, fitted)
    budget = budget_count(cfg.route.budget, len(inp.target))
    simulated = best_predicted(ppm, inp.target_tags, budget, cfg.route.n_candidates,
                               random_share=cfg.ppm.random_share, seed=cfg.run.seed + 1)
    gain = route_by_gain(ppm, inp.target_tags, budget)
    chosen = choose(cfg.route.rule, simulated, gain)
    lineage = {
        "routing_run": pathspec, "mlflow_parent_run_id": ctx.parent_run_id, "git_commit": ctx.tags.get("git_commit"),
        "config_digest": ctx.tags.get("config_digest"), "rule": chosen.rule, "budget": budget,
        "ppm": {"model_uri": fitted["model_uri"], "sha256": fitted["sha256"], "cv": fitted["cv"]},
        "inputs": validated["raw_files"],
        # copied into the lineage tags of an hps_flow run that reads the routed file (hps_core.registry.lineage.upstream_lineage)
        "tags": {"routing_run": pathspec, "ppm_version": fitted["model_uri"], "routing_rule": chosen.rule},
    }
    out = ctx.dir("routed")
    written = write_routed(out, inp.target, chosen.mask, lineage, cfg.output.hps_base_config)
    np.savez(out / "masks.npz", hyper=chosen.mask, gain=gain.mask, best_simulated=simulated.mask)
    predicted = {"hyper": chosen.predicted, "gain": gain.predicted, "best_simulated": simulated.predicted}
    metrics = {"routing/budget": float(budget), **{f"routing/predicted_{k}": v for k, v in predicted.items()},
               "routing/candidates_predicted_median": float(np.median(simulated.candidates_predicted)),
               "routing/rows_human": float(written["counts"]["human"]), "routing/rows_ai": float(written["counts"]["ai"]),
               "routing/ties_dropped": float(written["counts"]["ties_dropped"])}
    with ctx.child("route") as run_id:
        ctx.tracker.log_metrics(run_id, metrics)
        ctx.tracker.set_tags(run_id, {"ppm_version": fitted["model_uri"], "routed_sha256": written["sha256"]})
        ctx.tracker.log_file_dataset(run_id, written["routed_path"], written["sha256"], name="routed.jsonl",
                                     context="routing-output")
        routed = publish(ctx, run_id, out, "routed")
    print(f"routed {len(inp.target)} instances, {int(chosen.mask.sum())} to humans ({chosen.rule}): {written['routed_path']}")
    return {"routed": routed, **written, "budget": budget, "rule": chosen.rule, "predicted": predicted}


# --------------------------------------------------------------------------- report
def report(ctx: StepContext, validated: dict[str, Any], simulated: dict[str, Any], fitted: dict[str, Any],
           routed: dict[str, Any]) -> dict[str, Any]:
    """Reward models trained on 100 % human, 100 % AI, random mixes at the budget and the HyPER mix (and
    the other rule's), scored on the held-out gold test pairs; the PPM's CV fit; the tags sent to humans."""
    from hps_core.routing import report as R
    from hps_core.routing.candidates import random_mix
    from hps_core.routing.reward_probe import mix_labels, score_mixes

    cfg = ctx.cfg
    inp = read_inputs(ctx, validated)
    ppm, ppm_dir = load_ppm(ctx, fitted)
    test = inp.gold[inp.gold["split"] == "test"]
    n, budget = len(inp.target), routed["budget"]
    picked = np.load(Path(local(ctx, routed["routed"])) / "masks.npz")
    rng = np.random.default_rng(cfg.run.seed + 2)
    randoms = [random_mix(n, budget, rng) for _ in range(cfg.route.n_random_baselines)]
    masks = {"all_human": np.ones(n, bool), "all_ai": np.zeros(n, bool), "hyper": picked["hyper"],
             "gain": picked["gain"], "best_simulated": picked["best_simulated"]}
    human, ai = _labels(inp.target, "human_label"), _labels(inp.target, "ai_label")
    diff, diff_test = _diffs(cfg, inp.target, test)
    all_masks = np.array(list(masks.values()) + randoms)
    acc_all = score_mixes(all_masks, diff, human, ai, diff_test, _labels(test, "gold_label"), **_probe_kw(cfg))
    acc = dict(zip(masks, acc_all[: len(masks)]))
    acc["random"] = float(np.mean(acc_all[len(masks):]))
    random_sd = float(np.std(acc_all[len(masks):], ddof=1)) if len(randoms) > 1 else 0.0
    share = {k: float(m.mean()) for k, m in masks.items()} | {"random": budget / n}
    label_acc = None
    if inp.truth is not None and inp.target_is_pool:
        truth = inp.target["instance_id"].map(dict(zip(inp.truth["id"], inp.truth["gold_preference"]))).to_numpy(object)
        label_acc = {k: float(np.mean(mix_labels(m, human, ai) == truth)) for k, m in masks.items()}
        label_acc["random"] = float(np.mean([np.mean(mix_labels(m, human, ai) == truth) for m in randoms]))
    comparison = R.comparison_table(acc, share, label_acc, random_sd)
    sweep = budget_sweep(ctx, ppm, inp, diff, diff_test, _labels(test, "gold_label"))
    tags = R.tag_table(validated["tag_names"], inp.target_tags, picked["hyper"], ppm.tag_gains())
    cv_pred = pd.read_parquet(ppm_dir / "cv_predictions.parquet")
    info = {"n_target": n, "budget": budget, "rule": routed["rule"], "ppm_uri": fitted["model_uri"],
            "n_mixes": len(cv_pred), "alpha": fitted["alpha"], "n_gold_test": len(test), "n_random": len(randoms),
            "cv_folds": cfg.ppm.cv_folds, "predicted": routed["predicted"]}
    text = R.markdown(comparison, tags, fitted["cv"], info, sweep)
    metrics = R.metrics(comparison, fitted["cv"], budget, n)
    out = ctx.dir("report")
    comparison.to_parquet(out / "comparison.parquet", index=False)
    tags.to_parquet(out / "tags.parquet", index=False)
    (out / "report.md").write_text(text, encoding="utf-8")
    sweep.to_parquet(out / "budget_sweep.parquet", index=False)
    fig = R.figure(cv_pred["actual"].to_numpy(), cv_pred["predicted"].to_numpy(), list(cv_pred["kind"]), comparison,
                   fitted["cv"], sweep)
    figure_path = out / "routing_report.png"
    fig.savefig(figure_path, dpi=110)
    with ctx.child("report") as run_id:
        ctx.tracker.log_metrics(run_id, metrics)
        ctx.tracker.log_artifact(run_id, out, "report")
    ctx.tracker.log_metrics(ctx.parent_run_id, metrics)
    ctx.tracker.log_artifact(ctx.parent_run_id, out, "report")
    ctx.tracker.log_artifact(ctx.parent_run_id, Path(routed["routed_path"]).parent, "routed")
    return {"metrics": metrics, "markdown": text, "figure_path": str(figure_path), "comparison": comparison.to_dict("records")}


def budget_sweep(ctx: StepContext, ppm, inp: Inputs, diff, diff_test, gold_test: np.ndarray) -> pd.DataFrame:
    """HyPER (the configured rule) and one random mix per budget of ``route.sweep``, scored like the
    main comparison: where routing pays off is a curve, not a single budget."""
    from hps_core.routing.candidates import random_mix
    from hps_core.routing.reward_probe import score_mixes
    from hps_core.routing.route import best_predicted, choose, route_by_gain

    cfg, n = ctx.cfg, len(inp.target)
    rows, masks = [], []
    rng = np.random.default_rng(cfg.run.seed + 3)
    for share in parse_floats(cfg.route.sweep):
        budget = budget_count(share, n)
        gain = route_by_gain(ppm, inp.target_tags, budget)
        simulated = best_predicted(ppm, inp.target_tags, budget, cfg.route.n_candidates,
                                   random_share=cfg.ppm.random_share, seed=cfg.run.seed + 1)
        chosen = choose(cfg.route.rule, simulated, gain)
        masks += [chosen.mask, random_mix(n, budget, rng)]
        rows.append({"budget_share": share, "budget": budget, "hyper_human_share": float(chosen.mask.mean()),
                     "hyper_predicted": chosen.predicted})
    if not rows:
        return pd.DataFrame(columns=["budget_share", "budget", "hyper_human_share", "hyper_predicted", "acc_hyper", "acc_random"])
    acc = score_mixes(np.array(masks), diff, _labels(inp.target, "human_label"), _labels(inp.target, "ai_label"),
                      diff_test, gold_test, **_probe_kw(cfg))
    table = pd.DataFrame(rows)
    table["acc_hyper"], table["acc_random"] = acc[0::2], acc[1::2]
    return table
