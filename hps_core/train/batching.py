"""Pack encoded sequences (hps_core.data.encoding) into training batches.

Sequences that share a prompt (the responses of one preference example) can be packed into ONE row,
the prompt once and every response after it (:func:`collate_shared`): the prompt's tokens, most of a
multi-turn conversation's, then go through the model once per example instead of once per response.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from hps_core.data.encoding import Encoded



def prompt_of(e: Encoded) -> list[int]:
    return e.input_ids[: e.n_prompt]


def shared_length(group: Sequence[Encoded]) -> int:
    """Tokens of the row :func:`collate_shared` makes of ``group``: the prompt once, then every response."""
    return group[0].n_prompt + sum(len(e.input_ids) - e.n_prompt for e in group)


def collate_shared(groups: Sequence[Sequence[Encoded]], pad_id: int) -> dict[str, torch.Tensor]:
    """One right-padded row per group of sequences that share a prompt: the prompt once, then each response.

    ``segment_ids[b, t]`` is 0 for a prompt token, k for a token of the row's k-th response (1-based) and
    -1 for padding; positions restart after the prompt for every response (``position_ids``), and
    :func:`hps_core.train.logprobs.response_logps` lets a response attend to the prompt and to itself
    only, so each response gets exactly the log-probs it gets alone after its prompt. The sequences are
    numbered row by row, in the order given: ``score_rows`` / ``score_cols`` are the positions whose
    logits predict ``score_targets``, the response tokens of sequence ``score_seqs`` (the first from the
    prompt's last position, like :func:`collate`'s ``response_mask``).
    """
    rows, pred_row, pred_col, targets, seqs = [], [], [], [], []
    n_seq = 0
    for b, group in enumerate(groups):
        prompt = prompt_of(group[0])
        n_prompt = len(prompt)
        ids, seg, pos = list(prompt), [0] * n_prompt, list(range(n_prompt))
        for k, e in enumerate(group, start=1):
            if prompt_of(e) != prompt:
                raise ValueError(f"collate_shared: sequence {k} of row {b} has another prompt than the row's first; "
                                 "only the responses of one prompt (same prompt tokens) can share a row")
            response = e.input_ids[e.n_prompt :]
            start = len(ids)
            # token t of the response is predicted at the position before it: the prompt's last one for t = 0
            before = [n_prompt - 1] + list(range(start, start + len(response) - 1))
            keep = [t for t in range(len(response)) if before[t] >= 0]  # no prompt: the first token has no context
            pred_row += [b] * len(keep)
            pred_col += [before[t] for t in keep]
            targets += [response[t] for t in keep]
            seqs += [n_seq] * len(keep)
            ids += response
            seg += [k] * len(response)
            pos += range(n_prompt, n_prompt + len(response))
            n_seq += 1
        rows.append((ids, seg, pos))
    width = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segment_ids = torch.full((len(rows), width), -1, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (ids, seg, pos) in enumerate(rows):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        segment_ids[b, : len(ids)] = torch.tensor(seg)
        position_ids[b, : len(ids)] = torch.tensor(pos)
    return {
        "input_ids": input_ids, "segment_ids": segment_ids, "position_ids": position_ids,
        "score_rows": torch.tensor(pred_row, dtype=torch.long), "score_cols": torch.tensor(pred_col, dtype=torch.long),
        "score_targets": torch.tensor(targets, dtype=torch.long), "score_seqs": torch.tensor(seqs, dtype=torch.long),
        "n_sequences": torch.tensor(n_seq),
    }


def shared_prompt_batches(encoded: Sequence[Encoded], batch_size: int) -> list[list[list[int]]]:
    """Batches for a no-grad pass over many sequences: each batch a list of rows, each row the indices of
    sequences with the same prompt (at most ``batch_size`` per row, so at most ``batch_size`` per batch);
    rows sorted by length, so a batch pads little."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(encoded):
        by_prompt.setdefault(tuple(prompt_of(e)), []).append(i)
    rows = [idx[k : k + batch_size] for idx in by_prompt.values() for k in range(0, len(idx), batch_size)]
    rows.sort(key=lambda r: shared_length([encoded[i] for i in r]))
    batches, current = [], []
    for row in rows:
        if current and sum(map(len, current)) + len(row) > batch_size:
            batches.append(current)
            current = []
        current.append(row)
    return batches + ([current] if current else [])


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, *, megabatch: int = 16
) -> Iterator[list[int]]:
    """Shuffled batches of indices whose lengths are similar, to cut padding.

    Indices are shuffled, cut into megabatches of ``megabatch * batch_size``, sorted by length inside
    each, split into batches, and the batches shuffled again: random order, little padding.
    """
    order = rng.permutation(len(lengths))
    span = batch_size * megabatch
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span].tolist(), key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for k in rng.permutation(len(batches)):
        yield batches[k]
