"""A training step's in-training checkpoints across machines: restored before the stage trains, copied
while it trains, dropped once its model is saved (``hps_core.tracking.checkpoint_mirror`` says where and
why)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hps_core.tracking.checkpoint_mirror import CheckpointMirror, checkpoint_mirror
from hps_core.tracking.step_context import StepContext


def checkpoint_dir(ctx: StepContext, stage: str) -> Path:
    return ctx.path("checkpoints", stage)


def restore_checkpoints(ctx: StepContext, stage: str, keep: int) -> CheckpointMirror | None:
    """The stage's durable copy (None without a tracking server); when this machine has no complete
    checkpoint of the stage (a fresh pod, a deleted working directory), the newest copy is downloaded
    first, so the trainer resumes from it as from a local one."""
    from hps_core.train.checkpoint import latest_checkpoint  # torch: imported by training steps only

    mirror = checkpoint_mirror(ctx.tracker, ctx.parent_run_id, stage, keep)
    if mirror is not None and latest_checkpoint(checkpoint_dir(ctx, stage)) is None:
        mirror.pull(checkpoint_dir(ctx, stage))
    return mirror


def drop_checkpoints(ctx: StepContext, stage: str, mirror: CheckpointMirror | None) -> None:
    """In-training checkpoints (weights plus optimizer state, ~3x the model) exist to resume a killed
    stage; once its final model is saved and handed on they are dead weight, here and in MLflow."""
    shutil.rmtree(checkpoint_dir(ctx, stage), ignore_errors=True)
    if mirror is not None:
        mirror.drop()
