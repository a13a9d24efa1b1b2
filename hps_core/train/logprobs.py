"""Sequence log-probabilities summed over response tokens only.

The LM head is applied only at the positions that predict a response token (the fused-head trick TRL
uses with transformers 5): for a long prompt and a big vocabulary this skips most of the largest matmul
and of the log-softmax.

A batch from :func:`hps_core.train.batching.collate_shared` holds each prompt once, followed by all its
responses; the attention mask built here lets a response see the prompt and itself only (and positions
restart after the prompt), so each response's log-probs are the ones it gets alone after its prompt,
while the prompt's tokens go through the model once instead of once per response.
"""

from __future__ import annotations

import torch

from hps_core.train.lora import unwrap

# Attention implementations that take a dense custom 4D mask; others (flash attention) get the responses
# unpacked into one row each.
DENSE_MASK_ATTENTION = ("sdpa", "eager")


def _backbone_and_head(model):
    model = unwrap(model)  # a peft wrapper: its LoRA layers live inside the wrapped model, in place
    backbone = getattr(model, model.base_model_prefix, None)
    head = model.get_output_embeddings()
    if backbone is None or head is None:
        raise TypeError(f"{type(model).__name__} has no separate backbone/LM head; is it a causal LM?")
    return backbone, head


def response_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (sum of log-probs over response tokens, number of response tokens), one entry per sequence:
    per row for :func:`~hps_core.train.batching.collate`, per sequence (row by row) for
    :func:`~hps_core.train.batching.collate_shared`.

    Sums are fp32 whatever the compute dtype (the log-softmax runs on fp32 logits).
    """
    if "segment_ids" in batch and _attention_of(model) not in DENSE_MASK_ATTENTION:
        batch = unshare(batch)
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    backbone, head = _backbone_and_head(model)
    if "segment_ids" in batch:
        segments = batch["segment_ids"].to(device)
        hidden = backbone(input_ids=input_ids, attention_mask=shared_prompt_mask(segments, model),
                          position_ids=batch["position_ids"].to(device), use_cache=False).last_hidden_state
        rows, cols = batch["score_rows"].to(device), batch["score_cols"].to(device)
        targets, seqs = batch["score_targets"].to(device), batch["score_seqs"].to(device)
        n_seq = int(batch["n_sequences"])
    else:
        target_mask = batch["response_mask"].to(device)[:, 1:]  # token t is predicted at position t-1
        hidden = backbone(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                          use_cache=False).last_hidden_state
        rows, cols = target_mask.nonzero(as_tuple=True)
        targets, seqs, n_seq = input_ids[:, 1:][rows, cols], rows, input_ids.shape[0]
    logits = head(hidden[rows, cols]).float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    sums = torch.zeros(n_seq, device=device, dtype=token_logps.dtype).index_add_(0, seqs, token_logps)
    counts = torch.bincount(seqs, minlength=n_seq)
    return sums, counts


def _attention_of(model) -> str:
    return getattr(unwrap(model).config, "_attn_implementation", None) or "eager"


def shared_prompt_mask(segments: torch.Tensor, model) -> torch.Tensor:
    """The (batch, 1, length, length) mask of a shared-prompt batch: query i sees key j <= i of the prompt
    (segment 0) or of its own segment. A padding query (segment -1) sees the padding before it, never
    nothing (a row of -inf would give NaNs that reach the gradients through 0 * NaN)."""
    n = segments.shape[1]
    idx = torch.arange(n, device=segments.device)
    causal = idx[None, :] <= idx[:, None]
    same = (segments[:, None, :] == segments[:, :, None]) | (segments[:, None, :] == 0)
    allowed = (causal[None] & same)[:, None]
    if _attention_of(model) == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype  # eager adds the mask to the scores
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def unshare(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shared-prompt batch as one row per sequence (prompt + response), for attention implementations
    that cannot take a custom mask. Sequences keep their order."""
    from hps_core.data.encoding import Encoded, collate

    encoded = []
    for ids, seg in zip(batch["input_ids"].tolist(), batch["segment_ids"].tolist()):
        prompt = [t for t, s in zip(ids, seg) if s == 0]
        for k in range(1, max(seg) + 1):
            encoded.append(Encoded(prompt + [t for t, s in zip(ids, seg) if s == k], len(prompt)))
    return collate(encoded, pad_id=0)
