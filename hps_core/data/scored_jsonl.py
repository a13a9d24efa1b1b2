"""Adapter for the reference HPS format: rows of ``prompt`` (text or chat messages), ``responses`` (list),
``rewards`` (list of the same length), with an optional ``is_harmful`` list (our generated world adds it).

    {"prompt": "How do I ...?", "responses": ["...", "...", "..."], "rewards": [2.1, -0.3, 0.7]}

Scores come from a reward model (``label_source = "rm"`` unless the ``label_source`` option says otherwise).
A record's own ``label_source`` field (``human`` | ``ai`` | ``rm``) overrides the option for its rows: the
routing flow (``flows/routing_flow.py``) writes one per record, so each row keeps who labelled it.
"""

from __future__ import annotations

from typing import Any

from hps_core.data.canonical import chat_prompt, make_row
from hps_core.data.records import DataFormatError, bool_field, number_field, require

__all__ = ["DataFormatError", "NAME", "matches", "rows"]

NAME = "scored-jsonl"
OPTIONS = ("label_source",)


def matches(columns: set[str]) -> bool:
    return {"prompt", "responses", "rewards"} <= columns


def rows(record: dict[str, Any], where: str, *, source: str, label_source: str = "rm") -> list[dict[str, Any]]:
    require(record, where, "prompt", "responses", "rewards")
    prompt, responses, rewards = record["prompt"], record["responses"], record["rewards"]
    if isinstance(prompt, list):
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
            raise DataFormatError(f"{where}: field 'prompt' as a list must hold {{'role', 'content'}} messages")
        prompt = chat_prompt(prompt)
    if not isinstance(prompt, str):
        raise DataFormatError(f"{where}: field 'prompt' must be a string or chat messages, got {type(prompt).__name__}")
    if not isinstance(responses, list) or not isinstance(rewards, list) or len(responses) != len(rewards):
        raise DataFormatError(f"{where}: fields 'responses' and 'rewards' must be lists of equal length "
                              f"(got {_len(responses)} and {_len(rewards)})")
    if record.get("label_source") is not None:
        label_source = record["label_source"]
        if not isinstance(label_source, str):
            raise DataFormatError(f"{where}: field 'label_source' must be a string (human, ai or rm), "
                                  f"got {type(label_source).__name__}")
    harmful = record.get("is_harmful")
    if harmful is None:
        harmful = [None] * len(responses)
    if not isinstance(harmful, list) or len(harmful) != len(responses):
        raise DataFormatError(f"{where}: field 'is_harmful' must be a list as long as 'responses'")
    out = []
    for j, (text, score, flag) in enumerate(zip(responses, rewards, harmful)):
        if not isinstance(text, str):
            raise DataFormatError(f"{where}: responses[{j}] must be a string, got {type(text).__name__}")
        out.append(make_row(prompt, text, number_field(score, f"rewards[{j}]", where),
                            is_harmful=bool_field(flag, f"is_harmful[{j}]", where), label_source=label_source,
                            source=source, origin=where))
    return out


def _len(x: Any) -> str:
    return str(len(x)) if isinstance(x, list) else type(x).__name__
