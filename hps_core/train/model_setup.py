"""Load a model for training and save it after: precision, gradient checkpointing, LoRA.

Precision, by device:
- CPU: fp32 weights, fp32 compute (bf16 matmuls are slow on CPUs and hurt tiny models).
- GPU with bf16, full fine-tune: fp32 master weights and optimizer state, forward/backward under bf16
  autocast. Pure bf16 weights would silently drop updates smaller than ~2^-8 of a weight (the reference
  recipe's lr of 5e-7 is far below that), so training would appear to run and change nothing.
- GPU with bf16, LoRA: the frozen base stays in bf16 (half the memory; it receives no updates), the
  adapters are fp32 (peft's default), compute under bf16 autocast. This is the path for 8B models on one GPU.
The saved model is cast back to the loader's dtype for the device (bf16 on GPU), adapters merged; a LoRA
run also keeps its adapter, unmerged and in PEFT's format, in ``adapter/`` of the same directory.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager

import torch

from hps_core.models.loading import load_causal_lm, pick_device, train_dtype
from hps_core.train.checkpoint import write_dir_atomic
from hps_core.train.lora import ADAPTER_SUBDIR, apply_lora, is_peft_model, merge_adapters, save_adapter


def load_for_training(path: str, *, trust_remote_code: bool, gradient_checkpointing: bool = False, lora=None,
                      allow_pickle: bool = False):
    """Load a causal LM (and tokenizer) ready for training, per the precision rules of this module
    (``allow_pickle``: ``model.allow_pickle_weights``, for the base model only)."""
    device = pick_device()
    use_lora = lora is not None and lora.r > 0
    dtype = train_dtype(device) if use_lora else torch.float32
    model, tokenizer = load_causal_lm(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                      allow_pickle=allow_pickle)
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) without enable_input_require_grads.
        # transformers renamed the method in 5.x (the old name warns and goes in v6); pyproject allows both.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if use_lora:
        model = apply_lora(model, lora)
    return model, tokenizer


def compute_dtype(model) -> torch.dtype:
    """The dtype matmuls run in: bf16 on a GPU that supports it, else the weights' own (fp32 on CPU)."""
    param = next(model.parameters())
    if param.device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return param.dtype


def autocast_for(model) -> Callable[[], ContextManager]:
    """A factory of the autocast context for ``model``'s device: bf16 on a bf16 GPU, nothing elsewhere."""
    if next(model.parameters()).device.type == "cuda" and compute_dtype(model) == torch.bfloat16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def export_model(model):
    """The model to save: adapters merged, weights in the loader's dtype for this device."""
    model = merge_adapters(model)
    dtype = train_dtype(next(model.parameters()).device)
    return model.to(dtype) if next(model.parameters()).dtype != dtype else model


def save_trained_model(model, tokenizer, out_dir: Path, base_path: str, state_dict: dict | None = None) -> Path:
    """A training stage's final directory, written atomically (temp directory, then rename): the exported
    model (:func:`export_model`) and tokenizer at the top level, where ``from_pretrained``, evaluation and
    the registry read it, and, for a LoRA run, the adapter in ``adapter/`` in PEFT's format with
    ``base_path`` (the model this stage loaded and trained on) as its base. The adapter is written first:
    merging consumes it (``model`` is merged in place, as :func:`export_model` always did).
    ``state_dict``: the whole model gathered from a sharded one (``hps_core.train.fsdp.full_model_state``; a
    full fine-tune), saved in place of the live model's shards, cast to the loader's dtype for the device."""

    def write(tmp: Path) -> None:
        if state_dict is not None:
            dtype = train_dtype(next(model.parameters()).device)
            cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
            model.save_pretrained(str(tmp), state_dict=cast, safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            return
        if is_peft_model(model):
            save_adapter(model, tmp / ADAPTER_SUBDIR, base_path)
        export_model(model).save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))

    return write_dir_atomic(Path(out_dir), write)
