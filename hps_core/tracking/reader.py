"""The read-only side of MLflow (model versions, runs, step runs, JSON artifacts), used by the lineage walk
(``hps lineage``); it creates nothing on the server.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any
from hps_core.tracking.base import live_tracking_uri, PARENT_RUN_TAG, resolve_tracking_uri
from hps_core.tracking.mlflow_tracker import MlflowTracker
from hps_core.tracking.registration import _version_metrics



def parse_model_uri(uri: str) -> tuple[str, str, str]:
    """``models:/<name>/<version>`` -> (name, "version", version); ``models:/<name>@<alias>`` ->
    (name, "alias", alias). Anything else is a ValueError that shows both forms."""
    body = uri[len("models:/"):] if uri.startswith("models:/") else ""
    if "@" in body and "/" not in body:
        name, alias = body.split("@", 1)
        if name and alias:
            return name, "alias", alias
    elif body.count("/") == 1:
        name, version = body.split("/")
        if name and version.isdigit():
            return name, "version", version
    raise ValueError(f"{uri!r} is not a registered model URI; use models:/<name>/<version> "
                     "(models:/hps-policy/3) or models:/<name>@<alias> (models:/hps-policy@champion)")


class MlflowReader:
    """Read-only views of registry entries and runs, as plain dicts, for the lineage walk. Creates
    nothing (no experiment, no run) and leaves the process-wide tracking URI alone."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        import mlflow

        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.tracking_uri = live_tracking_uri(tracking_uri or resolve_tracking_uri())
        MlflowTracker._check_reachable(self)  # type: ignore[arg-type]  # same fail-fast probe
        self.client = mlflow.MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    _guard = MlflowTracker._guard

    def model_version(self, uri: str) -> dict[str, Any]:
        name, kind, ref = parse_model_uri(uri)
        with self._guard(f"resolve {uri}"):
            mv = (self.client.get_model_version_by_alias(name, ref) if kind == "alias"
                  else self.client.get_model_version(name, ref))
            aliases = [a for a, v in (self.client.get_registered_model(name).aliases or {}).items()
                       if str(v) == str(mv.version)]
            metrics = _version_metrics(self.client, name, mv.version)
        return {"uri": f"models:/{name}/{mv.version}", "name": name, "version": int(mv.version),
                "aliases": sorted(aliases), "run_id": mv.run_id, "model_id": getattr(mv, "model_id", None),
                "source": mv.source, "status": mv.status, "tags": dict(mv.tags or {}),
                "description": mv.description or "", "metrics": metrics}

    def run(self, run_id: str) -> dict[str, Any]:
        with self._guard(f"read run {run_id}"):
            run = self.client.get_run(run_id)
        datasets = []
        for di in (run.inputs.dataset_inputs if run.inputs else None) or []:
            tags = {t.key: t.value for t in di.tags or []}
            datasets.append({"name": di.dataset.name, "digest": di.dataset.digest,
                             "source": di.dataset.source, "context": tags.get("mlflow.data.context"),
                             "sha256": tags.get("hps.sha256"), "path": tags.get("hps.path")})
        return {"run_id": run_id, "name": run.info.run_name, "status": run.info.status,
                "experiment_id": run.info.experiment_id, "params": dict(run.data.params),
                "metrics": dict(run.data.metrics), "tags": dict(run.data.tags), "datasets": datasets}

    def child_runs(self, parent_run_id: str, experiment_id: str) -> dict[str, str]:
        """Run name -> id of the runs whose parent is ``parent_run_id`` (the flow's step runs)."""
        with self._guard(f"list child runs of {parent_run_id}"):
            runs = self.client.search_runs([experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                                           max_results=1000)
        return {r.info.run_name: r.info.run_id for r in runs}

    def run_json(self, run_id: str, artifact_path: str) -> Any | None:
        """A JSON artifact of a run, or None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="hps-lineage-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, artifact_path, tmp)
            except (MlflowException, OSError):
                return None
            return json.loads(Path(local).read_text())
