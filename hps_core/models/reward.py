"""A reward model as a scorer of (prompt, response) pairs: one scoring function for every use (evaluating
generations, scoring expansions, annotating unscored data with :func:`annotate_scores`).

Pairs are encoded exactly as the policy encodes them (``hps_core.data.encoding.Encoder``, which renders the
prompt with the reward model's own chat template, or the project's plain one: hps_core.data.chat), so
policy and reward model see the same text; the score is read at the response's end-of-turn token.
Multi-objective heads are reduced to one score by ``reward_model.head_reduction`` (:func:`reduce_heads`);
sequences cut to ``model.max_length`` are counted (:meth:`RewardScorer.truncation_metrics`).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from hps_core.config.schema import ModelConfig, RewardModelConfig
from hps_core.config.eval_specs import parse_head_reduction
from hps_core.models.loading import load_reward_model
from hps_core.data.encoding import Encoded, Encoder, collate


def reduce_heads(heads: torch.Tensor, spec: str) -> torch.Tensor:
    """One score per row from a ``[batch, heads]`` reward output (see ``hps_core.config.eval_specs``).

    >>> reduce_heads(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), "mean")
    tensor([2., 1.])
    """
    kind, args = parse_head_reduction(spec)
    heads = heads.float().reshape(heads.shape[0], -1)
    n = heads.shape[1]
    if kind == "first":
        return heads[:, 0]
    if kind == "mean":
        return heads.mean(dim=1)
    if kind == "sum":
        return heads.sum(dim=1)
    if kind == "index":
        k = int(args[0])
        if k >= n:
            raise ValueError(f"reward_model.head_reduction = {spec!r} but the reward model has {n} head(s) (0..{n - 1})")
        return heads[:, k]
    if len(args) != n:
        raise ValueError(f"reward_model.head_reduction = {spec!r} gives {len(args)} weights for {n} heads; give one per head")
    return heads @ torch.tensor(args, dtype=heads.dtype, device=heads.device)


class RewardScorer:
    """Scores (prompt, response) pairs with a sequence-classification model, one score per pair."""

    def __init__(
        self, model, tokenizer, model_cfg: ModelConfig, batch_size: int = 32, *,
        head_output: str = "logits", head_reduction: str = "first",
    ):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.head_output, self.head_reduction = head_output, head_reduction
        parse_head_reduction(head_reduction)  # fail at construction, not after the first batch
        self.encoder = Encoder(tokenizer, model_cfg.max_prompt_tokens, model_cfg.max_length)

    @classmethod
    def load(
        cls, path: str, model_cfg: ModelConfig, batch_size: int = 32, reward_cfg: RewardModelConfig | None = None
    ) -> "RewardScorer":
        reward_cfg = reward_cfg or RewardModelConfig()
        if reward_cfg.path:  # the configured reward model: its own opt-ins
            opt_ins = {"trust_remote_code": reward_cfg.trust_remote_code,
                       "allow_pickle": reward_cfg.allow_pickle_weights, "config_key": "reward_model.path"}
        else:  # trained in the flow from the base model (saved as safetensors): the base model's code opt-in
            opt_ins = {"trust_remote_code": model_cfg.trust_remote_code, "config_key": "model.base"}
        model, tokenizer = load_reward_model(path, **opt_ins)
        model.eval()
        return cls(
            model, tokenizer, model_cfg, batch_size,
            head_output=reward_cfg.head_output, head_reduction=reward_cfg.head_reduction,
        )

    def truncation_metrics(self) -> dict[str, float]:
        """``reward_model/truncated_prompts``, ``reward_model/truncated_responses``, ``reward_model/examples``
        over every pair this scorer encoded (scores of truncated pairs judge only what the model saw)."""
        return self.encoder.counter.as_metrics("reward_model")

    def encode(self, prompt: str, response: str) -> Encoded:
        """The pair's tokens, identical to the policy's encoding of it (same renderer, same truncation)."""
        return self.encoder.encode(prompt, response)

    def forward(self, encoded: list[Encoded]) -> torch.Tensor:
        batch = collate(encoded, self.tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        output = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        heads = getattr(output, self.head_output, None)
        if heads is None:
            raise ValueError(
                f"the reward model's output has no field {self.head_output!r} (reward_model.head_output); "
                f"it has: {', '.join(k for k in output.keys())}"
            )
        return reduce_heads(heads, self.head_reduction)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], desc: str = "reward scoring") -> np.ndarray:
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        scores = np.zeros(len(encoded), dtype=np.float64)
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc):
            idx = order[start : start + self.batch_size]
            scores[idx] = self.forward([encoded[i] for i in idx]).cpu().numpy()
        return scores


def annotate_scores(table: pd.DataFrame, scorer: RewardScorer, *, desc: str = "reward annotation") -> pd.DataFrame:
    """Score every (prompt, response) row of a canonical table with the reward model.

    For datasets that arrive without scores: returns a copy whose ``score`` is the reward model's and whose
    ``label_source`` is ``"rm"``; every row is rescored (mixing the model's scores with other labels
    inside one group would rank responses on two scales). Truncation is counted on ``scorer``.
    """
    missing = [c for c in ("prompt", "response") if c not in table.columns]
    if missing:
        raise ValueError(f"annotate_scores needs columns 'prompt' and 'response'; missing {missing}")
    out = table.copy()
    if len(out):
        out["score"] = scorer.score(out["prompt"].astype(str).tolist(), out["response"].astype(str).tolist(), desc=desc)
    else:
        out["score"] = pd.Series(dtype="float64")
    out["label_source"] = pd.Series(["rm"] * len(out), index=out.index, dtype="string")
    return out
