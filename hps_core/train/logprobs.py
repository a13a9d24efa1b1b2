"""Sequence log-probabilities summed over response tokens only.

The LM head is applied only at the positions that predict a response token (the fused-head trick TRL
uses with transformers 5): for a long prompt and a big vocabulary this skips most of the largest matmul
and of the log-softmax.
"""

from __future__ import annotations

import torch

from hps_core.train.lora import unwrap


def _backbone_and_head(model):
    model = unwrap(model)  # a peft wrapper: its LoRA layers live inside the wrapped model, in place
    backbone = getattr(model, model.base_model_prefix, None)
    head = model.get_output_embeddings()
    if backbone is None or head is None:
        raise TypeError(f"{type(model).__name__} has no separate backbone/LM head; is it a causal LM?")
    return backbone, head


def response_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of log-probs over response tokens, number of response tokens), one entry per row.

    Sums are fp32 whatever the compute dtype (the log-softmax runs on fp32 logits).
    """
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    attention = batch["attention_mask"].to(device)
    target_mask = batch["response_mask"].to(device)[:, 1:]  # token t is predicted at position t-1
    backbone, head = _backbone_and_head(model)
    hidden = backbone(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
    rows, cols = target_mask.nonzero(as_tuple=True)
    logits = head(hidden[:, :-1][rows, cols]).float()
    targets = input_ids[:, 1:][rows, cols]
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    sums = torch.zeros(input_ids.shape[0], device=device, dtype=token_logps.dtype).index_add_(0, rows, token_logps)
    counts = target_mask.sum(dim=1)
    return sums, counts
