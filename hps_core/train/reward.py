"""Train a Bradley-Terry reward model when the config names none (scoring: hps_core.models.reward)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from hps_core.config.schema import ModelConfig, RewardModelConfig
from hps_core.models.loading import load_reward_model
from hps_core.data.encoding import Encoded
from hps_core.train import distributed
from hps_core.train.lora import apply_lora
from hps_core.train.model_setup import save_trained_model
from hps_core.train.loop import LogFn, LoopSettings, train_loop
from hps_core.models.reward import RewardScorer


def preference_pairs(groups: pd.DataFrame, per_group: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """(group, better rank, worse rank) pairs: the preferred response against ``per_group`` dispreferred
    ones chosen at random, plus one adjacent pair, so the model learns the whole ranking."""
    pairs = []
    for gi, n in enumerate(groups["n"]):
        worse = rng.choice(np.arange(1, n), size=min(per_group, n - 1), replace=False)
        pairs.extend((gi, 0, int(w)) for w in worse)
        if n > 2:
            k = int(rng.integers(1, n - 1))
            pairs.append((gi, k, k + 1))
    return pairs


def pairwise_accuracy(scorer: RewardScorer, groups: pd.DataFrame) -> float:
    """Share of (preferred, dispreferred) pairs of ``groups`` that the reward model orders correctly."""
    prompts = [g.prompt for g in groups.itertuples() for _ in g.responses]
    responses = [r for g in groups.itertuples() for r in g.responses]
    scores = scorer.score(prompts, responses, desc="reward accuracy")
    correct = total = 0
    pos = 0
    for g in groups.itertuples():
        s = scores[pos : pos + len(g.responses)]
        pos += len(g.responses)
        strictly_worse = np.asarray(g.scores[1:]) < g.scores[0]  # ties carry no preference
        correct += int((s[1:][strictly_worse] < s[0]).sum())
        total += int(strictly_worse.sum())
    return correct / max(total, 1)


def reward_model_split(groups: pd.DataFrame) -> str:
    """The split a reward model trained in the flow learns from: its own prompts when there are any."""
    return "reward" if (groups["split"] == "reward").any() else "train"


def train_reward_model(
    base_model: str,
    groups: pd.DataFrame,
    model_cfg: ModelConfig,
    cfg: RewardModelConfig,
    out_dir: Path,
    *,
    seed: int = 0,
    log_fn: LogFn | None = None,
) -> dict[str, float]:
    """Train a Bradley-Terry reward model on its groups (split ``reward`` when the data sets prompts aside for
    it, ``data.reward_fraction``; else ``train``); report held-out pairwise accuracy."""
    torch.manual_seed(seed)
    model, tokenizer = load_reward_model(base_model, trust_remote_code=model_cfg.trust_remote_code,
                                         allow_pickle=model_cfg.allow_pickle_weights, num_labels=1,
                                         config_key="model.base")
    if cfg.lora.r > 0:  # adapters on the backbone, the score head in full; saved merged, adapter in adapter/
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS")
    scorer = RewardScorer(model, tokenizer, model_cfg)
    train = groups[groups["split"] == reward_model_split(groups)].reset_index(drop=True)
    rng = np.random.default_rng([seed, 3])
    plan = []
    for _ in range(cfg.epochs):
        pairs = preference_pairs(train, cfg.pairs_per_group, rng)
        order = rng.permutation(len(pairs))
        plan.extend([[pairs[i] for i in order[s : s + cfg.batch_size]] for s in range(0, len(order), cfg.batch_size)])
    # Every sequence the plan trains on, encoded once up front: under DDP each rank then holds the same
    # encodings (and truncation counts) as one process, whichever share of a step it computes.
    needed = sorted({(g, r) for step in plan for g, better, worse in step for r in (better, worse)})
    cache: dict[tuple[int, int], Encoded] = {
        (g, r): scorer.encode(train["prompt"].iloc[g], train["responses"].iloc[g][r]) for g, r in needed}

    def enc(gi: int, rank: int) -> Encoded:
        return cache[(gi, rank)]

    def loss_fn(model, batch):
        seqs = [enc(g, b) for g, b, _ in batch] + [enc(g, w) for g, _, w in batch]
        rewards = scorer.forward(seqs)
        better, worse = rewards[: len(batch)], rewards[len(batch) :]
        losses = -F.logsigmoid(better - worse)
        return losses.sum(), len(batch), {"accuracy": float((better > worse).float().sum())}, sum(len(e.input_ids) for e in seqs)

    settings = LoopSettings(lr=cfg.lr, warmup_ratio=0.1, log_every=10, description="reward model")
    metrics = train_loop(model, plan, loss_fn, settings, log_fn=log_fn)
    heldout = groups[groups["split"] == "eval"]
    # Every rank scores the held-out pairs (the same numbers everywhere); rank 0 alone writes the model.
    accuracy = pairwise_accuracy(scorer, heldout) if len(heldout) else float("nan")  # before saving merges adapters
    if distributed.current().is_main:
        save_trained_model(model, tokenizer, out_dir, base_model)
    distributed.barrier()
    # Truncation over every pair encoded for training and for the held-out accuracy.
    return {**metrics, **scorer.truncation_metrics(), "reward_model/heldout_pairwise_accuracy": accuracy}
