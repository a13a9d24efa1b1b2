"""In-training checkpoints, written atomically so a crash never leaves a half-written one behind.

A checkpoint is a directory ``<root>/latest`` holding:
- ``trainable.safetensors``: every trainable parameter by its ``named_parameters()`` name. Tied weights
  appear once (the tied LM head shares the embedding's tensor), LoRA runs store only the adapters, and
  frozen weights are not stored: the trainer reloads them from the same starting model on resume.
- ``trainer_state.pt``: optimizer, scheduler, CPU/CUDA RNG, step (tensors and plain types only, so it
  loads with ``weights_only=True``).
- ``meta.json``: step and the run fingerprint (what the plan and settings were), checked on resume.
The sampler needs no state of its own: negatives are drawn before training and the batch plan is a pure
function of the seed, so (fingerprint, step) pins the position in the run.

It is written to a temp directory beside the target and renamed into place. The previous checkpoint is
moved aside first and removed last; a crash between the two renames leaves it as ``.old-*``, which
:func:`latest_checkpoint` falls back to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"
WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.pt"


class CheckpointMismatch(RuntimeError):
    """A checkpoint does not belong to this run (other plan, settings or model); the message says what to do."""


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(root: Path, model, optimizer, scheduler, step: int, meta: dict | None = None) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=root))
    try:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / STATE)
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


def _complete(path: Path) -> bool:
    return (path / STATE).is_file() and (path / WEIGHTS).is_file() and (path / "meta.json").is_file()


def latest_checkpoint(root: Path) -> Path | None:
    """``root/latest``, or the previous checkpoint left as ``.old-*`` by a crash mid-swap, or None."""
    root = Path(root)
    if _complete(root / LATEST):
        return root / LATEST
    old = sorted((p for p in root.glob(".old-*") if _complete(p)), key=lambda p: p.stat().st_mtime)
    return old[-1] if old else None


def checkpoint_meta(path: Path) -> dict:
    return json.loads((Path(path) / "meta.json").read_text())


def load_model_state(path: Path, model) -> None:
    """Copy the checkpoint's trainable parameters into ``model``; every trainable name must match exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    state = load_file(str(Path(path) / WEIGHTS), device=str(next(model.parameters()).device))
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise CheckpointMismatch(
            f"checkpoint {path} does not fit this model: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''} (was LoRA or the model changed?). "
            "Delete the checkpoint directory to start over."
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if tensor.shape != params[name].shape:
                raise CheckpointMismatch(f"checkpoint {path}: {name} has shape {tuple(tensor.shape)}, "
                                         f"the model {tuple(params[name].shape)}; delete the checkpoint to start over")
            params[name].copy_(tensor)


def load_trainer_state(path: Path, optimizer, scheduler) -> int:
    state = torch.load(Path(path) / STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
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
