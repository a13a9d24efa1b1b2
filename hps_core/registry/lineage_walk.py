"""Walk a registered model version back to the raw bytes (DESIGN.md section 6), print it, verify it.

Run as::

    python -m hps_core.lineage models:/hps-policy/3              # the chain as text
    python -m hps_core.lineage models:/hps-policy@champion --json
    python -m hps_core.lineage models:/hps-policy@champion --verify

The chain: model version -> MLflow run (params = resolved config, metrics, datasets) -> parent version
(HPS -> SFT) -> MLflow parent run and the flow's step runs (evaluation table, drawn negatives, validation
result) -> Metaflow run (and its tags pointing back) -> groups digest -> contracts -> canonical table
digest -> raw file digests. ``--verify`` re-hashes every raw file (data and model files such as a GGUF base; and the canonical table) still
reachable from this machine and exits 1 on a mismatch, naming the file; unreachable files are listed,
not failed (a laptop cannot reach a cluster's disk). The tracking URI is ``--tracking-uri``, else
``MLFLOW_TRACKING_URI``, else ``./mlflow.db``; the Metaflow run is looked up from the working directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hps_core.registry.lineage import RECORD_FILE
from hps_core.common.digests import file_sha256
from hps_core.config.metric_names import LINEAGE_METRICS

EXIT_OK, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
RUN_ARTIFACTS = {"evaluate": ["eval/generations.parquet", "eval/implicit_rewards.parquet", "eval/comparison.md"],
                 "build_groups": ["handoff/negatives/negatives.parquet"],  # uploaded once, as the step's handoff
                 "validate": ["contracts/validation_result.json", "contracts/validation_report.md"],
                 # hps_flow's expand step, when it grew the groups ([expand] k > 0): the generated file, the
                 # contracts on it and the negatives drawn from the grown groups (which training used)
                 "expand": ["expansion/expanded.jsonl", "contracts/validation_result.json",
                            "handoff/negatives/negatives.parquet"]}


def _negatives_artifact(step_artifacts: dict[str, list[str]]) -> str | None:
    """The negatives training used: the expand step's when it grew the groups, else build_groups'."""
    for step in ("expand", "build_groups"):
        found = [a for a in step_artifacts.get(step, []) if a.endswith("negatives.parquet")]
        if found:
            return found[0]
    return None


def walk(reader: Any, uri: str, *, follow_parent: bool = True) -> dict[str, Any]:
    """The lineage chain of ``uri`` as a JSON-able dict; ``reader`` is a :class:`hps_core.tracking.MlflowReader`."""
    mv = reader.model_version(uri)
    tags = mv["tags"]
    chain: dict[str, Any] = {"model_version": {k: mv[k] for k in ("uri", "name", "version", "aliases", "status",
                                                                  "model_id", "source")}}
    chain["model_version"]["gate"] = {k[len("gate."):]: v for k, v in tags.items() if k.startswith("gate.")} or None
    chain["model_version"]["metrics"] = mv["metrics"]
    run = reader.run(mv["run_id"]) if mv["run_id"] else None
    record = (reader.run_json(mv["run_id"], RECORD_FILE) if mv["run_id"] else None) or {}
    chain["mlflow_run"] = None if run is None else {
        "run_id": run["run_id"], "name": run["name"], "status": run["status"], "n_params": len(run["params"]),
        "config_digest": tags.get("config_digest"), "datasets": run["datasets"],
        "lineage_record": f"runs:/{run['run_id']}/{RECORD_FILE}" if record else None}
    parent_uri = tags.get("parent_version")
    chain["parent_version"] = (walk(reader, parent_uri, follow_parent=False)["model_version"]
                               if parent_uri and follow_parent else parent_uri)
    parent_run_id = (run or {}).get("tags", {}).get("mlflow.parentRunId") or record.get("mlflow_parent_run_id")
    steps: dict[str, str] = {}
    if parent_run_id:
        parent_run = reader.run(parent_run_id)
        steps = reader.child_runs(parent_run_id, parent_run["experiment_id"])
        chain["mlflow_parent_run"] = {"run_id": parent_run_id, "status": parent_run["status"], "step_runs": steps}
    else:
        chain["mlflow_parent_run"] = None
    chain["step_artifacts"] = {step: [f"runs:/{steps[step]}/{a}" for a in arts]
                               for step, arts in RUN_ARTIFACTS.items() if step in steps}
    pathspec = tags.get("metaflow.pathspec") or record.get("metaflow_pathspec")
    chain["metaflow_run"] = metaflow_links(pathspec, parent_run_id, mv["uri"])
    validation = reader.run_json(steps["validate"], "contracts/validation_result.json") if "validate" in steps else None
    contract = record.get("contract") or {}
    chain["groups"] = {**(record.get("groups") or {"digest": tags.get("groups_digest")}),
                       "negatives_artifact": _negatives_artifact(chain["step_artifacts"])}
    chain["validation"] = {"suites": contract.get("suites") or tags.get("contract_suites"),
                           "result": contract.get("result") or tags.get("contract_result"),
                           "statistics": contract.get("statistics") or (validation or {}).get("statistics")}
    chain["canonical"] = record.get("canonical") or {"sha256": tags.get("canonical_digest")}
    if tags.get("expanded_digest"):  # the groups trained on came from the canonical table grown by the expand step
        chain["expansion"] = {"how": tags.get("expansion"), "expanded_table_sha256": tags["expanded_digest"]}
    chain["raw_files"] = record.get("raw_files") or []
    chain["model_files"] = record.get("model_files") or []  # e.g. the GGUF file the base model came from
    chain["code_version"] = tags.get("git_commit")
    chain["base_model"], chain["reward_model"] = tags.get("base_model"), tags.get("reward_model")
    chain["method"] = tags.get("method")
    chain["links"] = link_checks(chain, tags, run)
    return chain


def metaflow_links(pathspec: str | None, mlflow_run_id: str | None, version_uri: str) -> dict[str, Any]:
    """The Metaflow run and whether its tags point back at the MLflow run and this version."""
    out: dict[str, Any] = {"pathspec": pathspec, "reachable": False}
    if not pathspec:
        return out
    try:
        from metaflow import Run, namespace

        namespace(None)
        tags = sorted(Run(pathspec).user_tags)
    except Exception as err:  # another machine's metadata, or Metaflow not installed here
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    out.update(reachable=True, user_tags=tags, tagged_mlflow_run=f"mlflow_run:{mlflow_run_id}" in tags,
               tagged_model_version=f"model:{version_uri}" in tags)
    return out


def link_checks(chain: dict[str, Any], tags: dict[str, str], run: dict[str, Any] | None) -> dict[str, bool | None]:
    """Each link of the chain: True (present and consistent), False (broken), None (not checkable here)."""
    mf = chain["metaflow_run"]
    digests = {d.get("sha256") for d in (run or {}).get("datasets", [])}
    return {
        "version->run": run is not None,
        "version->metaflow_pathspec": bool(tags.get("metaflow.pathspec")),
        "run->metaflow_pathspec": bool(run and run["tags"].get("metaflow.pathspec") == tags.get("metaflow.pathspec")),
        "version->parent_version": bool(chain["parent_version"]) if chain["method"] != "sft" else None,
        "run->parent_run": chain["mlflow_parent_run"] is not None,
        "metaflow->mlflow_run": mf.get("tagged_mlflow_run") if mf["reachable"] else None,
        "metaflow->model_version": mf.get("tagged_model_version") if mf["reachable"] else None,
        "version->groups_digest": bool(chain["groups"].get("digest")),
        "version->contracts": chain["validation"]["result"] is not None,
        "version->canonical_digest": bool(chain["canonical"].get("sha256")),
        "version->raw_files": bool(chain["raw_files"]),
        "run->datasets": bool(chain["raw_files"]) and all(f["sha256"] in digests for f in chain["raw_files"]),
        "version->code_version": bool(tags.get("git_commit")),
    }


def verify(chain: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-hash every reachable raw file (and the canonical table); one result per file."""
    results = []
    for f in chain["raw_files"] + chain.get("model_files", []):
        path = Path(f["path"])
        if not path.is_file():
            results.append({"path": str(path), "status": "unreachable", "expected": f["sha256"]})
            continue
        found = file_sha256(path)
        results.append({"path": str(path), "status": "ok" if found == f["sha256"] else "MISMATCH",
                        "expected": f["sha256"], "found": found})
    canonical = chain["canonical"]
    if canonical.get("path") and Path(canonical["path"]).is_file():
        import pandas as pd

        from hps_core.data import table_digest

        found = table_digest(pd.read_parquet(canonical["path"]))
        results.append({"path": canonical["path"], "status": "ok" if found == canonical["sha256"] else "MISMATCH",
                        "expected": canonical["sha256"], "found": found, "kind": "canonical table digest"})
    return results


