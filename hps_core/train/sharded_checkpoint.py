"""Sharded (``torch.distributed.checkpoint``, DCP) checkpoints of an FSDP run: every rank writes its own shards
of the weights and the AdamW moments into one ``checkpoint-<step>`` directory, which resumes with any number of
processes, sharded or not, and consolidates into a Hugging Face directory. The layout, retention and
atomicity are those of ``hps_core.train.checkpoint`` (see its docstring for what the directory holds)."""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path

import torch

from hps_core.train.checkpoint import (
    CHECKPOINT_PREFIX,
    DCP_FORMAT,
    DCP_METADATA,
    DCP_README,
    META,
    STATE,
    CheckpointMismatch,
    _prune,
    _temp_dir_for,
    is_sharded_checkpoint,
    write_dir_atomic,
)


def _trainer_state(scheduler, step: int) -> dict:
    state = {"scheduler": scheduler.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _dcp_state(model, optimizer) -> dict:
    """``{"model": ..., "optimizer": ...}`` as DCP saves and loads them: each rank's shards under FSDP, whole
    tensors otherwise, keyed by ``named_parameters()`` names (``get_state_dict``), whatever the world size."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def save_sharded_checkpoint(root: Path, model, optimizer, scheduler, step: int, meta: dict | None = None, *,
                            tokenizer=None, keep: int = 2) -> Path | None:
    """Write ``<root>/checkpoint-<step>`` as a sharded (DCP) checkpoint (see the module docstring), then keep
    only the newest ``keep``. Every rank calls it: each writes its own shards into rank 0's temp directory
    (``dcp.save``), then rank 0 adds the config, tokenizer, trainer state and meta.json and renames the
    directory into place. Returns the checkpoint's path on rank 0, None on the other ranks."""
    import torch.distributed.checkpoint as dcp

    from hps_core.train import distributed

    if keep < 1:
        raise ValueError(f"keep (save_total_limit) must be >= 1, got {keep}: the newest checkpoint is what resumes")
    root = Path(root)
    target = root / f"{CHECKPOINT_PREFIX}{step}"
    main = distributed.current().is_main
    tmp = Path(distributed.gather(str(_temp_dir_for(target)) if main else None)[0])
    try:
        dcp.save(_dcp_state(model, optimizer), checkpoint_id=tmp)  # returns once every rank's files are written
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not main:
        return None

    def write(tmp: Path) -> None:
        if hasattr(model, "config"):
            model.config.save_pretrained(str(tmp))  # what consolidate_checkpoint builds the model from
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        torch.save(_trainer_state(scheduler, step), tmp / STATE)
        (tmp / DCP_README).write_text(
            f"Sharded (torch.distributed.checkpoint) checkpoint of step {step}: resume it with any number of processes.\n"
            "To get a Hugging Face directory (from_pretrained) from it:\n"
            "  python -c \"from hps_core.train.sharded_checkpoint import consolidate_checkpoint as c; "
            "c('<this directory>', '<out dir>')\"\n")
        (tmp / META).write_text(json.dumps({"step": step, "format": DCP_FORMAT, **(meta or {})}, indent=2))

    path = write_dir_atomic(target, write, tmp=tmp)
    _prune(root, keep, path)
    return path


@contextlib.contextmanager
def _single_process_quietly():
    """DCP warns each time it reads in one process ("assuming the intent is to load in a single process"):
    here that is the intent (a single-process resume, a consolidation)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is .*single process")
        yield


def load_sharded_checkpoint(path: Path, model, optimizer) -> None:
    """Load a sharded checkpoint's model and optimizer state into ``model`` and ``optimizer``, whatever the
    number of processes that wrote it and that read it: FSDP ranks take their shards, DDP ranks and a
    single process the whole tensors. Every rank calls it (under torch.distributed it is a collective).
    The scheduler, RNG and step come from :func:`load_trainer_state`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _dcp_state(model, optimizer)
    try:
        with _single_process_quietly():
            dcp.load(state, checkpoint_id=Path(path))
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointMismatch(f"sharded checkpoint {path} does not fit this model and optimizer ({err}); "
                                 "delete the checkpoint directory to start over") from err
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def consolidate_checkpoint(path: Path, out_dir: Path) -> Path:
    """Turn a sharded (DCP) checkpoint into a Hugging Face directory at ``out_dir`` (safetensors, config,
    tokenizer when the checkpoint has one) that ``AutoModelForCausalLM.from_pretrained`` loads. Runs in one
    process, with or without a process group, and needs host memory for the whole model (fp32)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = Path(path)
    if not is_sharded_checkpoint(path):
        raise ValueError(f"{path} is not a sharded checkpoint (no {DCP_METADATA}); it loads with from_pretrained as it is")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path))).float()  # fp32, as trained
    state = {"model": get_model_state_dict(model)}  # the names the ranks saved under
    with _single_process_quietly():
        dcp.load(state, checkpoint_id=path, no_dist=True)  # reads only the model: the optimizer stays on disk
    set_model_state_dict(model, state["model"])
    model.tie_weights()
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").is_file() else None

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))

    return write_dir_atomic(Path(out_dir), write)
