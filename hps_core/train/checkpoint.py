"""In-training checkpoints in the layout of transformers' Trainer, written atomically so a crash never
leaves a half-written one behind.

Every checkpoint is a directory ``<root>/checkpoint-<step>`` holding:
- what ``from_pretrained`` reads. A full fine-tune: the model (``config.json``, ``model.safetensors``, from
  ``save_pretrained``) and the tokenizer, so ``AutoModelForCausalLM.from_pretrained(".../checkpoint-<step>")``
  loads the policy of that step. A LoRA run: the PEFT adapter (``adapter_config.json``,
  ``adapter_model.safetensors``; ``peft.PeftModel.from_pretrained(base, ".../checkpoint-<step>")``) and the
  tokenizer. The tokenizer is there when the trainer was given one (SFT and preference training are).
- the trainable parameters for resume. A full fine-tune trains every parameter, and ``model.safetensors``
  stores them under their ``named_parameters()`` names (tied weights once: the LM head shares the
  embedding's tensor), so resume reads that file and no second copy is written. Otherwise (LoRA: only the
  adapters train; peft renames them in its own file) ``trainable.safetensors`` holds every trainable
  parameter by its ``named_parameters()`` name; frozen weights are not stored: the trainer reloads them
  from the same starting model on resume.
- ``trainer_state.pt``: optimizer, scheduler, CPU/CUDA RNG, step (tensors and plain types only, so it
  loads with ``weights_only=True``).
- ``meta.json``: step and the run fingerprint (what the plan and settings were), checked on resume.
A sharded checkpoint (written by FSDP ranks, ``hps_core.train.sharded_checkpoint``) has the same name, retention
and fingerprint but holds ``torch.distributed.checkpoint`` (DCP) files in place of the weights and the
optimizer state: DCP's index ``.metadata`` and one ``__<rank>_0.distcp`` per rank (each rank writes its own
shards of the model and of the AdamW moments, so no rank ever holds the whole state), beside
``config.json``, the tokenizer, ``trainer_state.pt`` (scheduler, RNG, step; no optimizer), ``meta.json``
(``"format": "dcp"``) and a ``README.txt``. It resumes with any number of processes, sharded or not
(``sharded_checkpoint.load_sharded_checkpoint``); ``sharded_checkpoint.consolidate_checkpoint(path, out_dir)``
turns it into a Hugging Face directory that ``from_pretrained`` loads.
The sampler needs no state of its own: negatives are drawn before training and the batch plan is a pure
function of the seed, so (fingerprint, step) pins the position in the run.

A checkpoint is written to a temp directory beside its target (``.tmp-*``, never read) and renamed
into place; only then are the checkpoints beyond the newest ``keep`` (``save_total_limit``) removed, each
renamed out of sight before it is deleted, so at every moment the newest complete checkpoint is whole
(temp directories a killed writer left are removed at the same time). A sharded checkpoint's ranks all write
into rank 0's temp directory; rank 0 renames it once DCP reports every rank's files written.
:func:`latest_checkpoint` picks the complete checkpoint with the highest step. A root written before this
layout (one ``<root>/latest``, or the ``.old-*`` a crash mid-swap left) is still found and resumed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "checkpoint-"
LEGACY_LATEST = "latest"  # the one-checkpoint layout before checkpoint-<step>
WEIGHTS = "trainable.safetensors"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"  # save_pretrained's sharded form
STATE = "trainer_state.pt"
META = "meta.json"
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of a sharded checkpoint's __<rank>_0.distcp files
DCP_FORMAT = "dcp"  # meta.json's "format" of a sharded checkpoint
DCP_README = "README.txt"
_NAME = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")
_DELETING = ".deleting-"  # an old checkpoint on its way out
# Directories only a crashed writer leaves: write_dir_atomic's temp and set-aside dirs, the old layout's temp
# dirs, a checkpoint half deleted. Never read; the next prune removes them.
_LEFTOVERS = (f".tmp-{CHECKPOINT_PREFIX}", f".replaced-{CHECKPOINT_PREFIX}", ".tmp-ckpt-", _DELETING)

log = logging.getLogger(__name__)


class CheckpointMismatch(RuntimeError):
    """A checkpoint does not belong to this run (other plan, settings or model); the message says what to do."""


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _temp_dir_for(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))


def write_dir_atomic(target: Path, write: Callable[[Path], None], *, tmp: Path | None = None) -> Path:
    """Run ``write(tmp)`` on a fresh temp directory beside ``target``, then rename it to ``target``: readers
    see the old directory or the whole new one, never half of it. An existing ``target`` is moved aside
    first and deleted last; on any error the temp directory is removed and ``target`` is left as it was.
    ``tmp``: a temp directory already made beside ``target`` (by :func:`_temp_dir_for`; others wrote into it)."""
    target = Path(target)
    tmp = _temp_dir_for(target) if tmp is None else Path(tmp)
    aside = None
    try:
        write(tmp)
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".replaced-{target.name}-", dir=target.parent))
            os.replace(target, aside / target.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and not target.exists() and (aside / target.name).exists():
            os.replace(aside / target.name, target)  # put the previous one back
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return target


def _full_fine_tune(model) -> bool:
    """Whether ``save_pretrained``'s weights are exactly the trainable parameters: a transformers model (no
    adapters) whose every parameter trains. Then resume reads ``model.safetensors`` and no copy is kept."""
    from hps_core.train.lora import is_peft_model

    return (hasattr(model, "save_pretrained") and not is_peft_model(model)
            and all(p.requires_grad for p in model.parameters()))


def save_checkpoint(root: Path, model, optimizer, scheduler, step: int, meta: dict | None = None, *,
                    tokenizer=None, keep: int = 2, model_state: dict | None = None,
                    optimizer_state: dict | None = None) -> Path:
    """Write ``<root>/checkpoint-<step>`` (see the module docstring), then keep only the newest ``keep``.

    ``model_state`` / ``optimizer_state``: the whole model's and optimizer's state gathered from a sharded
    model (``hps_core.train.fsdp``), written in place of the live model's and optimizer's, which hold one
    rank's shard only; the checkpoint is then the one an unsharded run writes."""
    if keep < 1:
        raise ValueError(f"keep (save_total_limit) must be >= 1, got {keep}: the newest checkpoint is what resumes")
    root = Path(root)

    def write(tmp: Path) -> None:
        _write_weights(tmp, model, model_state)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        state = {
            "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
            "scheduler": scheduler.state_dict(),
            "step": step,
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(state, tmp / STATE)
        (tmp / META).write_text(json.dumps({"step": step, **(meta or {})}, indent=2))

    path = write_dir_atomic(root / f"{CHECKPOINT_PREFIX}{step}", write)
    _prune(root, keep, path)
    return path


def _write_weights(tmp: Path, model, model_state: dict | None = None) -> None:
    from hps_core.train.lora import is_peft_model, save_adapter

    if model_state is not None:  # gathered from a sharded full fine-tune (FSDP refuses LoRA)
        model.save_pretrained(str(tmp), state_dict=model_state, safe_serialization=True)
        return
    if is_peft_model(model):
        save_adapter(model, tmp)  # base_model_name_or_path: the path peft saw loaded
    elif hasattr(model, "save_pretrained"):
        model.save_pretrained(str(tmp), safe_serialization=True)
    if not _full_fine_tune(model):
        save_file(trainable_state(model), str(tmp / WEIGHTS))


def _prune(root: Path, keep: int, newest: Path) -> None:
    """Remove the complete checkpoints beyond the newest ``keep`` (legacy ones included), never ``newest``,
    and what crashed writers left behind (temp directories of a killed write or delete: only one process,
    rank 0, writes into ``root``, and its own write is in place by now). Each old checkpoint is first renamed
    into a hidden ``.deleting-*`` directory, so a crash mid-delete leaves nothing that looks like a
    checkpoint. A failure to delete is a warning, not the end of the run: the new checkpoint is in place."""
    doomed = [path for _, path in _checkpoints(root)[:-keep] if path != newest]
    doomed += [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_LEFTOVERS)]
    for path in doomed:
        try:
            if not path.name.startswith(_LEFTOVERS):
                hidden = Path(tempfile.mkdtemp(prefix=f"{_DELETING}{path.name}-", dir=root))
                os.replace(path, hidden / path.name)
                path = hidden
            shutil.rmtree(path)
        except OSError as err:
            log.warning("could not delete %s under %s (save_total_limit %d): %s", path.name, root, keep, err)


