"""In-training checkpoints, written atomically so a crash never leaves a half-written one behind.

A checkpoint is a directory: ``model/`` (Hugging Face, safetensors), ``trainer_state.pt`` (optimizer,
scheduler, RNG, step; tensors and plain types only, so it loads with ``weights_only=True``) and
``meta.json``. It is written to a temp directory beside the target, then renamed over it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

LATEST = "latest"


def save_checkpoint(root: Path, model, optimizer, scheduler, step: int, meta: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=root))
    try:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, tmp / "trainer_state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=2))
        target = root / LATEST
        old = root / f".old-{os.getpid()}"
        if target.exists():
            os.replace(target, old)  # keep the previous one until the new one is in place
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / LATEST


def latest_checkpoint(root: Path) -> Path | None:
    path = root / LATEST
    return path if (path / "trainer_state.pt").is_file() else None


def load_trainer_state(path: Path, optimizer, scheduler) -> int:
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def save_model_atomic(model, tokenizer, out_dir: Path) -> Path:
    """Save a final Hugging Face directory (safetensors) via temp-then-rename: readers never see half of it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
