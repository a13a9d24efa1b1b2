"""Files one step hands to the next (tables, checkpoints), by URI on the MLflow artifact store.

On a laptop every step runs in one working directory, so a consumer reads the producer's local path
directly and nothing is copied. On a cluster every step is a fresh pod: the producer's disk is gone, so
the producer also uploads what it hands on to its MLflow child run (S3/GCS in production, ``./mlruns``
locally), and the consumer downloads it by URI into its cache. What travels between steps as a Metaflow
artifact is only a small reference, never the bytes::

    {"path": "/runs/42/models/sft", "uri": "runs:/<mlflow run id>/handoff/sft"}

A plain string (a local path or a hub id) is accepted wherever a reference is, for callers outside the
flow (tests, notebooks) and for models named by hub id.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from hps_core.tracking.step_context import StepContext

Ref = Union[dict, str]
ARTIFACT_DIR = "handoff"
COMPLETE = ".complete"  # written last into a downloaded copy; a copy without it is a broken download


def publish(ctx: "StepContext", run_id: str, local_path: str | Path, name: str) -> dict:
    """Upload ``local_path`` (a file or directory) to ``run_id``'s artifacts as ``handoff/<name>``."""
    path = Path(local_path)
    artifact_path = f"{ARTIFACT_DIR}/{name}"
    ctx.tracker.log_artifact(run_id, path, artifact_path)  # a directory's contents land under artifact_path
    uri = ctx.tracker.artifact_uri(run_id, artifact_path if path.is_dir() else f"{artifact_path}/{path.name}")
    return {"path": str(path), "uri": uri}


def local(ctx: "StepContext", ref: Ref) -> str:
    """A local path for ``ref``: the producer's own path when this machine has it, else a downloaded copy
    (cached under ``<cache>/handoff/``, so a retried step does not download twice). A string that is not
    a local path (a hub id) is returned as it is."""
    if isinstance(ref, (str, os.PathLike)):
        return str(ref)
    path, uri = ref.get("path"), ref.get("uri")
    if path and Path(path).exists():
        return str(path)
    if not uri:
        if path and os.path.isabs(path):  # the flow's own outputs; hub ids are never absolute
            raise FileNotFoundError(
                f"{path} is not on this machine and was not published to an artifact store (the producing "
                "step ran without MLflow tracking). Set MLFLOW_TRACKING_URI when steps run on different machines."
            )
        return str(path)  # a hub id
    return str(_download(ctx, uri, Path(path).name if path else "artifact"))


def _download(ctx: "StepContext", uri: str, name: str) -> Path:
    root = ctx.cache_dir / ARTIFACT_DIR / hashlib.sha256(uri.encode()).hexdigest()[:20]
    if (root / COMPLETE).is_file():
        return root / name
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
    try:
        (staging / "download").mkdir()
        got = ctx.tracker.download_artifacts(uri, staging / "download")
        ready = staging / "ready"
        ready.mkdir()
        os.replace(got, ready / name)
        (ready / COMPLETE).write_text(uri)
        shutil.rmtree(root, ignore_errors=True)  # a broken earlier download
        os.replace(ready, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"fetched {uri} -> {root / name}")
    return root / name