def _weight_files(path: Path) -> list[Path]:
    """The files resume reads the trainable parameters from: ``trainable.safetensors``, else the full
    fine-tune's ``save_pretrained`` weights (one file, or the shards its index names)."""
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    if (path / HF_WEIGHTS_INDEX).is_file():
        shards = sorted(set(json.loads((path / HF_WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return [path / s for s in shards] if all((path / s).is_file() for s in shards) else []
    return [path / HF_WEIGHTS] if (path / HF_WEIGHTS).is_file() else []


def is_sharded_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a sharded (DCP) checkpoint: see the module docstring."""
    return (Path(path) / DCP_METADATA).is_file()


def _complete(path: Path) -> bool:
    return (path.is_dir() and (path / STATE).is_file() and (path / META).is_file()
            and (bool(_weight_files(path)) or is_sharded_checkpoint(path)))


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Every complete checkpoint under ``root`` as (step, path), oldest first: ``checkpoint-<step>`` dirs
    and any legacy ``latest``/``.old-*`` (step from its meta.json; at a tie the legacy one counts older)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if (m := _NAME.fullmatch(path.name)) and _complete(path):
            found.append((int(m.group(1)), 1, path))
        elif (path.name == LEGACY_LATEST or path.name.startswith(".old-")) and _complete(path):
            found.append((int(checkpoint_meta(path)["step"]), 0, path))
    return [(step, path) for step, _, path in sorted(found, key=lambda t: (t[0], t[1], t[2].name))]


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root`` (``checkpoint-<step>``, or a legacy
    ``latest``/``.old-*``), or None. Temp directories and incomplete checkpoints are ignored."""
    found = _checkpoints(root)
    return found[-1][1] if found else None


def checkpoint_meta(path: Path) -> dict:
    return json.loads((Path(path) / META).read_text())


def load_model_state(path: Path, model) -> None:
    """Copy the checkpoint's trainable parameters into ``model``; every trainable name must match exactly.

    A name of a tied parameter counts as its own (``lm_head.weight`` for ``model.embed_tokens.weight``), and
    a full fine-tune's ``model.safetensors`` may also hold persistent buffers, which are not parameters."""
    path = Path(path)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    canonical = {id(p): n for n, p in params.items()}
    aliases = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False) if id(p) in canonical}
    files = _weight_files(path)
    device = str(next(model.parameters()).device)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(str(file), device=device))
    if files and files[0].name != WEIGHTS:  # save_pretrained's file: drop buffers, name tied weights one way
        buffers = {n for n, _ in model.named_buffers()}
        state = {aliases.get(n, n): t for n, t in state.items() if n not in buffers}
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


def load_trainer_state(path: Path, optimizer, scheduler, *, load_optimizer: Callable[[dict], None] | None = None) -> int:
    """Restore optimizer, scheduler and RNG; return the step. ``load_optimizer`` (optional) loads the saved
    optimizer state instead of ``optimizer.load_state_dict`` (a sharded optimizer takes its shard of it)."""
    state = torch.load(Path(path) / STATE, weights_only=True)
    if not is_sharded_checkpoint(path):  # a sharded checkpoint's optimizer is in its DCP files
        (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def save_model_atomic(model, tokenizer, out_dir: Path) -> Path:
    """Save a final Hugging Face directory (safetensors) via temp-then-rename: readers never see half of it.
    (A trained LoRA model goes through ``model_setup.save_trained_model``, which adds its adapter.)"""

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    return write_dir_atomic(Path(out_dir), write)