def format_text(chain: dict[str, Any], checks: list[dict[str, Any]] | None = None) -> str:
    mv, run, mf = chain["model_version"], chain["mlflow_run"], chain["metaflow_run"]
    gate = mv.get("gate") or {}
    metric_keys = LINEAGE_METRICS
    metrics = ", ".join(f"{k} {mv['metrics'][k]:.4g}" for k in metric_keys if k in mv["metrics"])
    parent = chain["parent_version"]
    lines = [
        f"{mv['uri']}  aliases: {', '.join(mv['aliases']) or '-'}  method: {chain['method']}  ({metrics})",
        f"  gate: {gate.get('decision', '-')} against {gate.get('judged_against', '-')}" if gate else "  gate: -",
        *(f"    {r}" for r in (gate.get("reasons") or "").split("; ") if r),
        f"  -> MLflow run {run['run_id']} ({run['name']}, {run['status']}), {run['n_params']} params, "
        f"config digest {str(run['config_digest'])[:12]}, lineage {run['lineage_record']}" if run else "  -> MLflow run: none",
        f"  -> parent version {parent['uri'] if isinstance(parent, dict) else parent or '-'}",
        f"  -> MLflow parent run {(chain['mlflow_parent_run'] or {}).get('run_id', '-')} "
        f"({(chain['mlflow_parent_run'] or {}).get('status', '-')})",
        *(f"       {step}: {', '.join(a)}" for step, a in chain["step_artifacts"].items()),
        f"  -> Metaflow run {mf['pathspec']}"
        + (f" (tags back: mlflow_run {_yn(mf['tagged_mlflow_run'])}, model {_yn(mf['tagged_model_version'])})"
           if mf["reachable"] else f" (not reachable from here: {mf.get('error', 'no pathspec')})"),
        f"  -> groups digest {chain['groups'].get('digest')}",
        *([f"  -> expanded table sha256 {chain['expansion']['expanded_table_sha256']} ({chain['expansion']['how']}), "
           "grown from:"] if chain.get("expansion") else []),
        f"  -> contracts {chain['validation']['suites']}: {chain['validation']['result']}",
        f"  -> canonical table sha256 {chain['canonical'].get('sha256')} ({chain['canonical'].get('rows')} rows)",
        "  -> raw files:",
        *(f"       {f['path']}  sha256 {f['sha256']}" for f in chain["raw_files"]),
        *(["  -> model files:"] if chain.get("model_files") else []),
        *(f"       {f['role']}: {f['path']}  sha256 {f['sha256']}" for f in chain.get("model_files", [])),
        f"  base model {chain['base_model']}; reward model {chain['reward_model']}; code {chain['code_version']}",
        "  links: " + ", ".join(f"{k} {_yn(v)}" for k, v in chain["links"].items()),
    ]
    if checks is not None:
        lines += ["verify:"] + [f"  {c['status']:<11} {c['path']}" + (f" (expected {c['expected']}, found {c['found']})"
                                                                    if c["status"] == "MISMATCH" else "") for c in checks]
    return "\n".join(lines)


def _yn(v: bool | None) -> str:
    return {True: "ok", False: "BROKEN", None: "n/a"}[v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hps lineage", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_uri", help="models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument("--json", action="store_true", help="print the chain as JSON")
    parser.add_argument("--verify", action="store_true", help="re-hash reachable raw files; exit 1 on a mismatch")
    parser.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    args = parser.parse_args(argv)
    from hps_core.tracking.reader import MlflowReader
    from hps_core.tracking.base import TrackingError

    try:
        chain = walk(MlflowReader(args.tracking_uri), args.model_uri)
    except (TrackingError, ValueError) as err:
        print(f"lineage: {err}", file=sys.stderr)
        return EXIT_ERROR
    checks = verify(chain) if args.verify else None
    if args.json:
        print(json.dumps({**chain, "verify": checks} if checks is not None else chain, indent=2, default=str))
    else:
        print(format_text(chain, checks))
    bad = [c for c in checks or [] if c["status"] == "MISMATCH"]
    for c in bad:
        print(f"lineage: MISMATCH {c['path']}: sha256 {c['found']} != recorded {c['expected']}", file=sys.stderr)
    return EXIT_MISMATCH if bad else EXIT_OK
