"""Preference training (HPS, BT and PL in any pair framework) from an SFT checkpoint.

The SFT checkpoint is both the starting policy and the frozen reference. Reference log-probs are
computed once, before training, for every sequence the run will use (the preferred response and every
drawn negative, or all responses for PL), and cached on disk under a digest of what determines them
(reference weights, tokenizer, the sequences, length limits, precision); never recomputed per epoch.

One training example is a list of ranks into its group (HPS/BT: ``[0, negative]``; PL: ``[0..n-1]``);
all sequences of a micro-batch go through the policy in ONE forward, one row per example: the prompt
once, then each of its responses (``batching.collate_shared``), so a long conversation is not computed
once per response. The reference pass packs the sequences of a prompt the same way.

Optimizer steps follow the plan the negatives were drawn for (``hps_core.sampling.groups.plan_steps``):
each step a uniform random batch of the epoch's groups, so steps are independent samples and a gamma
schedule is evaluated at every step. Inside a step the examples are ordered by length before they are cut
into micro-batches, which cuts padding without changing the step's gradient (the loss is a sum over the
step). With on-policy hardness the trainer draws each step's negatives itself, just before the step
(``hps_core.train.online_hardness``), and writes what it drew to ``drawn_out``. The ``gamma`` metric is
the mean gamma_s the window's negatives were drawn with, ``hps/negative_rank`` their mean score rank (1 =
the top-scored dispreferred response); both for HPS only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from hps_core.config.schema import ModelConfig, PreferenceTrainConfig
from hps_core.train.losses import hps_loss, hps_unbiased_loss, listwise_loss, pair_loss, parse_method
from hps_core.train import distributed, fsdp
from hps_core.data.encoding import Encoder
from hps_core.train.batching import collate_shared, shared_length, shared_prompt_batches
from hps_core.train.logprobs import response_logps
from hps_core.train.loop import CheckpointFn, LogFn, LoopSettings, split_steps, train_loop
from hps_core.train.model_setup import autocast_for, compute_dtype, load_for_training, save_trained_model

log = logging.getLogger(__name__)


def plan_training_steps(groups: pd.DataFrame, negatives: pd.DataFrame, preference_model: str, cfg, seed: int) -> list[list[dict]]:
    """The run's optimizer steps, each a list of examples ``{"group", "seqs", "gamma", "step", "epoch"}``;
    ``seqs`` are the (group index, rank) of the example's sequences, ``(g, -1)`` for a negative the trainer
    draws at the step (on-policy hardness). HPS/BT follow the negatives table's ``step`` column, PL plans
    its own steps the same way (every response of every group, once per epoch)."""
    from hps_core.sampling.groups import plan_steps

    if preference_model == "pl":
        return [[{"group": int(gi), "seqs": [(int(gi), r) for r in range(int(groups["n"].iloc[gi]))], "gamma": None,
                  "step": step, "epoch": epoch} for gi in idx]
                for epoch, step, idx in plan_steps(len(groups), cfg.epochs, cfg.batch_size * cfg.grad_accum_steps, seed)]
    if len(negatives) and "step" not in negatives:
        raise ValueError("the negatives table has no 'step' column: it was drawn by an older version, which planned "
                         "epochs in parts; run build_groups again (hps_core.sampling.negatives.draw_negatives)")
    found = sorted(int(e) for e in negatives["epoch"].unique()) if len(negatives) else []
    if found != list(range(cfg.epochs)):
        raise ValueError(
            f"the drawn negatives cover epochs {found}, but training runs {cfg.epochs} epoch(s); draw them with "
            f"n_epochs = hps.epochs (hps_core.sampling.groups.draw_epoch_negatives) or change hps.epochs"
        )
    train_index = {pid: i for i, pid in enumerate(groups["prompt_id"])}
    missing = sorted(set(negatives["prompt_id"]) - set(train_index))
    if missing:
        raise ValueError(f"{len(missing)} drawn negative(s) belong to prompts outside the training groups "
                         f"(first: {missing[0]}); were the negatives drawn from another split or data set?")
    steps = []
    for (epoch, step), drawn in negatives.groupby(["epoch", "step"], sort=True):
        steps.append([{"group": train_index[pid], "seqs": [(train_index[pid], 0), (train_index[pid], int(rank))],
                       "gamma": float(gamma) if preference_model == "hps" else None, "step": int(step), "epoch": int(epoch)}
                      for pid, rank, gamma in zip(drawn["prompt_id"], drawn["negative_rank"], drawn["gamma"])])
    return steps


@torch.no_grad()
def sequence_logps(model, encoded: list, pad_id: int, batch_size: int, desc: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and token counts for many sequences, batched by length, no grad.
    Sequences with the same prompt share a row (the prompt computed once, see ``collate_shared``); a
    batch holds at most ``batch_size`` sequences.

    Under torch.distributed every rank must call it: each computes every world_size-th batch and the
    results are summed across ranks (the batches are the single-process ones, so are the values).
    ``desc = None`` shows no progress bar (a pass inside a training step)."""
    batches = shared_prompt_batches(encoded, batch_size)
    logps = torch.zeros(len(encoded), dtype=torch.float64)
    counts = torch.zeros(len(encoded), dtype=torch.long)
    model.eval()
    ctx = distributed.current()
    for rows in tqdm(batches[ctx.rank :: ctx.world_size], desc=desc, disable=desc is None or not ctx.is_main):
        idx = [i for row in rows for i in row]
        lp, n = response_logps(model, collate_shared([[encoded[i] for i in row] for row in rows], pad_id))
        logps[idx] = lp.double().cpu()
        counts[idx] = n.cpu()
    return distributed.sum_tensor_(logps), distributed.sum_tensor_(counts)


