"""What every step function of every flow gets: the config, the run directory, the tracker and the parent
MLflow run (one context for hps_flow, compare_flow, expand_flow and routing_flow)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hps_core.common.gang import Gang
from hps_core.tracking.null import NullTracker
from hps_core.tracking.base import Tracker


@dataclass
class StepContext:
    cfg: Any  # hps_core.config.PipelineConfig; hps_core.routing.config.RoutingConfig in the routing flow
    run_dir: Path  # everything this run writes: data, groups, checkpoints, eval tables
    tracker: Tracker = field(default_factory=NullTracker)
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # lineage tags put on every MLflow run
    step: str = ""  # the flow step running (its [resources.<step>] cpu sets the threads); "" = shared [resources]
    gang: Gang = field(default_factory=Gang)  # this task's node in a multi-node gang (@parallel); one node by default

    def __post_init__(self) -> None:
        # torch would start one thread per visible core, however many CPUs the step asked for
        # (hps_core.common.cpu_threads: side-by-side steps and CPU-limited pods oversubscribe badly); set
        # when the step imports torch, so the steps that never do (validate, register) do not import it
        from hps_core.common.cpu_threads import configure_torch_threads_when_imported

        resources = getattr(self.cfg, "resources", None)  # the routing flow's steps train nothing
        if resources is not None:
            configure_torch_threads_when_imported(resources.threads_of(self.step))

    @property
    def cache_dir(self) -> Path:
        """Shared across runs: built tiny models and reference log-probs, keyed by content digests."""
        return Path(os.environ.get("HPS_CACHE_DIR", Path(self.cfg.run.output_dir) / "cache")).resolve()

    def path(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def dir(self, *parts: str) -> Path:
        """A directory under the run directory, created."""
        p = self.run_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    def child(self, name: str):
        return self.tracker.child_run(self.parent_run_id or "", name, tags=self.tags)

    def metric_logger(self, run_id: str, prefix: str):
        return lambda metrics, step: self.tracker.log_metrics(
            run_id, {f"{prefix}{k}" if prefix and "/" not in k else k: v for k, v in metrics.items()}, step=step
        )
