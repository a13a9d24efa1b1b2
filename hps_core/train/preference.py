"""Preference training (HPS, BT and PL in any pair framework) from an SFT checkpoint.

The SFT checkpoint is both the starting policy and the frozen reference. Reference log-probs are
computed once, before training, for every sequence the run will use (the preferred response and every
drawn negative, or all responses for PL), and cached on disk under a digest of what determines them;
they are never recomputed per epoch.

One training example is a list of ranks into its group (HPS/BT: ``[0, negative]``; PL: ``[0..n-1]``);
all sequences of a micro-batch go through the policy in ONE forward.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hps_core.config import ModelConfig, PreferenceTrainConfig
from hps_core.losses import hps_loss, listwise_loss, pair_loss, parse_method
from hps_core.models import load_causal_lm
from hps_core.train.batching import Encoder, collate, length_grouped_batches
from hps_core.train.checkpoint import save_model_atomic
from hps_core.train.logprobs import response_logps
from hps_core.train.loop import LogFn, LoopSettings, train_loop


def plan_examples(groups: pd.DataFrame, negatives: pd.DataFrame, preference_model: str) -> list[list[tuple[int, int]]]:
    """Per epoch, the training examples as lists of (group index, rank) sequences."""
    train_index = {pid: i for i, pid in enumerate(groups["prompt_id"])}
    epochs = sorted(negatives["epoch"].unique()) if len(negatives) else [0]
    plan = []
    for epoch in epochs:
        if preference_model == "pl":
            plan.append([[(gi, r) for r in range(groups["n"].iloc[gi])] for gi in range(len(groups))])
        else:
            drawn = negatives[negatives["epoch"] == epoch]
            plan.append([[(train_index[pid], 0), (train_index[pid], int(rank))] for pid, rank in zip(drawn["prompt_id"], drawn["negative_rank"])])
    return plan


@torch.no_grad()
def sequence_logps(model, encoded: list, pad_id: int, batch_size: int, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts for many sequences, batched by length, no grad."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    logps = torch.zeros(len(encoded), dtype=torch.float64)
    counts = torch.zeros(len(encoded), dtype=torch.long)
    model.eval()
    for start in tqdm(range(0, len(order), batch_size), desc=desc):
        idx = order[start : start + batch_size]
        lp, n = response_logps(model, collate([encoded[i] for i in idx], pad_id))
        logps[idx] = lp.double().cpu()
        counts[idx] = n.cpu()
    return logps, counts


def _reference_cache_key(sft_dir: str, keys: list[tuple[str, str]], model_cfg: ModelConfig) -> str:
    h = hashlib.sha256()
    weights = Path(sft_dir) / "model.safetensors"
    h.update(weights.read_bytes() if weights.is_file() else sft_dir.encode())
    h.update(json.dumps([model_cfg.max_prompt_tokens, model_cfg.max_length, keys]).encode())
    return h.hexdigest()[:20]


def train_preference(
    sft_dir: str,
    groups: pd.DataFrame,
    negatives: pd.DataFrame,
    model_cfg: ModelConfig,
    cfg: PreferenceTrainConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    log_fn: LogFn | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, float]:
    framework, preference_model = parse_method(cfg.method)
    groups = groups[groups["split"] == "train"].reset_index(drop=True)
    torch.manual_seed(seed)
    policy, tokenizer = load_causal_lm(sft_dir, trust_remote_code=model_cfg.trust_remote_code)
    encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)

    epochs = plan_examples(groups, negatives, preference_model)
    keys = sorted({seq for epoch in epochs for example in epoch for seq in example})
    slot = {key: i for i, key in enumerate(keys)}
    encoded = [encoder.encode(groups["prompt"].iloc[gi], groups["responses"].iloc[gi][r]) for gi, r in keys]

    # Reference pass: once, cached by a digest of (reference weights, sequences, length limits).
    id_keys = [(groups["prompt_id"].iloc[gi], groups["response_ids"].iloc[gi][r]) for gi, r in keys]
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"ref-logps-{_reference_cache_key(sft_dir, id_keys, model_cfg)}.pt"
    if cache_file is not None and cache_file.is_file():
        ref_logps, token_counts = torch.load(cache_file, weights_only=True)
    else:
        ref_logps, token_counts = sequence_logps(policy, encoded, tokenizer.pad_token_id, 4 * cfg.batch_size, "reference log-probs")
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            torch.save((ref_logps, token_counts), tmp)
            tmp.replace(cache_file)

    plan = []
    for e, examples in enumerate(epochs):
        lengths = [sum(len(encoded[slot[s]].input_ids) for s in ex) for ex in examples]
        for batch in length_grouped_batches(lengths, cfg.batch_size, np.random.default_rng([seed, 2, e])):
            plan.append([[slot[s] for s in examples[i]] for i in batch])

    def loss_fn(model, batch):
        width = max(len(ex) for ex in batch)
        flat = [s for ex in batch for s in ex]
        mask = torch.tensor([[k < len(ex) for k in range(width)] for ex in batch])
        logps, counts = response_logps(model, collate([encoded[s] for s in flat], tokenizer.pad_token_id))
        ratios_flat = logps - ref_logps[flat].to(logps)
        if framework == "ipo":  # IPO works on length-averaged log-ratios (TRL's convention)
            ratios_flat = ratios_flat / counts.clamp(min=1)
        ratios = torch.zeros(mask.shape, dtype=ratios_flat.dtype, device=ratios_flat.device)
        ratios[mask.to(ratios.device)] = ratios_flat
        chosen, rejected = ratios[:, 0], ratios[:, 1]
        if preference_model == "hps":
            n_disp = torch.tensor([groups["n"].iloc[keys[ex[0]][0]] - 1 for ex in batch], device=chosen.device)
            losses = hps_loss(
                chosen, rejected, n_dispreferred=n_disp, beta=cfg.beta, framework=framework,
                label_smoothing=cfg.label_smoothing, log_n_offset=cfg.log_n_offset,
            )
        elif preference_model == "bt":
            losses = pair_loss(framework, chosen, rejected, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
        else:
            losses = listwise_loss(framework, ratios, beta=cfg.beta, mask=mask.to(ratios.device), label_smoothing=cfg.label_smoothing)
        r_chosen, r_rejected = cfg.beta * chosen.detach(), cfg.beta * rejected.detach()
        lp, starts = logps.detach(), _offsets(batch)
        sums = {
            "rewards/chosen": float(r_chosen.sum()),
            "rewards/rejected": float(r_rejected.sum()),
            "rewards/margins": float((r_chosen - r_rejected).sum()),
            "rewards/accuracies": float((r_chosen > r_rejected).float().sum()),
            "logps/chosen": float(lp[starts].sum()),
            "logps/rejected": float(lp[[o + 1 for o in starts]].sum()),
        }
        return losses.sum(), len(batch), sums, int(sum(len(encoded[s].input_ids) for s in flat))

    settings = LoopSettings(
        lr=cfg.lr,
        warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        grad_accum_steps=cfg.grad_accum_steps,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        description=cfg.method,
    )
    metrics = train_loop(policy, plan, loss_fn, settings, log_fn=log_fn, checkpoint_dir=checkpoint_dir)
    save_model_atomic(policy, tokenizer, out_dir)
    return {**metrics, **encoder.counter.as_metrics("hps"), "hps/reference_sequences": float(len(keys))}


def _offsets(batch: list[list[int]]) -> list[int]:
    """Index of each example's first sequence in the flattened micro-batch."""
    out, pos = [], 0
    for ex in batch:
        out.append(pos)
        pos += len(ex)
    return out
