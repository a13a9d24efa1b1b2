"""Supervised fine-tuning: NLL on response tokens of the training responses.

On the embedded default SFT deliberately trains on responses of every quality (harmful ones included),
so the SFT policy imitates good and bad answers the way a base model does and preference training has
something to fix.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from hps_core.config.schema import ModelConfig, SFTConfig
from hps_core.train import distributed, fsdp
from hps_core.data.encoding import Encoder, collate
from hps_core.train.batching import length_grouped_batches
from hps_core.train.checkpoint import save_model_atomic, write_dir_atomic
from hps_core.train.logprobs import response_logps
from hps_core.train.loop import CheckpointFn, LogFn, LoopSettings, split_steps, train_loop
from hps_core.train.model_setup import load_for_training, save_trained_model


def sft_examples(groups: pd.DataFrame) -> list[tuple[str, str]]:
    """Every response of every training group, paired with its prompt."""
    train = groups[groups["split"] == "train"]
    return [(g.prompt, r) for g in train.itertuples(index=False) for r in g.responses]


def train_sft(
    base_model: str,
    groups: pd.DataFrame,
    model_cfg: ModelConfig,
    cfg: SFTConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    log_fn: LogFn | None = None,
    checkpoint_dir: Path | None = None,
    on_checkpoint: CheckpointFn | None = None,
    strategy: str = "ddp",
) -> dict[str, float]:
    """Fine-tune ``base_model`` on the training responses; ``strategy`` (``[resources] strategy``) is how
    several processes share the model: replicated ("ddp") or sharded ("fsdp")."""
    import torch

    torch.manual_seed(seed)
    model, tokenizer = load_for_training(
        base_model, trust_remote_code=model_cfg.trust_remote_code, allow_pickle=model_cfg.allow_pickle_weights,
        gradient_checkpointing=cfg.gradient_checkpointing, lora=cfg.lora,
    )
    encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)
    encoded = [encoder.encode(p, r) for p, r in sft_examples(groups)]
    lengths = [len(e.input_ids) for e in encoded]
    step_batches = []  # each optimizer step's examples, cut into micro-batches below
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng([seed, 1, epoch])
        step_batches.extend(length_grouped_batches(lengths, cfg.batch_size * cfg.grad_accum_steps, rng))
    plan = split_steps(step_batches, cfg.batch_size)

    def loss_fn(model, batch_idx):
        batch = collate([encoded[i] for i in batch_idx], tokenizer.pad_token_id)
        logps, counts = response_logps(model, batch)
        nll = -(logps / counts.clamp(min=1))  # per-example mean NLL over its response tokens
        return nll.sum(), len(batch_idx), {}, int(batch["attention_mask"].sum())

    settings = LoopSettings.from_stage(cfg, "sft", strategy)
    run_key = json.dumps([base_model, seed, len(encoded), model_cfg.max_prompt_tokens, model_cfg.max_length, cfg.lora.r])
    metrics = train_loop(model, plan, loss_fn, settings, log_fn=log_fn, checkpoint_dir=checkpoint_dir, run_key=run_key,
                         tokenizer=tokenizer, on_checkpoint=on_checkpoint)
    gathered = fsdp.full_model_state(model)  # sharded (FSDP): every rank joins the gather; else None
    if distributed.current().is_main:  # one writer; the other ranks wait for the finished directory
        save_trained_model(model, tokenizer, out_dir, base_model, gathered)  # LoRA: adapter/ (base: the base model) too
    distributed.barrier()
    truncation = encoder.counter.as_metrics("sft")
    if log_fn is not None and distributed.current().is_main:
        log_fn(truncation, int(metrics["steps"]))
    return {**metrics, **truncation, "sft/examples_per_epoch": float(len(encoded))}


def _pickles(path: Path) -> bool:
    return any(p.suffix in (".bin", ".pt", ".pth", ".pkl") for p in path.rglob("*"))


def adopt_base_as_sft(base_model: str, model_cfg: ModelConfig, out_dir: Path) -> dict[str, float]:
    """``sft.epochs = 0``: the base is already supervised-fine-tuned (the reference recipe starts from such
    a model), so it becomes the SFT checkpoint as it is, re-saved as safetensors where later steps,
    the reference pass and the registry expect it. Only rank 0 writes."""
    if distributed.current().is_main:
        source = Path(base_model)
        if source.is_dir() and any(source.glob("*.safetensors")) and not _pickles(source):
            # already what later steps expect: copy the files (seconds; loading and re-saving a model beside
            # a training step on a small CPU took minutes)
            write_dir_atomic(Path(out_dir), lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
        else:  # a hub id, or pickle weights opted in: load once, save as safetensors
            from hps_core.models.loading import load_causal_lm

            model, tokenizer = load_causal_lm(base_model, trust_remote_code=model_cfg.trust_remote_code,
                                              allow_pickle=model_cfg.allow_pickle_weights)
            save_model_atomic(model, tokenizer, out_dir)
    distributed.barrier()
    return {"steps": 0.0, "adopted_base": 1.0}
