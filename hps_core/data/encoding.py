"""Tokenise (prompt, response) pairs and pad them into batches.

Prompt and response are rendered by the tokenizer's chat template (:class:`hps_core.data.chat.ChatFormat`:
the same text for policy, reference and reward model) and tokenised separately, then concatenated, so
the response tokens (the only ones that carry loss) are the same whatever the prompt; the prompt is
truncated from the left (its end, next to the response, matters most) and the response from the right,
to the configured lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from hps_core.data.chat import ChatFormat


@dataclass
class TruncationCounter:
    """How many examples lost tokens to the length limits (reported, never silent)."""

    prompts: int = 0
    responses: int = 0
    total: int = 0

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/truncated_prompts": float(self.prompts),
            f"{prefix}/truncated_responses": float(self.responses),
            f"{prefix}/examples": float(self.total),
        }


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_prompt: int  # tokens before the response; loss is taken on the rest


@dataclass
class Encoder:
    tokenizer: object
    max_prompt_tokens: int
    max_length: int
    counter: TruncationCounter = field(default_factory=TruncationCounter)
    _cache: dict = field(default_factory=dict)
    chat: ChatFormat = field(init=False)

    def __post_init__(self) -> None:
        self.chat = ChatFormat(self.tokenizer)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The rendered prompt's tokens (generation prompt included), untruncated."""
        ids = self._cache.get(prompt)
        if ids is None:
            ids = self._cache[prompt] = self.chat.prompt_ids(prompt)
        return ids

    def encode(self, prompt: str, response: str) -> Encoded:
        p_ids = self.prompt_ids(prompt)
        r_ids = self.chat.response_ids(response)
        self.counter.total += 1
        if len(p_ids) > self.max_prompt_tokens:
            self.counter.prompts += 1
            p_ids = p_ids[-self.max_prompt_tokens :]
        room = self.max_length - len(p_ids)
        if len(r_ids) > room:
            self.counter.responses += 1
            r_ids = r_ids[:room]
        return Encoded(p_ids + r_ids, len(p_ids))


def collate(examples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with ``response_mask`` marking the tokens whose log-prob is predicted.

    ``response_mask[b, t]`` is 1 where token t of row b is a response token; log-probs of token t come
    from the logits at position t - 1.
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    resp = torch.zeros((len(examples), width), dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        attn[b, :n] = 1
        resp[b, e.n_prompt : n] = True
    return {"input_ids": ids, "attention_mask": attn, "response_mask": resp}
