"""Sampling a policy's responses for evaluation and expansion: batched, left-padded, KV cache, seeded per batch."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from tqdm.auto import tqdm

from hps_core.config.schema import EvaluateConfig, ModelConfig
from hps_core.data.encoding import Encoder


def policy_seed(run_seed: int, *parts: str) -> int:
    """The sampling seed of one policy (and eval set): a stable hash of the run seed and the names, so each
    policy's generations are reproducible on their own, whatever order or subset of policies is run."""
    digest = hashlib.sha256(":".join([str(run_seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # torch seeds are < 2**63


@torch.no_grad()
def generate(
    model, tokenizer, prompts: list[str], model_cfg: ModelConfig, cfg: EvaluateConfig, *, seed: int, desc: str
) -> list[list[str]]:
    """``cfg.samples_per_prompt`` sampled responses per prompt (left padding, KV cache).

    Each batch is sampled from its own generator state, seeded by (``seed``, batch index), inside a forked
    RNG: the result depends only on the seed and the batch size, and the caller's RNG is left untouched.
    """
    encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)
    device = next(model.parameters()).device
    model.eval()
    out: list[list[str]] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for b, start in enumerate(tqdm(range(0, len(prompts), cfg.batch_size), desc=desc)):
            torch.manual_seed(int(np.random.SeedSequence([seed, b]).generate_state(1, np.uint64)[0] >> np.uint64(1)))
            ids = [encoder.prompt_ids(p)[-model_cfg.max_prompt_tokens :] for p in prompts[start : start + cfg.batch_size]]
            width = max(map(len, ids))
            input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(ids), width), dtype=torch.long)
            for i, row in enumerate(ids):
                input_ids[i, width - len(row) :] = torch.tensor(row)
                attention[i, width - len(row) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                num_return_sequences=cfg.samples_per_prompt,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=encoder.chat.stop_ids,  # the template's end of turn (<|im_end|>, ...) and EOS
                use_cache=True,
            )
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            k = cfg.samples_per_prompt
            out.extend([t.strip() for t in texts[i * k : (i + 1) * k]] for i in range(len(ids)))
    return out
