"""What every flow's ``start`` step does, and how every step rebuilds its context from the flow's artifacts.

All four flows (hps, compare, expand, routing) resolve their config, choose their run directory, record
the code version and open one MLflow parent run the same way; their steps then rebuild a step context
(config, run directory, tracker, parent run, lineage tags) from those few artifacts. One place for both
keeps the lineage tags and the run layout identical across flows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hps_core.common.gang import Gang
from hps_core.tracking.step_context import StepContext

# The flow artifacts a step context is rebuilt from (set by ``start`` from :func:`open_run`'s result).
RUN_ARTIFACTS = ("resolved_config", "run_dir", "tracking_uri", "lineage", "mlflow_parent_run_id")


def open_run(cfg: Any, *, flow_name: str, run_id: str, run_name: str, runs_dir: str = "runs",
             digest_config: bool = True, extra_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the run layout and open the MLflow parent run ``run_name``; returns the artifacts of
    :data:`RUN_ARTIFACTS`, for ``start`` to set on the flow. ``cfg`` is a resolved config object with
    ``to_dict()`` and ``run.output_dir``/``run.experiment``; ``extra_params`` are logged beside it."""
    from hps_core.common.digests import code_version, json_digest
    from hps_core.tracking.mlflow_tracker import MlflowTracker
    from hps_core.tracking.base import mask_uri_credentials, resolve_tracking_uri

    resolved = cfg.to_dict()
    lineage = {"metaflow.pathspec": f"{flow_name}/{run_id}", "git_commit": code_version()}
    if digest_config:
        lineage["config_digest"] = json_digest(resolved)
    tracking_uri = resolve_tracking_uri()
    # Stored without credentials: every step re-reads them from its own environment (live_tracking_uri).
    opened = {"resolved_config": resolved, "run_dir": str((Path(cfg.run.output_dir) / runs_dir / run_id).resolve()),
              "tracking_uri": mask_uri_credentials(tracking_uri), "lineage": lineage}
    tracker = MlflowTracker(tracking_uri, experiment_name=cfg.run.experiment)
    opened["mlflow_parent_run_id"] = tracker.create_parent_run(run_name, tags=lineage)
    tracker.log_params(opened["mlflow_parent_run_id"], {**resolved, **(extra_params or {})})
    print(f"MLflow: {opened['tracking_uri']} (run {opened['mlflow_parent_run_id']}); outputs in {opened['run_dir']}")
    return opened


def step_context(flow: Any, cfg: Any, sub: str = "") -> StepContext:
    """The step context of ``flow`` (a FlowSpec whose ``start`` set :data:`RUN_ARTIFACTS`): ``cfg``, the run
    directory (or its ``sub`` folder), an MLflow tracker, the parent run and the lineage tags."""
    from hps_core.tracking.mlflow_tracker import MlflowTracker

    from metaflow import current

    tracker = MlflowTracker(flow.tracking_uri, experiment_name=cfg.run.experiment)
    return StepContext(cfg, Path(flow.run_dir) / sub, tracker, flow.mlflow_parent_run_id, dict(flow.lineage),
                       step=current.step_name or "", gang=gang_of_current_task())


def gang_of_current_task() -> Gang:
    """The running task's place in its @parallel gang (Metaflow's ``current.parallel``); one node outside one."""
    from metaflow import current

    if not getattr(current, "is_parallel", False):
        return Gang()
    parallel = current.parallel
    return Gang(nodes=parallel.num_nodes, node_index=parallel.node_index, main_addr=parallel.main_ip)
