"""Evaluation: generations scored by the reward model and a harm judge, implicit-reward margins on
held-out groups, each metric with a bootstrap 95 % interval over prompts (HPS_METHOD.md section 7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hps_core.config import EvaluateConfig, ModelConfig
from hps_core.train.batching import Encoder


def bootstrap_ci(values, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per prompt)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarise(name: str, per_prompt, *, n_boot: int, seed: int) -> dict[str, float]:
    """``name``, ``name_ci_low``, ``name_ci_high`` and ``name_n`` from one value per prompt."""
    values = np.asarray(per_prompt, dtype=np.float64)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {name: float(values.mean()) if values.size else float("nan"), f"{name}_ci_low": low, f"{name}_ci_high": high, f"{name}_n": float(values.size)}


@torch.no_grad()
def generate(
    model, tokenizer, prompts: list[str], model_cfg: ModelConfig, cfg: EvaluateConfig, *, seed: int, desc: str
) -> list[list[str]]:
    """``cfg.samples_per_prompt`` sampled responses per prompt (left padding, KV cache)."""
    encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    model.eval()
    out: list[list[str]] = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc=desc):
        ids = [encoder.prompt_ids(p)[-model_cfg.max_prompt_tokens :] for p in prompts[start : start + cfg.batch_size]]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for b, row in enumerate(ids):
            input_ids[b, width - len(row) :] = torch.tensor(row)
            attention[b, width - len(row) :] = 1
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            do_sample=True,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            num_return_sequences=cfg.samples_per_prompt,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            use_cache=True,
        )
        texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        k = cfg.samples_per_prompt
        out.extend([t.strip() for t in texts[i * k : (i + 1) * k]] for i in range(len(ids)))
    return out


@dataclass(frozen=True)
class GenerationResult:
    table: pd.DataFrame  # one row per generation
    metrics: dict[str, float]


def score_generations(
    policy_name: str,
    prompt_ids: list[str],
    prompts: list[str],
    generations: list[list[str]],
    reward_fn,
    harm_fn,
    *,
    n_boot: int,
    seed: int,
    sft_reward_per_prompt: np.ndarray | None = None,
) -> GenerationResult:
    """Reward and harm of each generation; ``reward_mean``, ``reward_best_of_k``, ``harmful_rate`` (and
    ``win_rate_vs_sft`` when the SFT policy's per-prompt mean rewards are given)."""
    rows = [
        {"policy": policy_name, "prompt_id": pid, "prompt": p, "sample": j, "generation": text}
        for pid, p, texts in zip(prompt_ids, prompts, generations)
        for j, text in enumerate(texts)
    ]
    table = pd.DataFrame(rows)
    table["reward"] = reward_fn(table["prompt"].tolist(), table["generation"].tolist())
    table["harmful"] = harm_fn(table["generation"].tolist())
    per_prompt = table.groupby("prompt_id", sort=False).agg(
        reward=("reward", "mean"), best=("reward", "max"), harmful=("harmful", "mean")
    )
    metrics = {}
    metrics.update(summarise("reward_mean", per_prompt["reward"], n_boot=n_boot, seed=seed))
    metrics.update(summarise("reward_best_of_k", per_prompt["best"], n_boot=n_boot, seed=seed))
    metrics.update(summarise("harmful_rate", per_prompt["harmful"], n_boot=n_boot, seed=seed))
    if sft_reward_per_prompt is not None:
        wins = (per_prompt["reward"].to_numpy() > sft_reward_per_prompt).astype(float)
        metrics.update(summarise("win_rate_vs_sft", wins, n_boot=n_boot, seed=seed))
    return GenerationResult(table, metrics)


def implicit_margins(
    groups: pd.DataFrame, policy_logps: np.ndarray, reference_logps: np.ndarray, beta: float, *, n_boot: int, seed: int
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Implicit rewards r = beta * (log pi - log pi_ref) of every held-out response, and per group
    ``margin_hardest`` = r(y+) - max_j r(y_j), ``margin_mean`` = r(y+) - mean_j r(y_j) and whether the
    preferred response beats every dispreferred one (``ranking_accuracy``).

    ``policy_logps``/``reference_logps`` are flat, in group order then rank order (best first).
    """
    rewards = beta * (np.asarray(policy_logps) - np.asarray(reference_logps))
    rows, per_group = [], []
    pos = 0
    for g in groups.itertuples(index=False):
        r = rewards[pos : pos + g.n]
        pos += g.n
        rows.extend(
            {"prompt_id": g.prompt_id, "rank": k, "response_id": g.response_ids[k], "score": g.scores[k], "implicit_reward": float(r[k])}
            for k in range(g.n)
        )
        per_group.append((r[0] - r[1:].max(), r[0] - r[1:].mean(), float(r[0] > r[1:].max())))
    arr = np.asarray(per_group, dtype=np.float64).reshape(-1, 3)
    metrics = {}
    for i, name in enumerate(("margin_hardest", "margin_mean", "ranking_accuracy")):
        metrics.update(summarise(name, arr[:, i], n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows), metrics
