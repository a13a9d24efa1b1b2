"""In-training checkpoints that follow the step to another machine: a copy in the MLflow run's artifacts.

A training step writes ``checkpoint-<step>`` directories on its local disk (``hps_core.train.checkpoint``).
On Kubernetes a retried or resumed step starts on a fresh pod, where that disk is gone. So each new
checkpoint is also uploaded to the artifacts of the flow's MLflow parent run, and a step that finds no
checkpoint on its disk restores the newest uploaded one before training starts::

    runs:/<parent run>/checkpoints/<stage>/checkpoint-<step>/...   the checkpoint's files
    runs:/<parent run>/checkpoints/<stage>/latest.json             {"checkpoint", "step", "files": {path: sha256}}

Why MLflow's artifact store and not the Metaflow datastore: it is the store every step already hands its
models and tables through (S3/GCS behind the tracking server in production, ``--serve-artifacts``, so pods
need no bucket keys), the parent run is the one key that is the same for every attempt and every
``resume`` of a run, and its files can be deleted (a Metaflow artifact lives forever, per attempt), so the
copy is bounded by ``save_total_limit`` like the local checkpoints and removed when the stage's model is
saved.

``latest.json`` is written after the checkpoint's files and names each file's sha256: a step killed mid
upload leaves the previous pointer, and a restore checks every byte it downloaded before it places the
checkpoint (atomically: a directory that appears is whole). Uploads happen only against a tracking
server (``http(s)://``, ``databricks``); a local ``sqlite:`` store lives on the same disk as the
checkpoints, so a copy there would protect nothing. An upload that fails is a warning: the local
checkpoint is in place and training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from hps_core.common.digests import file_sha256
from hps_core.tracking.base import Tracker, TrackingError

log = logging.getLogger(__name__)

ROOT = "checkpoints"
POINTER = "latest.json"
_NAME = re.compile(r"checkpoint-(\d+)")
REMOTE_SCHEMES = ("http://", "https://", "databricks")


class RestoreFailed(RuntimeError):
    """The uploaded checkpoint could not be restored whole; the message says which file and what to do."""


class CheckpointMirror:
    """The durable copy of one stage's checkpoints (``stage``: "sft", "hps") under ``run_id``'s artifacts."""

    def __init__(self, tracker: Tracker, run_id: str, stage: str, keep: int = 2):
        self.tracker, self.run_id, self.keep = tracker, run_id, keep
        self.prefix = f"{ROOT}/{stage}"

    def push(self, checkpoint: Path) -> None:
        """Upload ``checkpoint`` (a complete ``checkpoint-<step>`` directory), then point ``latest.json`` at
        it, then delete uploaded checkpoints beyond the newest ``keep``. Failures are logged, not raised."""
        checkpoint = Path(checkpoint)
        try:
            files = {p.relative_to(checkpoint).as_posix(): file_sha256(p)
                     for p in sorted(checkpoint.rglob("*")) if p.is_file()}
            self.tracker.log_artifact(self.run_id, checkpoint, f"{self.prefix}/{checkpoint.name}")
            step = int(_NAME.fullmatch(checkpoint.name).group(1))
            self.tracker.log_dict(self.run_id, {"checkpoint": checkpoint.name, "step": step, "files": files},
                                  f"{self.prefix}/{POINTER}")
            print(f"checkpoint-{step} copied to {self.tracker.artifact_uri(self.run_id, self.prefix)}")
        except (TrackingError, OSError) as err:
            log.warning("could not copy %s to the MLflow run %s (%s); training goes on, a restart on another "
                        "machine would resume from an earlier copy", checkpoint.name, self.run_id, err)
            return
        self._prune(keep_name=checkpoint.name)

    def pull(self, root: Path) -> Path | None:
        """Download the checkpoint ``latest.json`` names into ``root/<checkpoint-N>``; None when nothing was
        uploaded. Raises :class:`RestoreFailed` when a downloaded file does not match its digest."""
        if POINTER not in self.tracker.list_artifacts(self.run_id, self.prefix):
            return None
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-restore-", dir=root))
        try:
            pointer = json.loads(self.tracker.download_artifacts(
                self.tracker.artifact_uri(self.run_id, f"{self.prefix}/{POINTER}"), staging).read_text())
            name = pointer["checkpoint"]
            got = self.tracker.download_artifacts(self.tracker.artifact_uri(self.run_id, f"{self.prefix}/{name}"),
                                                  staging / "download")
            for rel, digest in pointer["files"].items():
                if not (got / rel).is_file() or file_sha256(got / rel) != digest:
                    raise RestoreFailed(
                        f"the copy of {name} in MLflow run {self.run_id} ({self.prefix}/{name}/{rel}) is missing or "
                        "does not match the digest recorded when it was uploaded; delete the run's "
                        f"'{self.prefix}' artifacts to start the stage over")
            for extra in {p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()} - set(pointer["files"]):
                (got / extra).unlink()  # left by an older upload into the same folder: not this checkpoint's
            target = root / name
            if target.exists():
                shutil.rmtree(target)  # an incomplete local copy (the caller found no complete checkpoint)
            os.replace(got, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        print(f"restored {name} (step {pointer['step']}) from {self.tracker.artifact_uri(self.run_id, self.prefix)}")
        return target

    def drop(self) -> None:
        """Delete every uploaded checkpoint of the stage (its final model is saved and handed on)."""
        try:
            self.tracker.delete_artifacts(self.run_id, self.prefix)
        except (TrackingError, OSError) as err:
            log.warning("could not delete the checkpoint copies %s of MLflow run %s: %s", self.prefix, self.run_id, err)

    def _prune(self, keep_name: str) -> None:
        try:
            names = [n for n in self.tracker.list_artifacts(self.run_id, self.prefix) if _NAME.fullmatch(n)]
            newest = sorted(names, key=lambda n: int(_NAME.fullmatch(n).group(1)))[-self.keep:]
            for name in set(names) - set(newest) - {keep_name}:
                self.tracker.delete_artifacts(self.run_id, f"{self.prefix}/{name}")
        except (TrackingError, OSError) as err:
            log.warning("could not delete old checkpoint copies under %s of MLflow run %s: %s", self.prefix,
                        self.run_id, err)


def checkpoint_mirror(tracker: Tracker, run_id: str | None, stage: str, keep: int = 2) -> CheckpointMirror | None:
    """The mirror of ``stage`` when checkpoints can outlive this machine: an MLflow tracking server and a
    parent run to keep them under; None otherwise (a local store, no tracking)."""
    uri = getattr(tracker, "tracking_uri", "") or ""
    if not run_id or not uri.startswith(REMOTE_SCHEMES):
        return None
    return CheckpointMirror(tracker, run_id, stage, keep)
