"""Response expansion, as in the reference pipeline: prompts with fewer than ``k`` responses get new
candidates sampled from a generator model, and every response of an expanded group is scored by the reward
model, so the group ranks on one scale; the result is scored JSONL (``hps_core.data.scored_jsonl``) that
goes through the data contracts like any other file.

Batched (``hps_core.evaluate.generation.generate``: left padding, KV cache; ``RewardScorer.score``) and sharded:
:func:`shard_prompts` cuts the prompts into contiguous shards that ``flows/expand_flow.py`` runs as a
foreach (one pod each on a cluster); :func:`merge_shards` concatenates the shard files in order.

What an expanded group holds: its original responses (their ``is_harmful`` labels kept; their scores
replaced by the reward model's, because a human "chosen/rejected" label and a reward-model score are not on
one scale) plus up to ``k - have`` generated ones (``is_harmful`` unknown). Control characters are removed
from generated text (the contracts refuse them); blank generations and exact duplicates of a response
already in the group are dropped, so a group can end up below ``k``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


# What contract canonical_rows refuses in text (C0 controls but tab, newline, carriage return; DEL): a
# sampled response is the model's output, not someone's data, so junk bytes are dropped from it here.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def groups_to_expand(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """The canonical table's prompts, one row each in first-seen order: ``prompt_id``, ``prompt``,
    ``responses``, ``scores``, ``is_harmful``, ``label_source``, ``have`` and ``expand`` (fewer than ``k`` responses)."""
    rows = []
    for pid, g in table.groupby("prompt_id", sort=False):
        harmful = [None if pd.isna(h) else bool(h) for h in g["is_harmful"].astype(object)]
        rows.append({"prompt_id": pid, "prompt": str(g["prompt"].iloc[0]), "responses": g["response"].astype(str).tolist(),
                     "scores": g["score"].astype(float).tolist(), "is_harmful": harmful, "label_source": str(g["label_source"].iloc[0]), "have": len(g),
                     "expand": len(g) < k})
    return pd.DataFrame(rows)


def shard_prompts(n_prompts: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges, sizes differing by at most one; no empty shard."""
    n_shards = max(1, min(int(n_shards), int(n_prompts))) if n_prompts else 1
    bounds = [i * n_prompts // n_shards for i in range(n_shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def expand_groups(
    groups: pd.DataFrame,
    generator_dir: str,
    reward_dir: str,
    cfg,
    *,
    k: int,
    seed: int,
    rescore: bool = True,
    sampling=None,
) -> list[dict[str, Any]]:
    """Scored JSONL records for ``groups`` (rows of :func:`groups_to_expand`, in order): groups marked
    ``expand`` get up to ``k - have`` generated candidates (``k`` sampled per prompt in one batched call,
    seeded by ``seed`` and the shard's first prompt id) and, with ``rescore``, every response scored by the
    reward model (without it only the new ones); other groups pass through unchanged. ``cfg``: the
    PipelineConfig (model lengths, reward-model head); ``sampling``: anything with temperature, top_p,
    max_new_tokens and batch_size (hps_flow passes ``[expand]``), else ``cfg.evaluate``."""
    from hps_core.evaluate.generation import generate, policy_seed
    from hps_core.models.loading import load_causal_lm
    from hps_core.models.reward import RewardScorer

    todo = groups[groups["expand"]].reset_index(drop=True)
    generated: list[list[str]] = []
    if len(todo):
        model, tok = load_causal_lm(generator_dir, trust_remote_code=cfg.model.trust_remote_code)
        # Sample k per prompt (one batched call), keep the first k - have usable ones of each.
        sampling = sampling or cfg.evaluate
        ev = dataclasses.replace(cfg.evaluate, samples_per_prompt=int(k), temperature=sampling.temperature,
                                 top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, batch_size=sampling.batch_size)
        generated = generate(model, tok, todo["prompt"].tolist(), cfg.model, ev,
                             seed=policy_seed(seed, "expansion", str(todo["prompt_id"].iloc[0])), desc="expansion generation")
        del model
    records = [{"prompt": g.prompt, "responses": list(g.responses), "rewards": list(g.scores),
                "is_harmful": list(g.is_harmful), "label_source": "rm" if g.expand else g.label_source,
                "_expanded": bool(g.expand)} for g in groups.itertuples(index=False)]
    score_prompts, score_texts, owners = [], [], []
    # The generations, in order, to the expanded groups; then what needs a reward-model score.
    it = iter(generated)
    for rec in records:
        if not rec["_expanded"]:
            continue
        seen = set(rec["responses"])
        for text in next(it):
            if len(rec["responses"]) >= k:
                break
            text = CONTROL_CHARACTERS.sub("", text).strip()
            if text and text not in seen:
                seen.add(text)
                rec["responses"].append(text)
                rec["is_harmful"].append(None)
        if rescore:
            rec["rewards"] = [None] * len(rec["responses"])
            for j, text in enumerate(rec["responses"]):
                score_prompts.append(rec["prompt"])
                score_texts.append(text)
                owners.append((rec, j))
        else:  # original scores kept; only the new ones are scored
            rec["rewards"] += [None] * (len(rec["responses"]) - len(rec["rewards"]))
            for j, text in enumerate(rec["responses"]):
                if rec["rewards"][j] is None:
                    score_prompts.append(rec["prompt"])
                    score_texts.append(text)
                    owners.append((rec, j))
    if score_texts:
        scorer = RewardScorer.load(reward_dir, cfg.model, batch_size=cfg.evaluate.batch_size, reward_cfg=cfg.reward_model)
        scores = np.asarray(scorer.score(score_prompts, score_texts, desc="expansion scoring"), dtype=np.float64)
        for (rec, j), s in zip(owners, scores):
            rec["rewards"][j] = float(s)
    out = []
    for rec in records:
        rec.pop("_expanded")
        if not any(h is not None for h in rec["is_harmful"]):
            rec.pop("is_harmful")
        out.append(rec)
    return out


