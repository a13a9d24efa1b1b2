"""The one optimisation loop behind SFT, preference and reward-model training.

The caller plans every micro-batch of the run up front (deterministic from the seed), so a resumed run
replays exactly the batches an uninterrupted one would have seen. Each micro-batch's loss function
returns a SUM over its examples; the loop divides by the examples of the whole optimizer step, which
makes gradient accumulation exactly equivalent to one large batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from hps_core.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint

# loss_fn(model, micro_batch) -> (loss summed over examples, n examples, metric sums, n tokens)
LossFn = Callable[[Any, Any], tuple[torch.Tensor, int, dict[str, float], int]]
LogFn = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class LoopSettings:
    lr: float
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum_steps: int = 1
    log_every: int = 10
    checkpoint_every: int = 0  # optimizer steps between in-training checkpoints; 0 = none
    description: str = "train"


def train_loop(
    model,
    micro_batches: Sequence[Any],
    loss_fn: LossFn,
    settings: LoopSettings,
    *,
    log_fn: LogFn | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, float]:
    """Run the planned micro-batches; return the last logged metrics plus run totals."""
    accum = settings.grad_accum_steps
    total_steps = math.ceil(len(micro_batches) / accum)
    if total_steps == 0:
        raise ValueError(f"{settings.description}: no training batches; is the training split empty?")
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_steps), total_steps)
    start_step = 0
    if checkpoint_dir is not None and (ckpt := latest_checkpoint(checkpoint_dir)) is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(ckpt / "model" / "model.safetensors"), strict=False)
        start_step = load_trainer_state(ckpt, optimizer, scheduler)

    model.train()
    window: dict[str, float] = {}
    window_n, window_tokens, window_start = 0, 0, time.perf_counter()
    last: dict[str, float] = {}
    progress = tqdm(range(start_step, total_steps), desc=settings.description, initial=start_step, total=total_steps)
    for step in progress:
        group = micro_batches[step * accum : (step + 1) * accum]
        n_step = sum(_n_examples(mb) for mb in group)
        for mb in group:
            loss_sum, n, metric_sums, n_tokens = loss_fn(model, mb)
            (loss_sum / n_step).backward()
            window_n += n
            window_tokens += n_tokens
            window["loss"] = window.get("loss", 0.0) + float(loss_sum.detach())
            for key, value in metric_sums.items():
                window[key] = window.get(key, 0.0) + value
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if done % settings.log_every == 0 or done == total_steps:
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            last = {k: v / max(window_n, 1) for k, v in window.items()}
            last.update(
                {"grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0], "tokens_per_s": window_tokens / elapsed}
            )
            progress.set_postfix(loss=f"{last['loss']:.4f}")
            if log_fn is not None:
                log_fn(last, done)
            window, window_n, window_tokens, window_start = {}, 0, 0, time.perf_counter()
        if checkpoint_dir is not None and settings.checkpoint_every and done % settings.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, done)
    progress.close()
    model.eval()
    return {**last, "steps": float(total_steps)}


def _n_examples(micro_batch: Any) -> int:
    return int(micro_batch["n_examples"]) if isinstance(micro_batch, dict) else len(micro_batch)