def _hash_files(h, files) -> None:
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                h.update(chunk)


def reference_cache_key(sft_dir: str, keys: list[tuple[str, str]], model_cfg: ModelConfig, precision: str) -> str:
    """Digest of what the reference log-probs depend on: weights and tokenizer files (every shard), the
    (prompt id, response id) sequences, the length limits and the compute precision."""
    h = hashlib.sha256()
    root = Path(sft_dir)
    files = sorted(root.glob("*.safetensors")) + sorted(root.glob("tokenizer*.json")) if root.is_dir() else []
    if files:
        _hash_files(h, files)
    else:  # a hub id: its revision is what names the weights
        h.update(sft_dir.encode())
    h.update(json.dumps([model_cfg.max_prompt_tokens, model_cfg.max_length, precision, keys]).encode())
    return h.hexdigest()[:20]


def reference_logps(policy, encoded, pad_id, batch_size, cache_file: Path | None):
    """The reference pass, or its cached result. Returns (log-probs, token counts) per sequence.
    Under torch.distributed the pass is shared by the ranks and rank 0 writes the cache."""
    if cache_file is not None and distributed.everywhere(cache_file.is_file()):
        return torch.load(cache_file, weights_only=True)
    with autocast_for(policy)():
        ref = sequence_logps(policy, encoded, pad_id, batch_size, "reference log-probs")
    if cache_file is not None and distributed.current().is_main:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(ref, tmp)
        tmp.replace(cache_file)
    return ref


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
    drawn_out: Path | None = None,
    on_checkpoint: CheckpointFn | None = None,
    strategy: str = "ddp",
) -> dict[str, float]:
    """Preference-train the SFT model ``sft_dir`` (also the frozen reference); ``strategy``
    (``[resources] strategy``): several processes replicate ("ddp") or shard ("fsdp") the policy."""
    framework, preference_model = parse_method(cfg.method)
    groups = groups[groups["split"] == "train"].reset_index(drop=True)
    torch.manual_seed(seed)
    policy, tokenizer = load_for_training(
        sft_dir, trust_remote_code=model_cfg.trust_remote_code,
        gradient_checkpointing=cfg.gradient_checkpointing, lora=cfg.lora,
    )
    encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)

    steps = plan_training_steps(groups, negatives, preference_model, cfg, seed)
    online = preference_model == "hps" and bool(len(negatives)) and bool((negatives["negative_rank"] < 0).any())
    if online:  # any dispreferred response may be drawn: all of the training groups' responses are needed
        keys = sorted({(ex["group"], r) for step in steps for ex in step for r in range(int(groups["n"].iloc[ex["group"]]))})
    else:
        keys = sorted({seq for step in steps for ex in step for seq in ex["seqs"]})
    slot = {key: i for i, key in enumerate(keys)}
    encoded = [encoder.encode(groups["prompt"].iloc[gi], groups["responses"].iloc[gi][r]) for gi, r in keys]

    id_keys = [(groups["prompt_id"].iloc[gi], groups["response_ids"].iloc[gi][r]) for gi, r in keys]
    precision = str(compute_dtype(policy))
    cache_key = reference_cache_key(sft_dir, id_keys, model_cfg, precision)
    cache_file = Path(cache_dir) / f"ref-logps-{cache_key}.pt" if cache_dir is not None else None
    ref_logps, _ = reference_logps(policy, encoded, tokenizer.pad_token_id, 4 * cfg.batch_size, cache_file)

    def row_length(ex) -> int:  # tokens of the example's packed row (prompt once, then its responses)
        return shared_length([encoded[slot[s]] for s in ex["seqs"]])

    def by_length(step_examples: list[dict]) -> list[dict]:
        # Longest first inside the step, so a micro-batch pads little; the step's sum is the same in any order.
        return sorted(step_examples, key=row_length, reverse=True)

    hardness = None
    if online:
        from hps_core.train.online_hardness import OnlineHardness

        def policy_logps(slots: list[int]) -> torch.Tensor:
            with autocast_for(policy)():
                lp, _ = sequence_logps(policy, [encoded[i] for i in slots], tokenizer.pad_token_id, 4 * cfg.batch_size, None)
            policy.train()
            return lp

        hardness = OnlineHardness(groups, cfg, seed, policy_logps, ref_logps, slot)

        def prepare_step(step_index: int, micro_batches: list) -> list:
            examples = [ex for mb in micro_batches for ex in mb]
            hardness.refresh(step_index, [ex["group"] for ex in examples])
            hardness.draw(step_index, examples[0]["epoch"], examples)
            return split_steps([by_length(examples)], cfg.batch_size)[0]

        # Negatives not drawn yet: the plan (and a checkpoint's fingerprint) needs each step's micro-batch
        # sizes, which the draw does not change.
        plan = split_steps(steps, cfg.batch_size)
    else:
        prepare_step = None
        plan = split_steps([by_length(step) for step in steps], cfg.batch_size)

    def loss_fn(model, batch):
        seqs = [[slot[s] for s in ex["seqs"]] for ex in batch]
        width = max(len(s) for s in seqs)
        flat = [s for ex in seqs for s in ex]
        mask = torch.tensor([[k < len(ex) for k in range(width)] for ex in seqs])
        # One row per example: its responses share the prompt, which goes through the model once.
        rows = collate_shared([[encoded[s] for s in ex] for ex in seqs], tokenizer.pad_token_id)
        logps, counts = response_logps(model, rows)
        ratios_flat = logps.float() - ref_logps[flat].to(device=logps.device, dtype=torch.float32)
        if framework == "ipo":  # IPO works on length-averaged log-ratios (TRL's convention)
            ratios_flat = ratios_flat / counts.clamp(min=1)
        mask = mask.to(ratios_flat.device)
        ratios = torch.zeros(mask.shape, dtype=ratios_flat.dtype, device=ratios_flat.device)
        ratios[mask] = ratios_flat
        chosen, rejected = ratios[:, 0], ratios[:, 1]
        lp, starts = logps.detach(), _offsets(seqs)
        if preference_model == "hps":
            n_disp = torch.tensor([groups["n"].iloc[ex["group"]] - 1 for ex in batch], device=chosen.device)
            if cfg.estimator == "unbiased":
                log_mass = torch.tensor([ex["log_mass"] for ex in batch], device=chosen.device)
                losses = hps_unbiased_loss(chosen, rejected, log_mass, n_dispreferred=n_disp, beta=cfg.beta)
            else:
                losses = hps_loss(
                    chosen, rejected, n_dispreferred=n_disp, beta=cfg.beta, framework=framework,
                    label_smoothing=cfg.label_smoothing, log_n_offset=cfg.log_n_offset,
                )
            if hardness is not None and not distributed.current().enabled:  # the forward's fresh r of the negative
                for ex, o in zip(batch, starts):
                    hardness.write_back(ex["group"], ex["seqs"][1][1], float(lp[o + 1]), ex["step"])
        elif preference_model == "bt":
            losses = pair_loss(framework, chosen, rejected, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
        else:
            losses = listwise_loss(framework, ratios, beta=cfg.beta, mask=mask, label_smoothing=cfg.label_smoothing)
        r_chosen, r_rejected = cfg.beta * chosen.detach(), cfg.beta * rejected.detach()
        sums = {
            "rewards/chosen": float(r_chosen.sum()),
            "rewards/rejected": float(r_rejected.sum()),
            "rewards/margins": float((r_chosen - r_rejected).sum()),
            "rewards/accuracies": float((r_chosen > r_rejected).float().sum()),
            "logps/chosen": float(lp[starts].sum()),
            "logps/rejected": float(lp[[o + 1 for o in starts]].sum()),
        }
        if preference_model == "hps":
            sums["gamma"] = float(sum(ex["gamma"] for ex in batch))
            sums["hps/negative_rank"] = float(sum(ex["seqs"][1][1] for ex in batch))
        return losses.sum(), len(batch), sums, int(sum(len(encoded[s].input_ids) for s in flat))

    settings = LoopSettings.from_stage(cfg, cfg.method, strategy)
    run_key = json.dumps([cache_key, seed, cfg.method, cfg.beta, cfg.label_smoothing, cfg.log_n_offset, cfg.lora.r,
                          cfg.hardness, cfg.gamma_r, cfg.refresh_every, cfg.refresh_top_m, cfg.estimator])
    metrics = train_loop(policy, plan, loss_fn, settings, log_fn=log_fn, checkpoint_dir=checkpoint_dir, run_key=run_key,
                         tokenizer=tokenizer, prepare_step=prepare_step, on_checkpoint=on_checkpoint)
    gathered = fsdp.full_model_state(policy)  # sharded (FSDP): every rank joins the gather; else None
    if distributed.current().is_main:  # one writer; the other ranks wait for the finished directory
        save_trained_model(policy, tokenizer, out_dir, sft_dir, gathered)  # LoRA: adapter/ (base: the SFT model) too
        if hardness is not None and drawn_out is not None:
            Path(drawn_out).parent.mkdir(parents=True, exist_ok=True)
            hardness.table().to_parquet(drawn_out, index=False)
    distributed.barrier()
    truncation = encoder.counter.as_metrics("hps")
    if encoder.counter.prompts or encoder.counter.responses:
        log.warning("%s: %d of %d sequences truncated (prompts %d, responses %d) to max_prompt_tokens=%d, max_length=%d",
                    cfg.method, max(encoder.counter.prompts, encoder.counter.responses), encoder.counter.total,
                    encoder.counter.prompts, encoder.counter.responses, model_cfg.max_prompt_tokens, model_cfg.max_length)
    if log_fn is not None and distributed.current().is_main:
        log_fn(truncation, int(metrics["steps"]))
    extra = {"hps/refreshed_sequences": float(hardness.refreshed)} if hardness is not None else {}
    return {**metrics, **truncation, **extra, "hps/reference_sequences": float(len(keys))}


def _offsets(batch: list[list[int]]) -> list[int]:
    """Index of each example's first sequence in the flattened micro-batch."""
    out, pos = [], 0
    for ex in batch:
        out.append(pos)
        pos += len(ex)
    return out