def expand_training_prompts(table: pd.DataFrame, generator_dir: str, reward_dir: str, cfg, out: Path
                            ) -> tuple[pd.DataFrame, dict[str, Any], Path]:
    """hps_flow's expand step: the canonical table with every ``train`` prompt's group grown to ``cfg.expand.k``
    responses (:func:`expand_groups`, sampling from ``[expand]``, everything rescored), read back through
    the scored-JSONL loader (``out``, kept as the step's artifact) so the rows are built like any input's;
    ``eval`` and ``reward`` rows pass unchanged. Returns (table, load report, ``out``); the caller runs the
    contracts on it."""
    from hps_core.data.loader import load

    train = table["split"] == "train"
    todo = groups_to_expand(table[train], cfg.expand.k)
    records = expand_groups(todo, generator_dir, reward_dir, cfg, k=cfg.expand.k, seed=cfg.run.seed, sampling=cfg.expand)
    loaded = load(write_jsonl(records, out), "scored-jsonl", {"label_source": "rm"})
    rows = loaded.table
    # The same prompt text gives the same prompt id, so every expanded group is one of the training prompts.
    stray = set(rows["prompt_id"]) - set(table.loc[train, "prompt_id"])
    if stray:
        raise RuntimeError(f"expansion returned {len(stray)} prompt(s) that are not training prompts "
                           f"(first: {sorted(stray)[0]}); the scored-JSONL round trip changed a prompt's text")
    rows["split"] = pd.Series("train", index=rows.index, dtype=table["split"].dtype)
    return pd.concat([rows, table[~train]], ignore_index=True), loaded.report, Path(out)


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def merge_shards(shard_paths: list[str | Path], out: str | Path) -> Path:
    """Concatenate shard files in the given order (the shards' order is the prompts' order)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as dst:
        for p in shard_paths:
            dst.write(Path(p).read_text(encoding="utf-8"))
    return out


def expansion_stats(groups: pd.DataFrame, records: list[dict[str, Any]], k: int) -> dict[str, float]:
    sizes = np.array([len(r["responses"]) for r in records], dtype=float)
    return {"prompts": float(len(records)), "prompts_expanded": float(groups["expand"].sum()),
            "responses_before": float(groups["have"].sum()), "responses_after": float(sizes.sum()),
            "groups_at_k": float((sizes >= k).sum()), "responses_per_group_mean": float(sizes.mean()) if len(sizes) else 0.0}
